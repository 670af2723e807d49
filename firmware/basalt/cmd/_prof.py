# Basal profile helpers for the profile command overlays.
from basalt.cmd import arg
from basalt.core import Refused


def daily_steps(pump, rates):
    return pump.mech.steps_floor(sum(rates) // 2)  # each slot is half an hour


def find_profile(profiles, name):
    for i in range(len(profiles.names)):
        if profiles.names[i] == name:
            return i
    return -1


def segments(profiles, i):
    """A profile's 48 slot rates as flat segments [start_min, rate_mUh, ...]."""
    r = profiles.rates[i]
    n = 0
    for s in range(len(r)):
        if s == 0 or r[s] != r[s - 1]:
            n += 2
    out = [0] * n  # one block of the final size: appending would grow it through ever larger copies
    n = 0
    for s in range(len(r)):
        if s == 0 or r[s] != r[s - 1]:
            out[n] = s * 30
            out[n + 1] = r[s]
            n += 2
    return out


def name_arg(args, key="name"):
    n = arg(args, key)
    if type(n) is not str or not 1 <= len(n) <= 16:
        raise Refused("bad_arg", key + " must be a string of 1..16 characters")
    for c in n:
        if not (c.isalpha() or c.isdigit() or c == "_" or c == "-"):
            raise Refused("bad_arg", key + " may hold letters, digits, _ and - only")
    return n


def profile_index(pump, args):
    """The index of the profile args["name"] names; refuse if there is none."""
    i = find_profile(pump.profiles, name_arg(args))
    if i < 0:
        raise Refused("range", "no profile named " + args["name"])
    return i
