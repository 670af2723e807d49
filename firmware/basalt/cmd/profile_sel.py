# Basal profiles: select the active one, delete one (reading is profile.py, editing basal.py).
from ..core.errors import Refused
from ..core.history import PROFILE_SELECT
from . import _guard, _save
from ._prof import max_rate, profile_index
from ._util import only


def profile_select(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    p = pump.profiles
    _guard.check(pump, basal_muh=_guard.bound_with(pump, max_rate(p, i)))
    old = p.active
    p.active = i

    def undo():
        p.active = old
    _save.commit(pump, undo)
    pump.record(PROFILE_SELECT, i)
    pump.emit("basal", {"profile": p.names[i], "active": True})
    return {"active": p.names[i]}


def profile_delete(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
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
    _save.commit(pump, undo, profiles=True)
    return {"profiles": list(p.names)}
