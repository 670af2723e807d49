# The simulated board's radio: MicroPython's `bluetooth` module for the Unix port (which has
# none). Same API, IRQ numbers and event tuples as the board's C module; the link, GATT and every
# call's checks are a real Bluetooth host stack (bumble) in the harness (hil/ble/bridge.py),
# reached over the HAL bus (docs/ble.md "The radio shim").
#
# Small on purpose: on a board this module is C and costs no heap, here the firmware pays for it.
# So the radio object BLE() returns is this module itself (no class, no instance), and every
# method but irq() is one generic call found by __getattr__: "@b <method name> <now_ms> <args>",
# answered by "b= <errno> <results>" (errno 0 = done; else OSError(errno), as the C module
# raises). Args: ints (None as -1, bools as 0/1), "=<hex>" for bytes, UUIDs (little-endian) and
# str, "<name>:<value>" for keyword arguments. Results: ints, "#<hex>" bytes, T/F bools; one is
# returned as is, several as a tuple, none as None. The bridge knows each method's arguments,
# errors and results; FLAG_* and gatts_register_services (nested tuples) are bluetooth_p.py's,
# loaded on first use, so a central never pays for them.
#
# Events come before the reply that ends a call, as "b <event> <fields>" lines (ints; "=<hex>"
# bytes, passed as memoryviews; "u<hex>" UUIDs). The HAL hands every "b" line to rx (the queue's
# append); deliver(), which the HAL calls at the start of every wait(), runs the irq handler for
# each event in order: never re-entrantly inside a call, like the board's scheduled events.
# "b h <t_ms>": the radio's next due virtual time (0: none); the grant is held there, so a scan
# or connect timeout ends at its own virtual time in lockstep. "b k": the events before it were
# caused by a remote device (another firmware process on the link); deliver() answers
# "@b k <count>" once they are handled, so the processes stay in step.
#
# Differences from a board: a procedure completes in zero virtual time; BLE() is the module (it
# has the methods; `BLE() is BLE()`); any attribute name that is not FLAG_* is a method, which the
# bridge refuses with OSError(EINVAL) when the sim does not have it; a UUID is a bytes subclass
# (so it also equals plain bytes of the same value, and has no len()).
from micropython import const

_T = const(84)  # "T": True; "F": False
_U = const(117)  # "u": a UUID field
_B = const(35)  # "#": bytes (a result)
_EQ = const(61)  # "=": bytes (an event's: a memoryview); "b=" is a reply, for the HAL's request()
_K = const(107)  # "k": say when the events before it are handled

# Module globals reuse names the firmware interns anyway (q, h, hal), and the fixed strings are
# bytes: on a board this module is C, here every new name is interned for good and the firmware
# is near MicroPython's qstr pool limit (docs/memory.md).
q = []  # bus lines since the last deliver()
rx = q.append  # the HAL's hook, per "b" line
h = None  # the irq handler
hal = None  # the sim HAL (basalt.hal.sim.BUS), once BLE() was called


class UUID(bytes):
    # A 16-, 32- or 128-bit UUID: its little-endian bytes (the ATT wire order).
    def __init__(self, v):
        if isinstance(v, int):
            v = bytes((v & 255, v >> 8))  # ValueError above 65535, as the C module's
        elif isinstance(v, str):
            v = bytes(reversed(bytes.fromhex(v.replace("-", ""))))
        else:
            v = bytes(v)  # bytes, memoryview, a UUID
        if not 0x10014 >> len(v) & 1:  # 2, 4 or 16 bytes
            raise ValueError("UUID")
        super().__init__(v)

    def __repr__(self):
        return (b"UUID(0x%s)" % bytes(reversed(bytes(self))).hex()).decode()


def parse(t):  # one bus field
    c = t[0]
    if c == _U:
        return UUID(bytes.fromhex(t[1:]))
    if c > 64:
        return c == _T
    if c == _B:
        return bytes.fromhex(t[1:])
    if c == _EQ:
        return memoryview(bytes.fromhex(t[1:]))
    return int(t)


def __getattr__(n):
    # BLE, irq and every BLE method: one function each time (like a bound method); FLAG_* and
    # gatts_register_services (n[6] == "r") from bluetooth_p.py, named in bytes so that a central
    # never interns its name.
    if ord(n[0]) == 70 or len(n) > 20 and ord(n[6]) == 114:
        return getattr(__import__(b"bluetooth_p".decode()), n)

    def call(*args, **k):
        global hal, h
        if n == "BLE":  # the singleton: this module, also the HAL's radio hook
            import basalt.hal.sim

            hal = basalt.hal.sim.BUS
            hal.ble = __import__("bluetooth")
            return hal.ble
        if n == "irq":
            h = args[0]
            return
        s = b"b %s %d" % (n, hal.now_ms())
        for v in args + tuple(k.items()):
            p = b" "
            if type(v) is tuple:  # a keyword argument
                p += v[0].encode() + b":"
                v = v[1]
            if v is None:
                v = -1
            if isinstance(v, (int, bool)):
                s += p + b"%d" % v
            else:
                s += p + b"=" + (v.encode() if isinstance(v, str) else bytes(v)).hex().encode()
        r = hal.request(s, b"b=").split()
        e = int(r[1])
        if e:
            raise OSError(e)
        r = tuple(map(parse, r[2:]))
        return r[0] if len(r) == 1 else r or None

    return call


def deliver():
    while q:
        f = q.pop(0).split()
        if f[0][-1] == _EQ:  # "b=": a call's reply (the HAL's request() took it)
            continue
        if f[1][0] == _K:  # the events before it are handled (and whatever the handler sent for them)
            hal.send(b"b k 1")
        elif h:
            h(int(f[1]), tuple(map(parse, f[2:])))
