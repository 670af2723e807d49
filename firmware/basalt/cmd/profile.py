# Basal profiles: list, read, select, delete (editing is basal.py).
from ..core.errors import Refused
from ._prof import daily_steps, find_profile, name_arg, segments
from ._util import only


def _profile(pump, args):
    i = find_profile(pump.profiles, name_arg(args))
    if i < 0:
        raise Refused("range", "no profile named " + args["name"])
    return i


def profile_list(pump, args):
    only(args)
    p = pump.profiles
    return {"profiles": [{"name": p.names[i], "daily_mU": pump.mech.mu_from_steps(daily_steps(pump, p.rates[i]))}
                         for i in range(len(p.names))], "active": p.names[p.active]}


def profile_get(pump, args):
    only(args, "name")
    i = _profile(pump, args)
    return {"name": pump.profiles.names[i], "segments": segments(pump.profiles, i),
            "active": i == pump.profiles.active}


def basal_get(pump, args):
    """The active profile (the foundation's one-schedule command)."""
    only(args)
    p = pump.profiles
    return {"profile": p.names[p.active], "segments": segments(p, p.active), "basal_mUh": pump.basal_rate()}
