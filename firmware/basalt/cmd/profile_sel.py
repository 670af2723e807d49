# Basal profiles: select the active one, delete one (reading is profile.py, editing basal.py).
from micropython import const

from basalt import lib as overlay
from basalt.cmd import commit, only
from basalt.cmd._prof import profile_index
from basalt.core import Refused

_PROFILE_SELECT = const(1)  # history record type (core/history.py)


def profile_select(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    p = pump.profiles
    overlay.run("_guard", "check", pump, peak=max(p.rates[i]))
    undo = ((p, "active", p.active),)
    p.active = i
    commit(pump, undo, after=((_PROFILE_SELECT, i, 0), ("basal", {"profile": p.names[i], "active": True})))
    return {"active": p.names[i]}


def profile_delete(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    p = pump.profiles
    if i == p.active:
        raise Refused("state", "the active profile cannot be deleted")
    undo = ((p.names, None, list(p.names)), (p.rates, None, list(p.rates)), (p, "active", p.active))
    p.names.pop(i)
    p.rates.append(p.rates.pop(i))  # its array becomes the spare one (core.Profiles keeps all of them)
    if p.active > i:
        p.active -= 1
    commit(pump, undo, profiles=True)
    return {"profiles": list(p.names)}
