# Persist the settings (profiles, limits, calculator, clock) whole and atomically, through the
# storage HAL's write-new/verify/rename. The document is JSON written in chunks, so no single
# large string has to fit the heap; rate tables and schedules go as the hex of their uint16
# arrays (little-endian, as on every target), not as lists of numbers.
#
# Commands save through cmd.commit, which leaves the change to commit() here: the server runs it
# as an overlay once the command's code is dropped (proto/server.py command(), which puts the
# change back if the save fails, import included). It lives in basalt.lib, not basalt.cmd, because
# importing a module loads its package first: here that costs nothing, there it would load the
# command helpers (basalt/cmd/__init__.py) beside the save.
import gc
import json
from binascii import hexlify

from micropython import const

from basalt.core import FILE, PROFILES

# core/cgm.py CgmLink.v slots
_LOSS_S = const(7)
_LOW = const(8)
_HIGH = const(9)


def settings(pump):
    yield ('{"v": 1, "active": %d, "clock_offset_s": %d, "alarm": [%d, %d, %d], "limits": ' % (
        pump.profiles.active, pump.clock_offset_s, pump.res_low_mu, pump.res_low_h, pump.auto_off_s)).encode()
    yield json.dumps(dict(pump.limits.__dict__)).encode()
    c = pump.calc
    if c is None:
        yield b', "calc": null'
    else:  # one schedule per chunk: no single large string
        yield (', "calc": {"dia_min": %d, "peak_min": %d' % (c["dia_min"], c["peak_min"])).encode()
        for k in ("cr", "isf", "target"):
            yield (', "%s": "' % k).encode()
            yield hexlify(c[k])
            yield b'"'
        yield b"}"
    g = pump.cgm
    if g is not None:  # pairing (address type + address, hex) and the CGM alerts
        yield (', "cgm": ["%s", %d, %d, %d]' % (hexlify(g.pair).decode(), g.v[_LOW], g.v[_HIGH], g.v[_LOSS_S])).encode()
    yield b"}"


def profiles(pump):
    p = pump.profiles
    yield b'{"v": 1, "profiles": ['
    for i in range(len(p.names)):
        yield ('%s["%s", "' % (", " if i else "", p.names[i])).encode()
        yield hexlify(p.rates[i])
        yield b'"]'
    yield b"]}"


def commit(pump):
    """Save the change a command left in pump.pending (cmd.commit); then write what only a saved
    change may: its history records and events. Raises if the save fails (the caller puts the
    change back)."""
    undo, p, s, after = pump.pending
    if pump.storage is not None:
        gc.collect()  # drop the command's garbage first: the save needs the room
        if p:  # the profiles file
            pump.storage.write_atomic(PROFILES, profiles(pump))
        if s:  # the settings file
            gc.collect()
            pump.storage.write_atomic(FILE, settings(pump))
    pump.pending = None
    for a in after:
        if len(a) == 3:
            pump.record(a[0], a[1], a[2])
        else:
            pump.emit(a[0], a[1])
