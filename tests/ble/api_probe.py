# The `bluetooth` shim's API semantics, checked from MicroPython (tests/test_ble_bridge.py): errors
# the C module raises, UUIDs, and the virtual time at which each IRQ event arrives. Reports
# "@P <what> <t_ms> ..." lines; every IRQ event as "ev <t> <event> <fields>" (bytes as hex,
# UUIDs by repr). Steps happen at the tick (virtual ms) given in STEPS, so some fall mid-grant.
import sys

import board
from basalt.hal.sim import make_hal

hal = make_hal(board, sys.argv[1:])
hal.bus.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (the sim HAL's bus may not set it yet)
import bluetooth  # noqa: E402  (the HAL first: the shim reaches it through basalt.hal.sim)

SENSOR = b"\xc0\x98\xe5\x49\x00\x01"
ABSENT = b"\xc0\x98\xe5\x49\x00\x09"
conn = [None]


def report(what, *a):
    hal.send(f"P {what} {hal.now_ms()}" + "".join(" " + str(x) for x in a))


def errno_of(fn, *a):
    try:
        r = fn(*a)
        return "ok" if r is None else r
    except OSError as e:
        return e.errno
    except ValueError:
        return "ValueError"


def show(v):
    if isinstance(v, memoryview):
        return bytes(v).hex() or "-"
    return repr(v).replace(" ", "")


def irq(event, data):
    report("ev", event, *[show(v) for v in data])
    if event == 7:
        conn[0] = data[0]


ble = bluetooth.BLE()
report("notactive", errno_of(ble.gattc_read, 0, 1))  # the shim refuses before active(True)
report("singleton", ble is bluetooth.BLE())
u = bluetooth.UUID(0x2AA7)
u128 = bluetooth.UUID("6E400001-B5A3-F393-E0A9-E50E24DCCA9E")
report("uuid", u == bluetooth.UUID(0x2AA7), u != bluetooth.UUID(0x2AA8), {u: 1}[bluetooth.UUID(b"\xa7\x2a")],
       bytes(u).hex(), show(u), len(bytes(u128)), bytes(u128)[15], errno_of(lambda: bluetooth.UUID(b"abc")))
report("uuid2", isinstance(u, bluetooth.UUID), errno_of(lambda: bluetooth.UUID(0x10000)), bytes(memoryview(u)).hex(),
       u == bluetooth.UUID(u), bluetooth.UUID(bluetooth.UUID(0x2AA7)) == u)
report("active", ble.active(True), ble.active())
ble.irq(irq)
ble.config(mtu=100)
report("config", ble.config("mtu"), ble.config("mac")[0], ble.config("mac")[1].hex())
ble.config(gap_name="Basalt pump")
report("config2", ble.config("gap_name") == b"Basalt pump", ble.config("nonsense"))
report("read", errno_of(ble.gattc_read, 7, 3))  # no such connection: ENOTCONN
report("disc", ble.gap_disconnect(7))  # False: not connected
report("cancel", errno_of(ble.gap_connect, None))  # nothing to cancel: EALREADY

STEPS = {
    5000: lambda: report("connect_absent", errno_of(ble.gap_connect, 1, ABSENT, 2000)),
    10000: lambda: report("scan", errno_of(ble.gap_scan, 1500, 30000, 30000, True)),
    15000: lambda: report("connect_absent", errno_of(ble.gap_connect, 1, ABSENT, 3000)),
    16000: lambda: report("cancel", errno_of(ble.gap_connect, None)),
    20000: lambda: report("connect", errno_of(ble.gap_connect, 1, SENSOR, 2000)),
    21000: lambda: report("mtu", errno_of(ble.gattc_exchange_mtu, conn[0])),
    22000: lambda: report("chars", errno_of(ble.gattc_discover_characteristics, conn[0], 1, 0xFFFF,
                                            bluetooth.UUID(0x2A52))),
    23000: lambda: report("racp", errno_of(ble.gattc_write, conn[0], RACP[0], b"\x01\x01", 1)),
    24000: lambda: report("nores", errno_of(ble.gattc_write, conn[0], RACP[0], b"\x01\x01")),
    25000: lambda: report("read", errno_of(ble.gattc_read, conn[0], 0xFFF0)),
    26000: lambda: report("bye", ble.gap_disconnect(conn[0])),
    27000: lambda: report("off", ble.active(False), errno_of(ble.gap_scan, 1000)),
    28000: lambda: report("central_only", "bluetooth_p" not in sys.modules),  # the peripheral part never loaded
}
RACP = [0]


def irq2(event, data):
    irq(event, data)
    if event == 11:
        RACP[0] = data[2]


ble.irq(irq2)
while True:
    if not hal.wait():
        step = STEPS.get(hal.now_ms())
        if step:
            step()
