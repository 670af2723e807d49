# Command handlers, one module per group, loaded as overlays (basalt/lib/__init__.py). Each
# handler is f(pump, args) -> reply data, and refuses with core.Refused, having validated
# everything before it changes anything.
#
# This package module holds the helpers every command uses - checking arguments, saving a
# change - and is loaded and dropped with the overlays (a module of their own would cost a
# module object and three interned names). _prof holds the basal profile helpers; the limit guard
# (_guard) is an overlay of its own, run through overlay.run; the settings save (basalt/lib/save.py)
# runs after the command, with the command's code dropped (commit below).
from basalt.core import Refused


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
def commit(pump, undo, profiles=False, settings=True, after=()):
    """Leave the change just made in memory to be saved once this command's code is dropped
    (proto/server.py command(), lib/save.py). undo: ((object, attribute name | dict key | index |
    None for the object's contents, old value), ...), put back if the save fails; after: what only
    a saved change may write - history records (type, a, b) and events (name, data). Nothing here
    may refer to the command's module: it is dropped before the save, so the save has that heap."""
    pump.pending = (undo, profiles, settings, after)
