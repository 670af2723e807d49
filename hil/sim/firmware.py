"""Run the real firmware under the MicroPython Unix port against the simulated hardware.

SimPump starts `micropython -X heapsize=64K firmware/main.py` with the sim board, accepts its
hardware bus (see firmware/basalt/hal/sim.py for the messages) and feeds the plant. In lockstep
mode the harness owns virtual time: run_until(t) grants time and returns once the firmware has
reached t and paused, so a simulated day takes seconds and every run is identical.

Power and resets: kill() cuts the power, cut_storage(n) arms a cut inside the firmware's n-th
next byte of storage writes (a torn write), hang() hangs its driver; restart() powers the same
storage up again. Harness time goes on across restarts while the firmware's clock starts at 0
again: every time on the bus is shifted by the time the firmware was started at, so now_ms, the
plant's log and the devices all stay in harness time. A watchdog reset (@T, or a grant left
unacknowledged for hang_timeout seconds of wall time) is recorded in `resets` and run_until
restarts the firmware with --reset wdt and carries on.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from hil.build import build
from hil.paths import BOARDS_DIR, micropython_binary
from hil.sim.battery import BatteryParams
from hil.sim.plant import SyringePlant
from hil.sim.pressure import PressureParams

# The budget the firmware must live within (DEVELOPERS.md principle 6). BASALT_HEAP overrides it
# to measure the margin: the suite at a smaller heap shows what would break first.
DEFAULT_HEAP = os.environ.get("BASALT_HEAP", "64K")
# The sim board's `bluetooth` module is Python (boards/sim/bluetooth.py), a stand-in for the boards'
# C module, whose own memory is not in the MicroPython heap. With a radio attached, the process gets
# the stand-in's measured cost on top of the firmware's budget, so the budget stays the firmware's:
# 2,464 B (import, BLE(), active(True), irq()), rounded up to the KB -X heapsize takes;
# tests/test_ble_bridge.py fails if the stand-in grows past it.
RADIO_SHIM_HEAP_K = 3
# KNOWN GAP (issue 5, docs/memory.md "The CGM client"): with a radio, the largest settings need
# 3 KB more than the firmware's 64 KB (tests/e2e/test_heap.py runs them at 64 + 3 + 3 KB).
CGM_GAP_K = 3
TIMED = frozenset("AMXBLVEWTI")  # bus messages whose first field is the firmware's time (ms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirmwareDied(RuntimeError):
    pass


class SimDevice:
    """Simulated hardware beside the plant that acts at virtual times of its own. Subclass and
    append to SimPump.devices. In lockstep, SimPump.run_until pauses the firmware at every
    due_ms() and calls at(); bus messages from the firmware reach on_message (from the bus
    reader thread, so a reply the firmware blocks on can be sent from there)."""

    def due_ms(self, now_ms: int) -> int | None:
        """The next virtual time (> now_ms) at which this device must act, or None."""
        return None

    def at(self, sim: SimPump, t_ms: int) -> None:
        """The firmware is paused at t_ms: push whatever inputs are due (sim.send_line)."""

    def on_message(self, sim: SimPump, kind: str, fields: list[str]) -> None:
        """A bus message from the firmware (hal/sim.py's table), e.g. "M" for a step train."""


class SimPump:
    def __init__(self, storage_dir: str | os.PathLike | None = None, mode: str = "lockstep",
                 heap: str = DEFAULT_HEAP, micropython: str | None = None, board: str = "sim",
                 log_path: str | os.PathLike | None = None, seed: int = 0,
                 pressure: PressureParams | None = None, battery: BatteryParams | None = None):
        """seed: the simulated unit - its sensor, reservoirs, sites and cells (hil/sim/hardware.py);
        pressure/battery: the plant parameters (defaults: docs/plant.md)."""
        from hil.sim.hardware import SimHardware  # here: it builds on SimDevice, defined above

        self.mode = mode
        self.heap_size = heap
        self.micropython = micropython_binary(micropython)
        self.board_dir = BOARDS_DIR / board
        self._tmp = None
        if storage_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="basalt-sim-")
            storage_dir = self._tmp.name
        self.storage_dir = Path(storage_dir)
        self.log_path = Path(log_path) if log_path else self.storage_dir / "firmware.log"
        self.plant = SyringePlant(nl_per_step=self._board_value("NL_PER_STEP"))
        self.annunciations: list[tuple[int, str, str]] = []  # (t_ms, "buzzer"|"led", pattern)
        self.listeners: list[Callable[[str, list[str]], None]] = []  # extra bus observers
        # Simulated hardware that acts at virtual times of its own (sensors, radio, injected
        # faults): see SimDevice. run_until pauses the firmware at each time a device is due.
        # The board's sensors, encoder and injectable faults (hil/sim/hardware.py).
        self.hardware = SimHardware(self.plant, seed=seed, pressure=pressure, battery=battery)
        self.devices: list[SimDevice] = [self.hardware]
        self.now_ms = 0
        self.heap_info: dict[str, int] = {}
        self._cv = threading.Condition()
        self._acked = -1
        self._console_port: int | None = None
        self._heap_reply = False
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._dead = False
        # lifecycle (restarts on the same storage; see the module docstring)
        self.resets: list[tuple[int, str]] = []  # (harness t_ms, cause) of every restart
        self.generation = 0  # firmware processes started so far: a console client reconnects when it moves
        self.hang_timeout = 30.0  # wall-clock seconds a grant may stay unacknowledged before it counts as a hang
        self.wdt_ms = 0  # the watchdog timeout the firmware started (@W)
        self._base = 0  # harness time at the firmware's time 0
        self._granted = 0  # harness time granted so far
        self._console: int | None = None  # console port, kept across restarts
        self._wdt_fired: int | None = None  # harness time of an @T not yet handled
        self._off = False  # the stopped firmware's motor has been powered off (_power_off)

    def _board_value(self, name: str):
        ns: dict = {}
        exec((self.board_dir / "board.py").read_text(), ns)
        return ns[name]

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0, reset: str = "power") -> SimPump:
        """Start the firmware on this storage; reset is the cause its HAL reports (power, wdt, soft)."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # The firmware's clock starts at 0 here. On a whole second of harness time, so its 1 s
        # ticks stay on harness seconds (the devices sample the sensors against them).
        self._base = self.now_ms = -(-self.now_ms // 1000) * 1000
        self._acked = -1
        self._dead = False
        self._console_port = None
        self._wdt_fired = None
        self._off = False
        self.generation += 1
        with socket.socket() as ls:
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            ls.settimeout(timeout)
            console = self._console or free_port()  # the same port across restarts: hosts reconnect
            self._console = console
            # Run the mpy-cross output: the bytecode a board gets, without the compiler's RAM peak.
            tree = build(self.board_dir.name)
            # Run from inside the tree with a relative path: every module's __file__ is interned
            # in the heap for good, so "basalt/core/pump.mpy" rather than an absolute path.
            env = dict(os.environ, MICROPYPATH=".")
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.micropython, "-X", f"heapsize={self.process_heap()}", "-m", "main",
                 # one argument (each one is a name interned in the heap for good): bus port, console
                 # port, mode, reset cause, radio (a BleBridge attached: the firmware may use it), storage
                 f"--sim={ls.getsockname()[1]},{console},{self.mode},{reset},{int(self.has_radio)},"
                 f"{self.storage_dir.resolve()}"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tree)
            try:
                self._sock, _ = ls.accept()
            except TimeoutError:
                self.stop()
                raise FirmwareDied(f"firmware did not connect its bus; log:\n{self.log_tail()}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = threading.Thread(target=self._read_bus, daemon=True, name="sim-bus")
        self._reader.start()
        try:
            self._wait(lambda: self._console_port is not None, timeout, "ready")
        except FirmwareDied:
            if self._console is None or "EADDRINUSE" not in self.log_tail(400):
                raise
            self._console = None  # someone took the console port while the power was off
            self._end_process()
            return self.start(timeout, reset)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self._send("Q")
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self._sock:
            self._sock.close()
            self._sock = None
        if getattr(self, "_log", None):
            self._log.close()

    def kill(self) -> None:
        """Cut the power (lockstep: while the firmware is paused at now_ms): no clean shutdown.
        The motor stops with the power: the train in flight keeps only the steps made by now."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._power_off(self.now_ms)

    def restart(self, cause: str = "power", timeout: float = 10.0) -> SimPump:
        """Power the firmware up again on the same storage after a cut, a reset or a stop (a
        process still running is killed first: a power cut). Harness time goes on from now_ms;
        the firmware's clock starts again at 0 and its HAL reports `cause`."""
        if self.proc and self.proc.poll() is None:
            self.kill()
        elif not self._off:  # it died by itself (a storage cut): mid-grant, it got that far
            if self._acked < self._granted:
                self.now_ms = self._granted
            self._power_off(self.now_ms)
        self._end_process()
        self.resets.append((self.now_ms, cause))
        return self.start(timeout, cause)

    def cut_storage(self, n: int) -> None:
        """Arm a power cut after n more bytes reach the firmware's storage: the write that
        crosses it is torn there and the firmware dies at once (the bus's K line)."""
        self._send(f"K {int(n)}")
        if self.mode == "lockstep":
            self.heap()  # answered after the K line is read: armed before any console input comes

    def hang(self) -> None:
        """Hang the firmware's driver (the bus's H): only its watchdog gets it out, so the harness
        records the watchdog reset wdt_ms after now and restarts the firmware with --reset wdt."""
        self._send("H")
        self._hung()

    def _hung(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._power_off(self.now_ms)
        self.now_ms = self._granted = self.now_ms + (self.wdt_ms or 0)
        self.restart("wdt")

    def _power_off(self, t_ms: int) -> None:
        """The firmware stopped at harness time t_ms: its motor's train in flight ends there (the
        step counter's rule, hal/sim.py), and the devices see the driver lose power."""
        self._off = True
        if self.plant.trains:
            tr = self.plant.trains[-1]
            if tr.emitted == tr.n and tr.t0_ms <= t_ms:
                done = min(tr.n, (t_ms - tr.t0_ms) * tr.hz // 1000 + 1)
                if done < tr.n:
                    self.plant.on_truncate(t_ms, done)
        for d in self.devices:
            d.on_message(self, "E", [str(t_ms), "0"])

    def _end_process(self) -> None:
        """Forget a process that has stopped: its bus and the reader thread."""
        if self._sock:
            self._sock.close()
            self._sock = None
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=2)
        if getattr(self, "_log", None):
            self._log.close()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> SimPump:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def console_url(self) -> str:
        return f"socket://127.0.0.1:{self._console_port}"

    @property
    def has_radio(self) -> bool:
        """A radio device (hil/ble/bridge.py BleBridge) is attached: the firmware may use it."""
        return any(getattr(d, "firmware_radio", False) for d in self.devices)

    def process_heap(self) -> str:
        """The -X heapsize of the process: the firmware's budget, plus the radio stand-in's own and,
        for now, the CGM client's gap (CGM_GAP_K)."""
        h = self.heap_size
        if self.has_radio and h.upper().endswith("K"):
            return f"{int(h[:-1]) + RADIO_SHIM_HEAP_K + CGM_GAP_K}K"
        return h

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # ---- time -----------------------------------------------------------------------------------
    def run_until(self, t_ms: int, timeout: float = 600.0) -> None:
        """Grant virtual time up to t_ms and wait until the firmware has reached it. The grant is
        split at every time a device (self.devices) is due, and each due device acts while the
        firmware is paused there, so its inputs reach the firmware at exactly that virtual time."""
        if self.mode != "lockstep":
            raise RuntimeError("run_until needs lockstep mode")
        t_ms = int(t_ms)
        if t_ms < self.now_ms:
            raise ValueError(f"time only moves forward (now {self.now_ms} ms, asked {t_ms} ms)")
        while True:
            stop = t_ms
            for d in self.devices:
                due = d.due_ms(self.now_ms)
                if due is not None and self.now_ms < due < stop:
                    stop = due
            self._granted = stop
            self._send(f"G {stop - self._base}")
            try:
                self._wait(lambda s=stop: self._acked >= s, min(timeout, self.hang_timeout), f"virtual time {stop} ms")
            except TimeoutError:
                if self.proc is None or self.proc.poll() is not None or timeout <= self.hang_timeout:
                    raise
                self._hung()  # alive but silent: a hang, which the watchdog ends
                continue
            except FirmwareDied:
                if self._wdt_fired is None:
                    raise  # not a watchdog reset: the caller's power cut, or a crash
                self.proc.wait()
                self._power_off(self._wdt_fired)
                self.now_ms = self._wdt_fired
                self.restart("wdt")
                continue
            for d in self.devices:
                d.at(self, stop)
            if stop >= t_ms:
                return

    def send_line(self, line: str) -> None:
        """Send one bus line to the firmware (devices use this; see the bus table in hal/sim.py)."""
        self._send(line)

    def advance(self, ms: int, timeout: float = 600.0) -> None:
        self.run_until(self.now_ms + int(ms), timeout)

    def heap(self, timeout: float = 5.0) -> dict[str, int]:
        """Heap figures after a collect: live bytes, free bytes and the highest live heap seen."""
        self._heap_reply = False
        self._send("I")
        self._wait(lambda: self._heap_reply, timeout, "heap report")
        return dict(self.heap_info)

    # ---- bus ------------------------------------------------------------------------------------
    def _send(self, line: str) -> None:
        if self._sock is None:
            raise FirmwareDied("firmware is not running")
        self._sock.sendall((line + "\n").encode())

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: pred() or self._dead, timeout):
                raise TimeoutError(f"firmware did not reach {what} in {timeout} s; log:\n{self.log_tail()}")
            if not pred():
                raise FirmwareDied(f"firmware exited before {what}; log:\n{self.log_tail()}")

    def _read_bus(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536) if self._sock else b""
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    if raw.startswith(b"@"):
                        self._on_message(raw[1:].decode().split())
        except OSError:
            pass
        with self._cv:
            self._dead = True
            self._cv.notify_all()

    def _on_message(self, f: list[str]) -> None:
        kind = f[0]
        if self._base and len(f) > 1 and kind in TIMED:
            f[1] = str(int(f[1]) + self._base)  # firmware time -> harness time
        if kind == "T":  # the watchdog expired: the firmware exits (status 3); run_until restarts it
            self._wdt_fired = int(f[1])
        elif kind == "W":
            self.wdt_ms = int(f[2])
        if kind == "M":
            self.plant.on_train(int(f[1]), int(f[2]), int(f[3]), int(f[4]))
        elif kind == "X":
            self.plant.on_truncate(int(f[1]), int(f[2]))
        elif kind == "A":
            with self._cv:
                self._acked = self.now_ms = int(f[1])
                self._cv.notify_all()
        elif kind in ("B", "L", "V"):
            self.annunciations.append((int(f[1]), {"B": "buzzer", "L": "led", "V": "vibration"}[kind], f[2]))
        elif kind == "I":
            with self._cv:
                self.heap_info = {"t_ms": int(f[1]), "alloc": int(f[2]), "free": int(f[3]), "peak": int(f[4])}
                self._heap_reply = True
                self._cv.notify_all()
        elif kind == "R":
            with self._cv:
                self._console_port = int(f[1])
                self._cv.notify_all()
        for fn in self.listeners:
            fn(kind, f[1:])
        for d in self.devices:
            d.on_message(self, kind, f[1:])
