# Persist the settings (profiles, limits, calculator, clock) whole and atomically, through the
# storage HAL's write-new/verify/rename. The document is written in chunks, so no single large
# string has to fit the heap. Imported at the top of every overlay that changes settings, so a
# failed import refuses the command before anything has changed.
import gc
import json

from ..core.errors import Refused

FILE = "settings.json"


def _chunks(pump):
    p = pump.profiles
    yield ('{"v": 1, "active": %d, "clock_offset_s": %d, "limits": ' % (p.active, pump.clock_offset_s)).encode()
    yield json.dumps(pump.limits.to_dict()).encode()
    yield b', "calc": '
    yield json.dumps(pump.calc).encode()
    yield b', "profiles": ['
    for i in range(len(p.names)):
        yield ((", " if i else "") + json.dumps([p.names[i], list(p.rates[i])])).encode()
    yield b"]}"


def save(pump):
    if pump.storage is not None:
        gc.collect()  # drop the command's parsing garbage first: the save needs the room
        pump.storage.write_atomic(FILE, _chunks(pump))


def commit(pump, undo):
    """Save the change just made in memory; if it cannot be saved, undo it and refuse."""
    try:
        save(pump)
    except Exception as e:  # noqa: BLE001 - storage full, flash error, out of memory: all the same
        undo()
        raise Refused("storage", "settings could not be saved (%s); nothing was changed" % type(e).__name__)
