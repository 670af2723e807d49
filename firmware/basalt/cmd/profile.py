# Basal profiles: list, read (selecting and deleting is profile_sel.py, editing basal.py).
from basalt.cmd import only
from basalt.cmd._prof import daily_steps, profile_index, segments


def profile_list(pump, args):
    only(args)
    p = pump.profiles
    return {"profiles": [{"name": p.names[i], "daily_mU": pump.mech.mu_from_steps(daily_steps(pump, p.rates[i]))}
                         for i in range(len(p.names))], "active": p.names[p.active]}


def profile_get(pump, args):
    only(args, "name")
    i = profile_index(pump, args)
    return {"name": pump.profiles.names[i], "segments": segments(pump.profiles, i),
            "active": i == pump.profiles.active}


def basal_get(pump, args):
    """The active profile (the foundation's one-schedule command)."""
    only(args)
    p = pump.profiles
    return {"profile": p.names[p.active], "segments": segments(p, p.active), "basal_mUh": pump.basal_rate()}
