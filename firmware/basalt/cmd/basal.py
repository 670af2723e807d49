# Basal profile editing: create or replace a named 24 h profile (and basal_set, which edits the
# active one). Segments start on 30-minute boundaries; rates are mU/h up to max_basal_mUh.
from array import array

from micropython import const

from basalt import lib as overlay
from basalt.cmd import arg, commit, only
from basalt.core import Refused

_PROFILE_SET = const(2)  # history record type (core/history.py)


def profile_set(pump, args):
    """Create or replace a profile. Replacing the active one takes effect at the next tick;
    the basal accumulator's remainder carries over, so nothing is lost or doubled."""
    only(args, "name", "segments")
    name = overlay.run("_prof", "name_arg", args)  # _prof is not held during the save either
    rates = overlay.run("_segs", "parse", pump, arg(args, "segments"))  # run and dropped: not held during the save
    if type(rates) is int:  # a rate above the max basal: refused (and recorded) by the limit guard
        m = pump.limits.max_basal_mUh
        overlay.run("_guard", "refuse", pump, 4, rates, "rate %d mU/h is above the max basal of %d mU/h" % (rates, m))
    del args["segments"]  # the request's ~1 KB list of numbers, parsed: the save below needs the room
    p = pump.profiles
    i = p.names.index(name) if name in p.names else -1
    if i < 0 and len(p.names) >= len(p.rates):  # core.Profiles has an array for each profile there can be
        raise Refused("range", "at most %d profiles" % len(p.rates))
    if i == p.active:  # the limit guard is needed (and loaded) only when the rates in force change
        overlay.run("_guard", "check", pump, peak=max(rates))
    # Written into the profile's array (core.Profiles allocates them all at boot), not swapped
    # for this one: an array made now would stay behind among the command's garbage.
    if i < 0:
        i = len(p.names)
        undo = ((p.names, None, list(p.names)),)  # (copied back into the list: it keeps its room for six)
        p.names.append(name)
    else:
        undo = ((p.rates[i], None, array("H", p.rates[i])),)
    p.rates[i][:] = rates
    steps = pump.mech.steps_floor(sum(rates) // 2)  # the day's total: each slot is half an hour
    # No echo of the segments in the reply or the event: 48 of them are ~3.5 KB of objects,
    # which a 64 KB heap cannot spare twice; profile_get reads them back.
    daily = pump.mech.mu_from_steps(steps)
    commit(pump, undo, profiles=True, settings=False,
           after=((_PROFILE_SET, i, steps), ("basal", {"profile": name, "daily_mU": daily})))
    return {"name": name, "daily_mU": daily, "active": i == p.active}


def basal_set(pump, args):
    only(args, "segments")
    p = pump.profiles
    arg(args, "segments")  # refuses when missing; popped so that profile_set's del frees the list
    return profile_set(pump, {"name": p.names[p.active], "segments": args.pop("segments")})
