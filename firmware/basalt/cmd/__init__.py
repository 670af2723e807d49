# Command handlers, one module per group, loaded as overlays (basalt/lib/__init__.py). Each
# handler is f(pump, args) -> reply data, and refuses with core.Refused, having validated
# everything before it changes anything.
#
# This package module holds the helpers every command uses - checking arguments, saving a
# change - and is loaded and dropped with the overlays (a module of their own would cost a
# module object and three interned names). _prof holds the basal profile helpers; the big
# helpers are overlays of their own, run one at a time through overlay.run: _guard (the limit
# guard) and _save (the settings files).
from .. import lib as overlay
from ..core import Refused

# The settings files (written by _save.py, read back at boot by settings.py)
FILE = "settings.json"  # active profile, limits, calculator, clock
PROFILES = "profiles.json"  # the rate tables: rewritten only when a profile changes


# ---- arguments --------------------------------------------------------------------------
def check_int(value, name, lo, hi):
    """Return value if it is a plain int in [lo, hi]; else refuse. bool is not an int here."""
    if type(value) is not int:
        raise Refused("bad_arg", name + " must be an integer")
    if value < lo or value > hi:
        raise Refused("range", "%s must be %d..%d, got %d" % (name, lo, hi, value))
    return value


def arg(args, key):
    if key not in args:
        raise Refused("bad_arg", "missing argument " + key)
    return args[key]


def opt(args, key, default):
    return args[key] if key in args else default


def only(args, *keys):
    for k in args:
        if k not in keys:
            raise Refused("bad_arg", "unknown argument " + str(k))


def int_arg(args, key, lo, hi):
    return check_int(arg(args, key), key, lo, hi)


# ---- saving a change --------------------------------------------------------------------
def commit(pump, undo, profiles=False, settings=True):
    """Save the change just made in memory (cmd/_save.py); if it cannot be saved - the save
    overlay does not load, storage full, flash error, out of memory: all the same - undo it and
    refuse. (A failure between the two files leaves the profiles file newer than the settings
    file; both are valid alone, and the next successful save makes them agree.)"""
    try:
        overlay.run("_save", "save", pump, profiles, settings)
    except Exception as e:  # noqa: BLE001
        undo()
        raise Refused("storage", "settings could not be saved (%s); nothing was changed" % type(e).__name__)
