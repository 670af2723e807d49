# Making the simulated board (basalt/hal/sim.py) at boot: its sockets on the harness's bus and
# console ports, its storage, and every attribute the HAL keeps. Run once through the overlay
# loader and dropped, so none of this stays in the heap (docs/memory.md).
import gc
import select
import socket

from micropython import const

from basalt.hal import sim
from basalt.lib.filestore import FileStore

_RX = const(256)  # longest bus line (radio lines carry hex payloads): sim.py's rx buffer


def make_hal(board, argv):
    """argv[0]: --sim=<bus port>,<console port>,<lockstep|realtime>,<reset cause>,<radio 0|1>,<storage>
    (hil/sim/firmware.py; one argument, as each is an interned name)."""
    if board.TICK_MS != sim.TICK_MS:
        raise ValueError("the core's control period is 1000 ms")
    if not argv or not argv[0].encode().startswith(b"--sim="):  # bytes: not an interned name
        raise ValueError("the simulator HAL is started by hil/sim (--sim=...)")
    a = argv[0][6:].split(",", 5)
    if a[2] == "realtime":
        import time

        from basalt.hal.sim_rt import RealtimeHal

        h = RealtimeHal()
        h.boot = time.ticks_ms()  # not t0: that is the motor train start
    else:
        h = sim.Hal()
    # every attribute the HAL keeps (one function: each argument name is interned for good)
    sim.BUS = h  # for the radio shim (boards/sim/bluetooth.py)
    gc.threshold(4096)  # in a 64 KB heap fragmentation, not total use, is what fails
    h.clock = h.motor = h.console = h.annunciator = h
    h.cause = a[3]
    h.sensed = [512, 2606, 1, 0]  # nominal until the harness's first S: zero force, 4.2 V
    h.ble = None  # the radio shim, once imported: rx(line) per b line, deliver() per wait
    h.waiting = h.reply = None  # request(): the prefix awaited, the line that came
    h.wdt_ms = h.fed = 0
    h.storage = FileStore(a[5])
    h.poller = p = select.poll()
    h.bus = s = socket.socket()
    s.connect(socket.getaddrinfo(b"127.0.0.1", int(a[0]))[0][-1])
    s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: unanswered lines must not wait 40 ms
    h.rx = bytearray(_RX)
    h.rx_len = 0
    p.register(s, select.POLLIN)
    h.listener = s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(socket.getaddrinfo(b"127.0.0.1", int(a[1]))[0][-1])
    s.listen(1)
    p.register(s, select.POLLIN)
    h.client = None
    h.port = int(a[1])
    h.now = h.granted = h.ticks = h.peak = 0
    h.next_tick = sim.TICK_MS
    h.acked = -1
    h.t0 = h.n = h.final = 0
    h.hz = 1
    h.has_radio = a[4] == "1"  # the harness attached a radio (hil/ble/bridge.py)
    h.send(b"%c %d" % (82, h.port))
    return h
