# Basal profile helpers for the profile-related command overlays.
from ..core.errors import Refused
from ._util import arg


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
    """A profile's 48 slot rates as flat segments [start_min, rate_mUh, ...]."""
    r = profiles.rates[i]
    out = []
    for s in range(len(r)):
        if s == 0 or r[s] != r[s - 1]:
            out.append(s * 30)
            out.append(r[s])
    return out


def name_arg(args, key="name"):
    n = arg(args, key)
    if type(n) is not str or not 1 <= len(n) <= 16:
        raise Refused("bad_arg", key + " must be a string of 1..16 characters")
    for c in n:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            raise Refused("bad_arg", key + " may hold letters, digits, _ and - only")
    return n


def profile_index(pump, args):
    """The index of the profile args["name"] names; refuse if there is none."""
    i = find_profile(pump.profiles, name_arg(args))
    if i < 0:
        raise Refused("range", "no profile named " + args["name"])
    return i
