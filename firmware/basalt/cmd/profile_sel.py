# Basal profiles: select the active one, delete one (reading is profile.py, editing basal.py).
from micropython import const

from .. import lib as overlay
from ..core import Refused
from . import commit, only
from ._prof import profile_index

_PROFILE_SELECT = const(1)  # history record type (core/history.py)


def profile_select(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    p = pump.profiles
    overlay.run("_guard", "check", pump, peak=max(p.rates[i]))
    old = p.active
    p.active = i

    def undo():
        p.active = old
    commit(pump, undo)
    pump.record(_PROFILE_SELECT, i)
    pump.emit("basal", {"profile": p.names[i], "active": True})
    return {"active": p.names[i]}


def profile_delete(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    p = pump.profiles
    if i == p.active:
        raise Refused("state", "the active profile cannot be deleted")
    name, rates, active = p.names.pop(i), p.rates.pop(i), p.active
    p.rates.append(rates)  # its array becomes the spare one (core.Profiles keeps all of them)
    if p.active > i:
        p.active -= 1

    def undo():
        p.names.insert(i, name)
        p.rates.insert(i, p.rates.pop())
        p.active = active
    commit(pump, undo, profiles=True)
    return {"profiles": list(p.names)}
