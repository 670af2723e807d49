# The peripheral role's parts of the simulated board's radio that are not plain calls: FLAG_* and
# gatts_register_services (nested tuples in and out). boards/sim/bluetooth.py loads this on first
# use, so a central such as the pump never pays for it. The other peripheral methods
# (gap_advertise, gatts_read/write/notify/indicate/set_buffer) are the shim's generic calls: the
# values live in the harness's bumble GATT server (hil/ble/bridge.py), which serves remote reads
# and reports remote writes (_IRQ_GATTS_WRITE; gatts_read then asks it for the value).
# Differences from a board: services can be registered once; intervals and connectable are
# ignored (bumble's virtual link advertises connectably, every 5 ms of wall time).
import bluetooth
from micropython import const

FLAG_BROADCAST = const(0x0001)
FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)


def gatts_register_services(services):
    # On the bus, flat: per service its UUID and number of characteristics; per characteristic
    # its UUID, flags and number of descriptors; per descriptor its UUID and flags.
    a = []
    for svc in services:
        a += [svc[0], len(svc[1])]
        for ch in svc[1]:
            ds = ch[2] if len(ch) > 2 else ()
            a += [ch[0], ch[1], len(ds)]
            for d in ds:
                a += [d[0], d[1]]
    handles = bluetooth.__getattr__("gatts_register")(*a)
    if not isinstance(handles, tuple):
        handles = (handles,)
    out = []
    i = 0
    for svc in services:
        n = 0
        for ch in svc[1]:
            n += 1 + (len(ch[2]) if len(ch) > 2 else 0)
        out.append(tuple(handles[i:i + n]))
        i += n
    return tuple(out)
