# The simulated board's radio: MicroPython's `bluetooth` module for the Unix port (which has
# none), central role. Same API, IRQ numbers and event tuples as the board's C module; the link
# and GATT are a real Bluetooth host stack (bumble) in the harness (hil/ble/bridge.py), reached
# over the HAL bus (docs/ble.md "The radio shim"). The peripheral role (gap_advertise, gatts_*,
# FLAG_*) lives in bluetooth_p.py and loads on first use, so a central pays nothing for it.
#
# Bus: every call is one request "@b <op> <now_ms> ..." answered by "b= <errno> ..." (errno 0 =
# done; else OSError(errno), as the C module raises). Its results come first, as "b <event>
# <fields>" lines (ints; "=hex" bytes; "u<hex>" UUID bytes, little-endian) that this module
# queues and hands to the irq handler from deliver(), which the HAL calls at the start of every
# wait(): never re-entrantly inside a gattc_* call, like the board's scheduled events. "b h
# <t_ms>" is the next virtual time at which the radio has something due (0: nothing): the grant
# is held there, so a scan or connect timeout ends at its own virtual time in lockstep. "b k"
# follows events a remote device caused (another firmware process on the link): deliver()
# answers "@b k <count>" once they are handled, so the processes stay in step. "b v <handle> =<value>"
# is a remote write's value (the peripheral role, bluetooth_p.py).
# Differences from a board: a procedure completes in zero virtual time; a UUID is iterable (so
# bytes(uuid) works) but not a buffer; config() knows mtu and mac, and stores any other key.
#
# Heap: the simulator pays for this module (on a board it is C). Parameter and attribute names
# are MicroPython's built-in qstrs or the HAL's, so it interns few names of its own.
import sys

from micropython import const

_EQ = const(61)  # "=": bytes field; a reply in rx()
_H = const(104)  # "h": hold
_K = const(107)  # "k": say when the events before it are handled
_U = const(117)  # "u": UUID field
_V = const(118)  # "v": a characteristic's value, written by a remote client
# Request op codes (hil/ble/bridge.py OPS)
_ACTIVE = const(1)
_MAC = const(2)
_SCAN = const(3)
_CONNECT = const(4)
_DISCONNECT = const(5)
_SERVICES = const(6)
_CHARACTERISTICS = const(7)
_DESCRIPTORS = const(8)
_READ = const(9)
_WRITE = const(10)
_MTU = const(11)


class UUID:
    # A 16-, 32- or 128-bit UUID; data holds its little-endian bytes (the ATT wire order).
    def __init__(self, v):
        if isinstance(v, int):
            d = bytes((v & 255, v >> 8 & 255, v >> 16 & 255, v >> 24 & 255))
            d = d[:2] if v < 65536 else d
        elif isinstance(v, str):
            d = bytes(reversed(bytes.fromhex(v.replace("-", ""))))
        else:
            d = bytes(v)  # bytes, memoryview, or a UUID (iterable)
        if len(d) not in (2, 4, 16):
            raise ValueError("invalid UUID")
        self.data = d

    def __eq__(self, v):
        return isinstance(v, UUID) and v.data == self.data

    def __hash__(self):
        return hash(self.data)

    def __iter__(self):
        return iter(self.data)

    def __repr__(self):
        return "UUID(0x%s)" % bytes(reversed(self.data)).hex()


class BLE:
    # The singleton radio; it is also the HAL's `ble` hook (rx per "b" bus line, deliver per wait).
    def __new__(t):
        hal = sys.modules["basalt.hal.sim"].BUS
        if hal.ble is None:
            r = object.__new__(t)
            r.bus = hal
            r.state = False  # active()
            r.handler = None  # irq()
            r.data = []  # queued bus lines, in arrival order
            r.value = {"mtu": 23}  # config()
            r.next = r.granted = 0  # the radio's next due time; the harness's grant while held
            hal.ble = r
        return hal.ble

    def __getattr__(self, name):  # the peripheral role, loaded on first use
        f = getattr(__import__("bluetooth_p"), name)
        return lambda *args, **e: f(self, *args, **e)

    def request(self, *args):
        # One call: "b <op> <now> <args>" (ints; "u" UUID; "=" bytes), then the reply.
        line = "b %d %d" % (args[0], self.bus.now_ms())
        for v in args[1:]:
            if isinstance(v, int):
                line += " %d" % v
            elif isinstance(v, UUID):
                line += " u" + v.data.hex()
            else:
                line += " =" + bytes(v).hex()
        r = self.bus.request(line, b"b=").split()
        if r[1] != b"0":
            raise OSError(int(r[1]))
        return r

    # ---- HAL hooks ------------------------------------------------------------------------
    def rx(self, line):
        if line[1] != _EQ:  # replies are request()'s
            self.data.append(line)

    def deliver(self):
        q = self.data
        k = 0
        while q:
            f = q.pop(0).split()
            if f[1][0] == _H:
                self.next = int(f[2])
                continue
            if f[1][0] == _K:
                k += 1
                continue
            if f[1][0] == _V:
                self.value[int(f[2])] = bytes.fromhex(f[3][1:])
                continue
            args = []
            for t in f[2:]:
                if t[0] == _EQ:
                    args.append(memoryview(bytes.fromhex(t[1:])))
                elif t[0] == _U:
                    args.append(UUID(bytes.fromhex(t[1:])))
                else:
                    args.append(int(t))
            if self.state and self.handler:
                self.handler(int(f[1]), tuple(args))
        if k:
            self.bus.send("b k %d" % k)  # handled, with whatever the handlers sent meanwhile
        # Hold the grant at the radio's next due time; give it back once the radio moved on.
        hal = self.bus
        n = self.next
        g = self.granted or hal.granted
        if n and hal.now_ms() <= n < g:
            self.granted = g
            hal.granted = n
        elif self.granted:
            hal.granted = g
            self.granted = 0

    # ---- configuration --------------------------------------------------------------------
    def active(self, *args):
        if args and bool(args[0]) != self.state:
            self.request(_ACTIVE, 1 if args[0] else 0)
            self.state = bool(args[0])
            if not self.state:
                self.data.clear()
        return self.state

    def config(self, *args, **e):
        if args:
            if args[0] == "mac":
                r = self.request(_MAC)
                return int(r[2]), bytes.fromhex(r[3])
            return self.value.get(args[0])
        self.value.update(e)

    def irq(self, handler):
        self.handler = handler

    # ---- GAP, central ---------------------------------------------------------------------
    def gap_scan(self, n, *args):  # duration_ms (None: stop), interval_us, window_us, active
        self.request(_SCAN, -1 if n is None else n, 1 if len(args) > 2 and args[2] else 0)

    def gap_connect(self, t, v=None, n=2000, *args):  # addr_type (None: cancel), addr, scan_duration_ms
        if t is None:
            self.request(_CONNECT, -1)
        else:
            self.request(_CONNECT, t, bytes(v), n)

    def gap_disconnect(self, n):
        return self.request(_DISCONNECT, n)[2] == b"1"

    # ---- GATT client ----------------------------------------------------------------------
    def gattc_discover_services(self, n, e=None):
        self.request(_SERVICES, n, UUID(e)) if e is not None else self.request(_SERVICES, n)

    def gattc_discover_characteristics(self, n, s, e, v=None):
        if v is None:
            self.request(_CHARACTERISTICS, n, s, e)
        else:
            self.request(_CHARACTERISTICS, n, s, e, UUID(v))

    def gattc_discover_descriptors(self, n, s, e):
        self.request(_DESCRIPTORS, n, s, e)

    def gattc_read(self, n, v):
        self.request(_READ, n, v)

    def gattc_write(self, n, v, data, mode=0):
        self.request(_WRITE, n, v, mode, data)

    def gattc_exchange_mtu(self, n):
        self.request(_MTU, n, self.value["mtu"])
