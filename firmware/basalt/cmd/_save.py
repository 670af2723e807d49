# Persist the settings (profiles, limits, calculator, clock) whole and atomically, through the
# storage HAL's write-new/verify/rename. The document is JSON written in chunks, so no single
# large string has to fit the heap; rate tables and schedules go as the hex of their uint16
# arrays (little-endian, as on every target), not as lists of numbers. Imported at the top of
# every overlay that changes settings, so a failed import refuses the command before anything
# has changed.
import gc
import json
from binascii import hexlify

from ..core.errors import Refused

FILE = "settings.json"  # active profile, limits, calculator, clock
PROFILES = "profiles.json"  # the rate tables: rewritten only when a profile changes


def _settings(pump):
    yield ('{"v": 1, "active": %d, "clock_offset_s": %d, "limits": ' % (pump.profiles.active, pump.clock_offset_s)).encode()
    yield json.dumps(pump.limits.to_dict()).encode()
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
    yield b"}"


def _profiles(pump):
    p = pump.profiles
    yield b'{"v": 1, "profiles": ['
    for i in range(len(p.names)):
        yield ('%s["%s", "' % (", " if i else "", p.names[i])).encode()
        yield hexlify(p.rates[i])
        yield b'"]'
    yield b"]}"


def save(pump, profiles=False, settings=True):
    if pump.storage is not None:
        gc.collect()  # drop the command's parsing garbage first: the save needs the room
        if profiles:
            pump.storage.write_atomic(PROFILES, _profiles(pump))
        if settings:
            gc.collect()
            pump.storage.write_atomic(FILE, _settings(pump))


def commit(pump, undo, profiles=False, settings=True):
    """Save the change just made in memory; if it cannot be saved, undo it and refuse. (A
    failure between the two files leaves the profiles file newer than the settings file; both
    are valid alone, and the next successful save makes them agree.)"""
    try:
        save(pump, profiles, settings)
    except Exception as e:  # noqa: BLE001 - storage full, flash error, out of memory: all the same
        undo()
        raise Refused("storage", "settings could not be saved (%s); nothing was changed" % type(e).__name__)
