# Argument helpers shared by the command overlays.
from ..core.errors import Refused


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
