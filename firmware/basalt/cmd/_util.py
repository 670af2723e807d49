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


def name_arg(args, key="name"):
    n = arg(args, key)
    if type(n) is not str or not 1 <= len(n) <= 16:
        raise Refused("bad_arg", key + " must be a string of 1..16 characters")
    for c in n:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            raise Refused("bad_arg", key + " may hold letters, digits, _ and - only")
    return n


def int_arg(args, key, lo, hi):
    return check_int(arg(args, key), key, lo, hi)


def need_suspended(pump, what):
    if pump.state != "suspended":
        raise Refused("state", "suspend before " + what)


def daily_steps(pump, rates):
    return pump.mech.steps_floor(sum(rates) // 2)  # each slot is half an hour


def max_rate(profiles, i=-1):
    return max(profiles.rates[profiles.active if i < 0 else i])


def find_profile(profiles, name):
    for i in range(len(profiles.names)):
        if profiles.names[i] == name:
            return i
    return -1


def segments(profiles, i):
    """A profile's 48 slot rates as [[start_min, rate_mUh], ...] segments."""
    r = profiles.rates[i]
    out = []
    for s in range(len(r)):
        if s == 0 or r[s] != r[s - 1]:
            out.append([s * 30, r[s]])
    return out
