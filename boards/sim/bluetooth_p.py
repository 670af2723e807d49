# The peripheral role of the simulated board's radio: gap_advertise, gatts_*, FLAG_*, with the
# board's C module API (boards/sim/bluetooth.py loads this on first use, so a central such as
# the pump never pays for it). Values live here (gatts_read is local, as on a board) and in the
# harness's bumble GATT server, which serves remote reads and reports remote writes
# (_IRQ_GATTS_WRITE, after a "b v <handle> =<value>" line updates the local copy).
# Differences from a board: services can be registered once; intervals and connectable are
# ignored (bumble's virtual link advertises connectably, every 5 ms of wall time).
from bluetooth import UUID
from micropython import const

FLAG_BROADCAST = const(0x0001)
FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_ADVERTISE = const(20)  # request op codes (hil/ble/bridge.py)
_REGISTER = const(21)
_WRITE_LOCAL = const(22)
_NOTIFY = const(23)
_INDICATE = const(24)


def gap_advertise(ble, interval_us, adv_data=None, resp_data=None, connectable=True):
    ble.request(_ADVERTISE, -1 if interval_us is None else interval_us,
                -1 if adv_data is None else adv_data, -1 if resp_data is None else resp_data)


def gatts_register_services(ble, services):
    a = [_REGISTER]
    for svc in services:
        a += [UUID(svc[0]), len(svc[1])]
        for ch in svc[1]:
            ds = ch[2] if len(ch) > 2 else ()
            a += [UUID(ch[0]), ch[1], len(ds)]
            for d in ds:
                a += [UUID(d[0]), d[1]]
    handles = [int(h) for h in ble.request(*a)[2:]]
    out = []
    i = 0
    for svc in services:
        n = 0
        for ch in svc[1]:
            n += 1 + (len(ch[2]) if len(ch) > 2 else 0)
        out.append(tuple(handles[i:i + n]))
        i += n
    for h in handles:
        ble.value[h] = b""
    return tuple(out)


def _handle(ble, h):
    if h not in ble.value:
        raise OSError(22)  # EINVAL: not a registered value handle
    return ble.value[h]


def gatts_read(ble, h):
    return _handle(ble, h)


def gatts_write(ble, h, data, send_update=False):
    _handle(ble, h)
    ble.value[h] = bytes(data)
    ble.request(_WRITE_LOCAL, h, data, 1 if send_update else 0)


def gatts_notify(ble, conn, h, data=None):
    ble.request(_NOTIFY, conn, h, _handle(ble, h) if data is None else data)


def gatts_indicate(ble, conn, h, data=None):
    ble.request(_INDICATE, conn, h, _handle(ble, h) if data is None else data)


def gatts_set_buffer(ble, h, n, append=False):
    _handle(ble, h)  # remote writes are not truncated here
