"""Run the real firmware under the MicroPython Unix port against the simulated hardware.

SimPump starts `micropython -X heapsize=64K firmware/main.py` with the sim board, accepts its
hardware bus (see firmware/basalt/hal/sim.py for the messages) and feeds the plant. In lockstep
mode the harness owns virtual time: run_until(t) grants time and returns once the firmware has
reached t and paused, so a simulated day takes seconds and every run is identical.
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
from hil.sim.plant import SyringePlant

DEFAULT_HEAP = "64K"  # the budget the firmware must live within (DEVELOPERS.md principle 6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirmwareDied(RuntimeError):
    pass


class SimPump:
    def __init__(self, storage_dir: str | os.PathLike | None = None, mode: str = "lockstep",
                 heap: str = DEFAULT_HEAP, micropython: str | None = None, board: str = "sim",
                 log_path: str | os.PathLike | None = None):
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
        self.now_ms = 0
        self.heap_info: dict[str, int] = {}
        self._cv = threading.Condition()
        self._acked = -1
        self._console_port: int | None = None
        self._heap_reply = False
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._dead = False

    def _board_value(self, name: str):
        ns: dict = {}
        exec((self.board_dir / "board.py").read_text(), ns)
        return ns[name]

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> SimPump:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as ls:
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            ls.settimeout(timeout)
            console = free_port()
            # Run the mpy-cross output: the bytecode a board gets, without the compiler's RAM peak.
            tree = build(self.board_dir.name)
            # Run from inside the tree with a relative path: every module's __file__ is interned
            # in the heap for good, so "basalt/core/pump.mpy" rather than an absolute path.
            env = dict(os.environ, MICROPYPATH=".")
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.micropython, "-X", f"heapsize={self.heap_size}", "-m", "main",
                 "--bus", str(ls.getsockname()[1]), "--console", str(console),
                 "--storage", str(self.storage_dir.resolve()), "--mode", self.mode],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tree)
            try:
                self._sock, _ = ls.accept()
            except TimeoutError:
                self.stop()
                raise FirmwareDied(f"firmware did not connect its bus; log:\n{self.log_tail()}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = threading.Thread(target=self._read_bus, daemon=True, name="sim-bus")
        self._reader.start()
        self._wait(lambda: self._console_port is not None, timeout, "ready")
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
        """Cut the power: no clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

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

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # ---- time -----------------------------------------------------------------------------------
    def run_until(self, t_ms: int, timeout: float = 600.0) -> None:
        """Grant virtual time up to t_ms and wait until the firmware has reached it."""
        if self.mode != "lockstep":
            raise RuntimeError("run_until needs lockstep mode")
        t_ms = int(t_ms)
        if t_ms < self.now_ms:
            raise ValueError(f"time only moves forward (now {self.now_ms} ms, asked {t_ms} ms)")
        self._send(f"G {t_ms}")
        self._wait(lambda: self._acked >= t_ms, timeout, f"virtual time {t_ms} ms")

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
        if kind == "M":
            self.plant.on_train(int(f[1]), int(f[2]), int(f[3]), int(f[4]))
        elif kind == "X":
            self.plant.on_truncate(int(f[1]), int(f[2]))
        elif kind == "A":
            with self._cv:
                self._acked = self.now_ms = int(f[1])
                self._cv.notify_all()
        elif kind in ("B", "L"):
            self.annunciations.append((int(f[1]), "buzzer" if kind == "B" else "led", f[2]))
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
