# Basal profiles: list, read, select, delete (editing is basal.py).
from ..core.errors import Refused
from ..core.history import PROFILE_SELECT
from . import _guard, _save
from ._util import daily_steps, find_profile, max_rate, name_arg, only, segments


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


def profile_select(pump, args):
    only(args, "name")
    i = _profile(pump, args)
    p = pump.profiles
    _guard.check(pump, basal_muh=_guard.bound_with(pump, max_rate(p, i)))
    old = p.active
    p.active = i

    def undo():
        p.active = old
    _save.commit(pump, undo)
    pump.record(PROFILE_SELECT, i)
    pump.emit("basal", {"profile": p.names[i], "segments": segments(p, i)})
    return {"active": p.names[i]}


def profile_delete(pump, args):
    only(args, "name")
    i = _profile(pump, args)
    p = pump.profiles
    if i == p.active:
        raise Refused("state", "the active profile cannot be deleted")
    name, rates, active = p.names.pop(i), p.rates.pop(i), p.active
    if p.active > i:
        p.active -= 1

    def undo():
        p.names.insert(i, name)
        p.rates.insert(i, rates)
        p.active = active
    _save.commit(pump, undo)
    return {"profiles": list(p.names)}


def basal_get(pump, args):
    """The active profile (the foundation's one-schedule command)."""
    only(args)
    p = pump.profiles
    return {"profile": p.names[p.active], "segments": segments(p, p.active), "basal_mUh": pump.basal_rate()}
