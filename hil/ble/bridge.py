"""The simulated board's radio: MicroPython's `bluetooth` API in the Unix port, backed by bumble.

The firmware imports `bluetooth` (boards/sim/bluetooth.py, the "shim"): the board's API, IRQ event
numbers and tuple shapes. Each call becomes one request on the HAL bus ("@b <method> <now_ms>
<args>"), which runs the bridge's `op_<method>`.
`BleBridge`, a `SimDevice` of the `SimPump`, executes it on a bumble central `Device` - the pump's
own controller - on the same `VirtualRadio` link as the simulated CGM sensors, with real ATT/GATT
PDUs, and answers with the IRQ events the board's stack would raise, then "b= <errno> <results>".
The bridge holds the radio's state the shim does not keep (config, the peripheral's values). The shim
queues the events and runs the firmware's irq handler from the HAL's wait(), so the handler never
runs inside a gattc_* call (docs/ble.md "The bridge" has the line protocol).

Lockstep. bumble runs on its own asyncio loop in a thread; every operation runs there to
completion, and the loop is then run until it is quiet (`_settle`), so all consequences - RACP
records, indications, a disconnection - are known before the firmware continues. Procedures
take zero virtual time. What takes virtual time is scheduled on the bridge's clock and fired while
the firmware is paused at exactly that time: the sensors' readings (every 5 min), the end of a
`gap_scan(duration_ms)`, a `gap_connect` timeout, the end of a link loss, actions scheduled by a
test (`schedule`). `due_ms` tells `SimPump.run_until` to split its grants there; a timer created in
the middle of a grant (a scan started by the firmware's tick) lowers the firmware's grant to its
time (a "G" line, as SimPump grants), fires when the firmware reports the pause there ("@A"), and
the grant goes back up.

Faults (docs/ble.md): `link_loss(duration_ms)` (the sensor goes out of range: both sides see a
supervision timeout, the sensor advertises into nothing, readings are stored for RACP), on the
sensor `drop` / `corrupt` / `duplicate` (next n notifications), `core.force(...)` (out-of-range or
special values, annunciations), `core.stop_session()` (session end), and `add_sensor(...)` for a
second, unpaired sensor advertising nearby.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import contextmanager
from typing import Any

from bumble import att
from bumble.core import UUID as BUUID
from bumble.gatt import GATT_CHARACTERISTIC_ATTRIBUTE_TYPE
from bumble.hci import HCI_CONNECTION_TIMEOUT_ERROR, Address, Role

from hil.ble.bleak_bumble import VirtualRadio
from hil.ble.sensor import SimulatedCgmSensor
from hil.sim.firmware import FirmwareDied, SimDevice, SimPump

log = logging.getLogger(__name__)

PUMP_ADDRESS = "F4:BA:5A:17:00:01"  # the simulated pump's radio (random static)
SENSOR_ADDRESS = "C0:98:E5:49:00:01"

# MicroPython's IRQ event numbers (docs of the `bluetooth` module)
IRQ_CENTRAL_CONNECT = 1
IRQ_CENTRAL_DISCONNECT = 2
IRQ_GATTS_WRITE = 3
IRQ_SCAN_RESULT = 5
IRQ_SCAN_DONE = 6
IRQ_PERIPHERAL_CONNECT = 7
IRQ_PERIPHERAL_DISCONNECT = 8
IRQ_GATTC_SERVICE_RESULT = 9
IRQ_GATTC_SERVICE_DONE = 10
IRQ_GATTC_CHARACTERISTIC_RESULT = 11
IRQ_GATTC_CHARACTERISTIC_DONE = 12
IRQ_GATTC_DESCRIPTOR_RESULT = 13
IRQ_GATTC_DESCRIPTOR_DONE = 14
IRQ_GATTC_READ_RESULT = 15
IRQ_GATTC_READ_DONE = 16
IRQ_GATTC_WRITE_DONE = 17
IRQ_GATTC_NOTIFY = 18
IRQ_GATTC_INDICATE = 19
IRQ_GATTS_INDICATE_DONE = 20
IRQ_MTU_EXCHANGED = 21

# What the board's C module (NimBLE, as on the ESP32) raises or reports
ENODEV, ENOTCONN, EALREADY, EBUSY, EINVAL, EIO = 19, 107, 114, 16, 22, 5
ATT_STATUS = 0x100  # a procedure ended by an ATT Error Response reports 0x100 + its error code
CONN_NONE = 0xFFFF  # conn_handle of a connection attempt that failed or was cancelled
CONNECT_DEFAULT_MS = 30000  # gap_connect(..., scan_duration_ms=0): NimBLE's default
MAX_LINE = 250  # the sim HAL reads bus lines of at most 255 bytes (hal/sim.py RX)
WALL_TIMEOUT_S = 10.0  # a bumble operation that takes longer than this in wall time is a bug


class BridgeError(Exception):
    """A request the board's stack refuses at the call (the shim raises OSError(errno))."""

    def __init__(self, errno: int):
        super().__init__(errno)
        self.errno = errno


def _field(v: Any) -> str:
    if isinstance(v, BUUID):
        return "u" + v.to_bytes().hex()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "=" + bytes(v).hex()
    return str(int(v))


def _arg(tok: str) -> Any:
    """One argument of a request: "=<hex>" bytes, else an int."""
    return bytes.fromhex(tok[1:]) if tok[:1] == "=" else int(tok)


def _results(v: Any) -> str:
    """A call's result for the reply line: T/F, ints, "#<hex>" bytes; a tuple as its items."""
    if v is None:
        return ""
    if not isinstance(v, tuple):
        v = (v,)
    return "".join(" " + ("T" if x else "F") if isinstance(x, bool) else
                   " #" + bytes(x).hex() if isinstance(x, (bytes, bytearray)) else f" {int(x)}" for x in v)


def _uuid(v: bytes | int) -> BUUID:
    if isinstance(v, int):  # a 16-bit UUID passed as a number
        v = v.to_bytes(2, "little")
    if len(v) not in (2, 4, 16):
        raise BridgeError(EINVAL)
    return BUUID.from_bytes(bytes(v))


def _addr_key(a: Address | str) -> str:
    return str(a).split("/")[0].upper()


def _addr_bytes(a: Address) -> bytes:
    return bytes.fromhex(_addr_key(a).replace(":", ""))  # MicroPython: most significant byte first


class BleBridge(SimDevice):
    """A firmware process's radio (the pump's, by default) on a bumble VirtualRadio, with simulated
    sensors beside it (module doc).

        bridge = BleBridge()
        sensor = bridge.add_sensor(profile=lambda t_min: 120)
        bridge.attach(sim)          # before sim.start(), or any time the firmware is paused
        ...
        bridge.close()

    `BleBridge(address, share=other)` puts a second firmware process's radio (the CGM emulator's)
    on the same link and loop as `other`."""

    # SimPump starts the firmware with --radio 1 when this is attached: the pump then brings up its
    # CGM client (basalt/boot.py, hal.radio()); test programs on MpyNode ignore it.
    firmware_radio = True

    def __init__(self, address: str = PUMP_ADDRESS, rssi: int = -60, share: BleBridge | None = None):
        self.address = address
        self.rssi: dict[str, int] = {}  # address -> RSSI reported in scan results (default `rssi`)
        self.default_rssi = rssi
        self.sim: SimPump | None = None
        self.now_ms = 0
        self.active = False  # the firmware's BLE().active()
        self.sensors: list[SimulatedCgmSensor] = []
        self.conns: dict[int, Any] = {}  # conn_handle -> bumble Connection of the pump central
        self.scanning = False
        self.scan_until: int | None = None  # virtual ms; None while scanning forever
        self.scan_seen: set[str] = set()
        self.pending: tuple[Address, int] | None = None  # connect in progress: (peer, deadline ms)
        self.out_of_range: dict[str, int] = {}  # address -> virtual ms it comes back
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "events", "notifications", "indications", "readings", "announced", "late"), 0)
        # What happened on the radio: (virtual ms, what, address, wall time.perf_counter()) for
        # connect, disconnect (the pump's links), out / back (range), scan / scan_done.
        self.history: list[tuple[int, str, str, float]] = []
        self.trace: deque[str] = deque(maxlen=400)  # recent bus lines both ways, for failure reports
        self.errors: list[str] = []  # bridge failures (a test asserts there are none)
        self._lock = threading.RLock()  # one actor at a time: bus reader, test thread, run_until
        self._busy = 0  # > 0 while this bridge acts (its firmware's request, a timer, a test's injection)
        self._acked = threading.Condition()
        self.unacked = 0  # event batches sent on their own (a remote device acted) not yet handled
        self.peers: list[BleBridge] = []  # other firmware processes' radios on the same link
        self._qlock = threading.Lock()
        self._events: list[str] = []
        self._actions: list[tuple[int, int, Callable[[], None]]] = []  # heap: (t_ms, seq, fn)
        self._seq = itertools.count()
        self._held: int | None = None  # the grant lowered to this harness time (a hold)
        self._adv: dict[str, Any] = {}  # address -> latest Advertisement seen while scanning
        # Peripheral role (the firmware registered services): value handle -> bumble attribute,
        # the values remote clients read, the latest advertising payloads, the centrals' links.
        self.gatt: dict[int, Any] = {}
        self.values: dict[int, bytes] = {}
        self.adv_data = self.resp_data = b""
        self.centrals: dict[int, Any] = {}
        self.peripheral = False  # the firmware registered services or advertised
        self.config: dict[str, Any] = {"mtu": 23}  # the firmware's BLE().config()
        self._owner = share is None
        if share is None:
            self.loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self.loop.run_forever, name="bumble", daemon=True)
            self._thread.start()
            self.radio = self._run(self._new_radio())
        else:
            self.loop, self._thread, self.radio = share.loop, share._thread, share.radio
            self.peers = [share, *share.peers]
            for b in self.peers:
                b.peers.append(self)
        self.device = self._run(self._power_up())

    # ---- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _acting(self):
        with self._lock:
            self._busy += 1
            try:
                yield
            finally:
                self._busy -= 1

    def _wait_peers(self) -> None:
        """Until every other firmware process on the link has handled what it was told (its
        irq handler ran, and whatever it sent because of it is done): what our firmware did
        (a write) and their firmware's answer (RACP records) happen at one virtual instant."""
        for b in self.peers:
            with b._acked:
                if not b._acked.wait_for(lambda b=b: b.unacked <= 0, WALL_TIMEOUT_S):
                    raise TimeoutError(f"the firmware behind {b.address} did not handle its radio events")

    def _run(self, coro: Coroutine, settle: bool = True) -> Any:
        """Run coro on the bumble loop to completion, then until the loop is quiet."""
        async def go():
            r = await coro
            if settle:
                await self._settle()
            return r
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(WALL_TIMEOUT_S)

    @staticmethod
    async def _settle() -> None:
        # Every hop of bumble's virtual link is a loop.call_soon; advertising ticks are timers. The
        # loop is quiet when nothing but us is ready to run, a few times in a row.
        loop = asyncio.get_running_loop()
        quiet = 0
        for _ in range(100000):
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            quiet = quiet + 1 if ready is not None and not ready else 0
            if quiet >= 3 or ready is None and _ > 200:
                return

    @staticmethod
    async def _new_radio() -> VirtualRadio:
        return VirtualRadio()

    async def _power_up(self) -> Any:
        dev = self.radio.new_device(self.address, "node")
        await dev.power_on()
        dev.on(dev.EVENT_ADVERTISEMENT, self._on_adv)
        dev.on(dev.EVENT_CONNECTION, self._on_connection)
        return dev

    def close(self) -> None:
        self.active = False  # whatever happens from here reaches no firmware
        if self.sim is not None and self in self.sim.devices:
            self.sim.devices.remove(self)
        if self.loop.is_running():
            async def down():
                for s in self.sensors:
                    try:
                        await s.stop()
                    except Exception:  # noqa: BLE001 - shutting down
                        pass
                for conn in list(self.device.connections.values()):
                    try:
                        await conn.disconnect()
                    except Exception:  # noqa: BLE001
                        pass
                if self._owner:  # end every task left on our loop (bumble restarts a sensor's
                    for _ in range(3):  # advertising in a task after each disconnection)
                        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self._run(down(), settle=False)
            except Exception:  # noqa: BLE001
                pass
            if self._owner:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)

    def attach(self, sim: SimPump) -> BleBridge:
        """Become one of sim's devices (the firmware's radio starts inactive, as after a boot)."""
        with self._acting():
            self._reset_firmware_side()
            self._held = None
            self.sim = sim
            self.now_ms = max(self.now_ms, sim.now_ms)
            if self not in sim.devices:
                sim.devices.append(self)
        return self

    def _log(self, what: str, key: str = "") -> None:
        self.history.append((self.now_ms, what, key, time.perf_counter()))

    def _event(self, code: int | str, *fields: Any) -> None:
        line = f"b {code}" + "".join(" " + _field(f) for f in fields)
        if len(line) > MAX_LINE:
            raise RuntimeError(f"radio event too long for the sim bus ({len(line)} bytes): {line[:60]}...")
        with self._qlock:
            self._events.append(line)
            if not self._busy and threading.current_thread() is self._thread and self.active:
                # A remote device acted (another firmware process, a bleak client): tell our
                # firmware now, and have it say when it has handled it ("b k").
                self._send_events()
                with self._acked:
                    self.unacked += 1
                self._send("b k")

    def _send_events(self) -> None:  # with _qlock held
        lines, self._events = self._events, []
        if self.active:
            self.stats["events"] += len(lines)
            for line in lines:
                self._send(line)

    def _send(self, line: str) -> None:
        self.trace.append(f"{self.now_ms} < {line}")
        if self.sim is not None:
            try:
                self.sim.send_line(line)
            except (FirmwareDied, OSError):  # the firmware is gone (stopped, reset): nothing to tell
                log.debug("firmware gone; dropped %s", line)

    def _flush(self) -> None:
        with self._qlock:
            self._send_events()
        # Hold: a timer due inside the firmware's current grant (a scan its tick started) lowers
        # the grant to that time ("G", as SimPump grants), so the firmware pauses there ("@A"),
        # the timer fires, and the grant goes back up (docs/ble.md "Virtual time").
        sim = self.sim
        if sim is None or sim.mode != "lockstep":
            return
        t = self.next_due() if self.active else None
        g = sim._granted
        hold = t if t is not None and self.now_ms <= t < g else None
        if hold is not None and hold != self._held:
            self.stats["announced"] += 1
            self._send(f"G {hold - sim._base}")
        elif hold is None and self._held is not None:
            self._send(f"G {g - sim._base}")
        self._held = hold

    # ---- SimDevice --------------------------------------------------------------------------
    def due_ms(self, now_ms: int) -> int | None:
        t = self.next_due()
        return t if t is not None and t > now_ms else None

    def at(self, sim: SimPump, t_ms: int) -> None:
        with self._acting():
            self.sim = sim
            self._advance(t_ms)

    def on_message(self, sim: SimPump, kind: str, fields: list[str]) -> None:
        if kind == "b" and fields[:1] == ["k"]:  # the firmware handled that many event batches
            with self._acked:
                self.unacked -= int(fields[1])
                self._acked.notify_all()
        elif kind == "b":
            self._request(sim, fields)
        elif kind == "A":  # paused: maybe at a time the radio announced (a hold)
            with self._acting():
                self.sim = sim
                try:
                    self._advance(int(fields[0]))
                except Exception as e:  # noqa: BLE001 - recorded for the test; the bus reader must live
                    log.exception("radio timers at %s failed", fields[0])
                    self.errors.append(f"at {fields[0]}: {e!r}")
        elif kind == "R":  # the firmware (re)booted: its radio is off and its links are gone
            with self._acting():
                self._reset_firmware_side()
                self._held = None  # its grants are SimPump's again

    # ---- virtual time -------------------------------------------------------------------------
    def schedule(self, t_ms: int, fn: Callable[[], None]) -> None:
        """Run fn() at virtual time t_ms, while the firmware is paused there."""
        with self._acting():
            heapq.heappush(self._actions, (int(t_ms), next(self._seq), fn))

    def _sensor_due(self, s: SimulatedCgmSensor) -> int | None:
        c = s.core
        if not c.running:
            return None
        return round(c.session_t0_s * 1000) + c.next_offset * 60000

    def next_due(self) -> int | None:
        ts = [t for t in (self._sensor_due(s) for s in self.sensors) if t is not None]
        if self._actions:
            ts.append(self._actions[0][0])
        return min(ts) if ts else None

    def _advance(self, t_ms: int) -> None:
        """Fire everything due up to t_ms, in time order, then send the firmware its events."""
        while True:
            due = self.next_due()
            if due is None or due > t_ms:
                break
            self.now_ms = max(self.now_ms, due)
            if self._actions and self._actions[0][0] == due:
                _, _, fn = heapq.heappop(self._actions)
                fn()
                continue
            for s in self.sensors:
                if self._sensor_due(s) == due:
                    self._run(s.emit())
                    self.stats["readings"] += 1
                    break
        self.now_ms = max(self.now_ms, t_ms)
        self._flush()

    # ---- sensors and faults ------------------------------------------------------------------------
    def add_sensor(self, address: str = SENSOR_ADDRESS, **kw: Any) -> SimulatedCgmSensor:
        """Power a simulated CGMS sensor up now (virtual time), advertising on the radio; kw go to
        SimulatedCgmSensor.start (profile= or trace=, name=, backfill=, seed=, noise=, ...). Its
        session starts now and it makes a reading every interval of virtual time."""
        with self._acting():
            kw.setdefault("clock", lambda: self.now_ms / 1000.0)
            # Advertising runs on bumble's wall clock: a short interval makes a scan or a connect
            # (each waits for one advertisement) cost little wall time.
            kw.setdefault("adv_interval_ms", 5.0)
            s = self._run(SimulatedCgmSensor.start(self.radio, address=address, **kw))
            self.sensors.append(s)
            self._appeared(address)
            self._advance(self.now_ms)  # its first reading is due now
            return s

    def sensor(self, address: str = SENSOR_ADDRESS) -> SimulatedCgmSensor:
        return next(s for s in self.sensors if s.address.upper() == address.upper())

    def link_loss(self, duration_ms: int, address: str = SENSOR_ADDRESS) -> None:
        """The sensor goes out of range now for duration_ms of virtual time: its links drop as a
        supervision timeout would drop them (both sides see reason 0x08), and until it is back
        nothing it sends reaches anyone (it keeps advertising, and storing its readings)."""
        with self._acting():
            key = address.upper()
            ctrl = self.radio.controllers[key]
            if key not in self.out_of_range:
                self._log("out", key)
                self._run(self._cut(ctrl))
            self.out_of_range[key] = max(self.out_of_range.get(key, 0), self.now_ms + int(duration_ms))
            self.schedule(self.out_of_range[key], lambda: self._back_in_range(key))
            self._advance(self.now_ms)

    async def _cut(self, ctrl) -> None:
        link = self.radio.link
        for peer_addr, conn in list(ctrl.le_connections.items()):
            peer = link.find_le_controller(peer_addr)
            if peer is not None:
                pc = peer.le_connections.get(conn.self_address)
                if pc is not None:
                    peer.on_le_disconnected(pc, HCI_CONNECTION_TIMEOUT_ERROR)
            ctrl.on_le_disconnected(conn, HCI_CONNECTION_TIMEOUT_ERROR)
        link.remove_controller(ctrl)
        ctrl.link = None  # its advertising goes nowhere

    def _back_in_range(self, key: str) -> None:
        if self.out_of_range.get(key, 0) > self.now_ms:
            return  # extended by a later link_loss
        self.out_of_range.pop(key, None)
        ctrl = self.radio.controllers[key]

        async def back():
            ctrl.link = self.radio.link
            self.radio.link.add_controller(ctrl)
        self._run(back())
        self._log("back", key)
        self._appeared(key)

    def _advertising(self, key: str) -> bool:
        ctrl = self.radio.controllers.get(key)
        return bool(ctrl is not None and ctrl.link is not None and ctrl.is_advertising)

    def _appeared(self, key: str) -> None:
        """A peripheral may have come into view: report it to a running scan, complete a pending
        connection to it."""
        key = key.upper()
        if not self.active or not self._advertising(key):
            return
        if self.scanning and key not in self.scan_seen:
            self._scan_results([key])
        if self.pending is not None and _addr_key(self.pending[0]) == key:
            peer, _ = self.pending
            self.pending = None
            self._connect_now(peer)

    # ---- requests from the firmware -------------------------------------------------------------
    def _request(self, sim: SimPump, f: list[str]) -> None:
        """"@b <method> <now_ms> <args>": one call of the firmware's radio (the shim's generic
        call); answered by "b= <errno> <results>" after its events."""
        with self._acting():
            self.sim = sim
            self.stats["requests"] += 1
            self.trace.append(f"{f[1] if len(f) > 1 else '?'} > b {' '.join(f)}")
            extra = ""
            try:
                name, now = f[0], int(f[1]) + sim._base
                args, kw = [], {}
                for tok in f[2:]:
                    key, sep, val = tok.partition(":")
                    if sep:
                        kw[key] = _arg(val)
                    else:
                        args.append(_arg(tok))
                if now < self.now_ms:
                    now = self.now_ms
                if self.next_due() is not None and self.next_due() < now:
                    self.stats["late"] += 1  # the firmware ran past a hold: should never happen
                self._advance(now)
                handler = getattr(self, "op_" + name, None)
                if handler is None:
                    raise BridgeError(EINVAL)  # a method the sim's radio does not have
                if name not in ("active", "config") and not self.active:
                    raise BridgeError(ENODEV)
                extra = _results(handler(*args, **kw))
                self._wait_peers()
                err = 0
            except BridgeError as e:
                err = e.errno
            except (ValueError, IndexError, TypeError, KeyError):
                err = EINVAL
            except Exception as e:  # noqa: BLE001 - a bridge bug must not hang the firmware's call
                log.exception("radio request %s failed", f)
                self.errors.append(f"{' '.join(f)}: {e!r}")
                err = EIO
            self._flush()
            with self._qlock:  # the reply last
                self._send_events()
                self._send(f"b= {err}{extra}")

    def _conn(self, handle: int):
        conn = self.conns.get(handle)
        if conn is None:
            raise BridgeError(ENOTCONN)
        return conn

    # The op_<name> methods are the firmware's BLE methods, with MicroPython's parameter names;
    # arguments arrive as ints (None: -1; bools: 0/1) and bytes (UUIDs: little-endian, str: UTF-8).
    def op_active(self, active: int | None = None) -> bool:
        if active is not None and active >= 0:
            if active:
                self.active = True
            else:
                self._reset_firmware_side()
        return self.active

    def op_config(self, *args: bytes, **kw: Any) -> Any:
        """config("key") -> value; config(key=value, ...) stores them (the shim keeps none)."""
        if args:
            key = bytes(args[0]).decode()
            if key == "mac":
                return 1, _addr_bytes(Address(self.address))  # random static, as the C module says
            return self.config.get(key)
        self.config.update(kw)
        return None

    def op_gap_scan(self, duration_ms: int, interval_us: int = 1280000, window_us: int = 11250,
                    active: int = 0) -> None:
        d = duration_ms
        if d < 0:
            self._scan_stop()
            return
        if self.scanning:
            raise BridgeError(EALREADY)
        if self.pending is not None:
            raise BridgeError(EBUSY)

        async def start():
            self._adv.clear()
            await self.device.start_scanning(active=bool(active), filter_duplicates=False)
        self._run(start())
        self._log("scan")
        self.scanning = True
        self.scan_seen = set()
        self.scan_until = self.now_ms + d if d > 0 else None
        if d > 0:
            until = self.scan_until
            self.schedule(until, lambda: self._scan_stop() if self.scanning and self.scan_until == until else None)
        self._scan_results(sorted(k for k in self.radio.controllers if k != self.address.upper()))

    def _scan_results(self, keys: list[str]) -> None:
        """One _IRQ_SCAN_RESULT per advertiser in view, from the advertisement the pump's
        controller received (waiting for it in wall time: at most one advertising interval)."""
        keys = [k for k in keys if self._advertising(k)]

        async def wait():
            for _ in range(2000):
                if all(k in self._adv for k in keys):
                    return
                await asyncio.sleep(0.001)
            raise TimeoutError(f"no advertisement from {keys} on the virtual link")
        self._run(wait(), settle=False)
        for k in keys:
            adv = self._adv[k]
            self.scan_seen.add(k)
            typ = 1 if adv.is_directed else 0 if adv.is_connectable else 2 if adv.is_scannable else 3
            self._event(IRQ_SCAN_RESULT, adv.address.address_type & 1, _addr_bytes(adv.address), typ,
                        self.rssi.get(k, self.default_rssi), adv.data_bytes)

    def _on_adv(self, adv) -> None:  # bumble loop thread
        # bumble's virtual controller answers every active scan with a "scan response" that
        # repeats the advertising data; scan response payloads are not modelled: ADV_IND only.
        if not adv.is_scan_response:
            self._adv[_addr_key(adv.address)] = adv

    def _scan_stop(self) -> None:
        if not self.scanning:
            return
        self.scanning = False
        self.scan_until = None
        self._run(self.device.stop_scanning())
        self._log("scan_done")
        self._event(IRQ_SCAN_DONE)

    def op_gap_connect(self, addr_type: int, addr: bytes = b"", scan_duration_ms: int = 2000,
                       *_intervals: int, **_kw: int) -> None:
        if addr_type < 0:  # gap_connect(None): cancel
            if self.pending is None:
                raise BridgeError(EALREADY)
            self.pending = None
            self._event(IRQ_PERIPHERAL_DISCONNECT, CONN_NONE, 0xFF, bytes(6))
            return
        if len(addr) != 6:
            raise BridgeError(EINVAL)
        peer = Address(":".join(f"{b:02X}" for b in addr), addr_type & 1)
        key = _addr_key(peer)
        if self.pending is not None:
            raise BridgeError(EALREADY)
        if any(_addr_key(c.peer_address) == key for c in self.conns.values()):
            raise BridgeError(EIO)  # NimBLE: BLE_HS_EDONE, already connected
        self._scan_stop()  # the stack stops scanning to connect
        if self._advertising(key):
            self._connect_now(peer)
            return
        deadline = self.now_ms + (scan_duration_ms or CONNECT_DEFAULT_MS)
        self.pending = (peer, deadline)

        def timeout():
            if self.pending is not None and self.pending[1] == deadline:
                self.pending = None
                self._event(IRQ_PERIPHERAL_DISCONNECT, CONN_NONE, 0xFF, bytes(6))
        self.schedule(deadline, timeout)

    def _connect_now(self, peer: Address) -> None:
        async def go():
            conn = await self.device.connect(peer, timeout=WALL_TIMEOUT_S / 2)
            handle = conn.handle
            self.conns[handle] = conn
            addr_type, addr = conn.peer_address.address_type & 1, _addr_bytes(conn.peer_address)
            gc = conn.gatt_client

            def notified(pdu) -> None:  # every notification, as the board's stack passes them all up
                self.stats["notifications"] += 1
                self._event(IRQ_GATTC_NOTIFY, handle, pdu.attribute_handle, pdu.attribute_value)

            def indicated(pdu) -> None:
                self.stats["indications"] += 1
                self._event(IRQ_GATTC_INDICATE, handle, pdu.attribute_handle, pdu.attribute_value)
                gc.send_confirmation(att.ATT_Handle_Value_Confirmation())  # the stack confirms

            def gone(_reason=None) -> None:
                if self.conns.get(handle) is conn:
                    del self.conns[handle]
                    self._log("disconnect", _addr_key(conn.peer_address))
                    self._event(IRQ_PERIPHERAL_DISCONNECT, handle, addr_type, addr)

            gc.on_att_handle_value_notification = notified
            gc.on_att_handle_value_indication = indicated
            conn.on(conn.EVENT_DISCONNECTION, gone)
            self._log("connect", _addr_key(conn.peer_address))
            self._event(IRQ_PERIPHERAL_CONNECT, handle, addr_type, addr)
        self._run(go())

    def op_gap_disconnect(self, conn_handle: int) -> bool:
        conn = self.conns.get(conn_handle) or self.centrals.get(conn_handle)  # a peripheral, or a central
        if conn is None:
            return False
        self._run(conn.disconnect())
        return True

    def _procedure(self, body: Callable[[], Coroutine], done: int, *fields: Any) -> None:
        """Run a GATT procedure (body emits its result events), then its DONE event with the
        status the board reports (0, or 0x100 + the ATT error code) - both before the loop runs
        on, so they precede whatever the peer sends because of it (RACP records after a write)."""
        async def go():
            try:
                await body()
                st = 0
            except att.ATT_Error as e:
                st = ATT_STATUS + int(e.error_code)
            if done:
                self._event(done, *fields, st)
        self._run(go())

    def op_gattc_discover_services(self, conn_handle: int, uuid: bytes | int = -1) -> None:
        conn = self._conn(conn_handle)
        h = conn.handle
        want = [] if uuid == -1 else [_uuid(uuid)]

        async def body():
            for svc in await conn.gatt_client.discover_services(want):
                self._event(IRQ_GATTC_SERVICE_RESULT, h, svc.handle, svc.end_group_handle, svc.uuid)
        self._procedure(body, IRQ_GATTC_SERVICE_DONE, h)

    def op_gattc_discover_characteristics(self, conn_handle: int, start_handle: int, end_handle: int,
                                          uuid: bytes | int = -1) -> None:
        conn = self._conn(conn_handle)
        h, s, e = conn.handle, start_handle, end_handle
        want = None if uuid == -1 else _uuid(uuid)

        async def body():
            found = []  # (declaration handle, value handle, properties, uuid)
            gc = conn.gatt_client
            nxt = s
            while nxt <= e:
                rsp = await gc.send_request(att.ATT_Read_By_Type_Request(
                    starting_handle=nxt, ending_handle=e, attribute_type=GATT_CHARACTERISTIC_ATTRIBUTE_TYPE))
                if rsp.op_code == att.Opcode.ATT_ERROR_RESPONSE:
                    if rsp.error_code == att.ATT_ATTRIBUTE_NOT_FOUND_ERROR:
                        break
                    raise att.ATT_Error(rsp.error_code)
                if not rsp.attributes:
                    break
                for decl, value in rsp.attributes:
                    props, vh = struct.unpack_from("<BH", value)
                    found.append((decl, vh, props, BUUID.from_bytes(bytes(value[3:]))))
                nxt = rsp.attributes[-1][0] + 1
            for i, (_decl, vh, props, u) in enumerate(found):
                last = found[i + 1][0] - 1 if i + 1 < len(found) else e  # end_handle, as MicroPython reports it
                if want is None or u == want:
                    self._event(IRQ_GATTC_CHARACTERISTIC_RESULT, h, last, vh, props, u)
        self._procedure(body, IRQ_GATTC_CHARACTERISTIC_DONE, h)

    def op_gattc_discover_descriptors(self, conn_handle: int, start_handle: int, end_handle: int) -> None:
        conn = self._conn(conn_handle)
        h, s, e = conn.handle, start_handle, end_handle

        async def body():
            if s <= e:
                for d in await conn.gatt_client.discover_descriptors(start_handle=s, end_handle=e):
                    self._event(IRQ_GATTC_DESCRIPTOR_RESULT, h, d.handle, d.type)
        self._procedure(body, IRQ_GATTC_DESCRIPTOR_DONE, h)

    def op_gattc_read(self, conn_handle: int, value_handle: int) -> None:
        conn = self._conn(conn_handle)
        h, vh = conn.handle, value_handle

        async def body():
            v = await conn.gatt_client.read_value(vh, no_long_read=True)
            self._event(IRQ_GATTC_READ_RESULT, h, vh, v)
        self._procedure(body, IRQ_GATTC_READ_DONE, h, vh)

    def op_gattc_write(self, conn_handle: int, value_handle: int, data: bytes, mode: int = 0) -> None:
        conn = self._conn(conn_handle)
        h, vh, value = conn.handle, value_handle, bytes(data)
        if mode not in (0, 1):
            raise BridgeError(EINVAL)

        async def body():
            await conn.gatt_client.write_value(vh, value, with_response=mode == 1)
        # write-without-response raises no event
        self._procedure(body, IRQ_GATTC_WRITE_DONE if mode == 1 else 0, h, vh)

    def op_gattc_exchange_mtu(self, conn_handle: int) -> None:
        conn = self._conn(conn_handle)
        mtu = self.config.get("mtu", 23)

        async def body():
            got = await conn.gatt_client.request_mtu(max(23, mtu))
            self._event(IRQ_MTU_EXCHANGED, conn.handle, got)
        self._procedure(body, 0)

    # ---- peripheral role (boards/sim/bluetooth_p.py) ----------------------------------------------
    def _on_connection(self, conn) -> None:  # bumble loop thread: a central connected to us
        if conn.role != Role.PERIPHERAL:
            return  # our own gap_connect: _connect_now reports it
        handle = conn.handle
        addr_type, addr = conn.peer_address.address_type & 1, _addr_bytes(conn.peer_address)
        self.centrals[handle] = conn

        def gone(_reason=None) -> None:
            if self.centrals.pop(handle, None) is not None:
                self._event(IRQ_CENTRAL_DISCONNECT, handle, addr_type, addr)
        conn.on(conn.EVENT_DISCONNECTION, gone)
        self._event(IRQ_CENTRAL_CONNECT, handle, addr_type, addr)

    def _remote_write(self, conn, handle: int, value: bytes) -> None:  # bumble loop thread
        self.values[handle] = bytes(value)  # gatts_read (a call) reads it from here
        self._event(IRQ_GATTS_WRITE, conn.handle, handle)

    def op_gap_advertise(self, interval_us: int, adv_data: bytes | int = -1, resp_data: bytes | int = -1,
                         connectable: int = 1) -> None:
        self.peripheral = True
        if adv_data != -1:
            self.adv_data = bytes(adv_data)
        if resp_data != -1:
            self.resp_data = bytes(resp_data)
        start = interval_us >= 0

        async def go():
            await self.device.stop_advertising()
            if start:
                await self.device.start_advertising(
                    advertising_data=self.adv_data, scan_response_data=self.resp_data or None, auto_restart=False,
                    advertising_interval_min=5.0, advertising_interval_max=5.0)
        self._run(go())

    def op_gatts_register(self, *toks: Any) -> tuple[int, ...]:
        """gatts_register_services, flattened by bluetooth_p.py: per service its UUID and count of
        characteristics; per characteristic its UUID, flags and count of descriptors; per
        descriptor its UUID and flags. Returns every value handle, in that order."""
        from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service

        if self.gatt:
            raise BridgeError(EALREADY)  # the shim registers once (docs/ble.md)
        self.peripheral = True

        def perms(flags: int):
            p = Characteristic.READABLE if flags & 0x02 else 0
            return p | (Characteristic.WRITEABLE if flags & 0x0C else 0) or Characteristic.READABLE

        def value(box: list) -> CharacteristicValue:
            return CharacteristicValue(read=lambda _c: self.values.get(box[0].handle, b""),
                                       write=lambda c, v: self._remote_write(c, box[0].handle, v))

        uuid = _uuid

        services, order, i = [], [], 0
        while i < len(toks):
            su, n = uuid(toks[i]), toks[i + 1]
            i += 2
            chars = []
            for _ in range(n):
                cu, flags, nd = uuid(toks[i]), toks[i + 1], toks[i + 2]
                i += 3
                descs = []
                for _ in range(nd):
                    box: list = []
                    d = Descriptor(uuid(toks[i]), perms(toks[i + 1]), value(box))
                    box.append(d)
                    descs.append(d)
                    i += 2
                box = []
                c = Characteristic(cu, Characteristic.Properties(flags & 0xFF), perms(flags), value(box), descs)
                box.append(c)
                chars.append(c)
                order += [c, *descs]
            services.append(Service(su, chars))

        async def add():
            for svc in services:
                self.device.add_service(svc)
        self._run(add())
        for a in order:
            self.gatt[a.handle] = a
            self.values[a.handle] = b""
        return tuple(a.handle for a in order)

    def _attr(self, handle: int):
        a = self.gatt.get(handle)
        if a is None:
            raise BridgeError(EINVAL)
        return a

    def _central(self, handle: int):
        conn = self.centrals.get(handle)
        if conn is None:
            raise BridgeError(ENOTCONN)
        return conn

    def op_gatts_read(self, value_handle: int) -> bytes:
        return self.values[self._attr(value_handle).handle]

    def op_gatts_set_buffer(self, value_handle: int, len: int, append: int = 0) -> None:  # noqa: A002
        self._attr(value_handle)  # remote writes are not truncated here

    def op_gatts_write(self, value_handle: int, data: bytes, send_update: int = 0) -> None:
        a = self._attr(value_handle)
        v = self.values[a.handle] = bytes(data)
        if send_update:  # to the subscribers, as their CCCDs ask
            async def go():
                await self.device.notify_subscribers(a, v)
                await self.device.indicate_subscribers(a, v)
            self._run(go())

    def _value(self, a: Any, data: bytes | int) -> bytes:
        return self.values[a.handle] if data == -1 else bytes(data)

    def op_gatts_notify(self, conn_handle: int, value_handle: int, data: bytes | int = -1) -> None:
        c, a = self._central(conn_handle), self._attr(value_handle)
        self._run(self.device.notify_subscriber(c, a, self._value(a, data), force=True))

    def op_gatts_indicate(self, conn_handle: int, value_handle: int, data: bytes | int = -1) -> None:
        c, a = self._central(conn_handle), self._attr(value_handle)
        v = self._value(a, data)

        async def go():
            try:
                await self.device.indicate_subscriber(c, a, v, force=True)
                st = 0
            except Exception:  # noqa: BLE001 - no confirmation: the link went away
                st = 13  # BLE_HS_ETIMEOUT
            self._event(IRQ_GATTS_INDICATE_DONE, c.handle, a.handle, st)
        self._run(go())

    def _reset_firmware_side(self) -> None:
        """The pump's radio is off (active(False), or a reboot): links dropped, scan stopped."""
        was = self.active
        self.active = False
        self.pending = None
        if self.scanning:
            self.scanning = False
            self._run(self.device.stop_scanning())
        for conn in [*self.conns.values(), *self.centrals.values()]:
            try:
                self._run(conn.disconnect())
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.conns.clear()
        self.centrals.clear()
        if self.peripheral:
            self._run(self.device.stop_advertising())
        with self._qlock:
            self._events.clear()
        if was:
            log.debug("pump radio off at %d ms", self.now_ms)
