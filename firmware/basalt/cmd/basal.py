# Basal profile editing: create or replace a named 24 h profile (and basal_set, which edits the
# active one). Segments start on 30-minute boundaries; rates are mU/h up to max_basal_mUh.
from array import array

from ..core.errors import Refused
from ..core.history import PROFILE_SET
from ..core.profiles import MAX_PROFILES, SLOTS
from . import _save
from ._prof import daily_steps, find_profile, name_arg
from ._util import arg, check_int, only


def _parse(pump, segments):
    """Flat [start_min, rate_mUh, start_min, rate_mUh, ...] on 30-minute boundaries -> an array of
    48 half-hour slot rates. Flat, not [[start, rate], ...]: 48 nested pairs parse into ~3.8 KB of
    objects, the flat list into ~0.7 KB - the difference between fitting a 64 KB heap or not."""
    if type(segments) is not list or not 2 <= len(segments) <= 2 * SLOTS or len(segments) % 2:
        raise Refused("bad_arg", "segments must be a flat list of 1..48 start_min, rate_mUh pairs")
    max_basal = pump.limits.max_basal_mUh
    prev = -1
    for j in range(0, len(segments), 2):
        start = check_int(segments[j], "segment start", 0, 1410)
        rate = check_int(segments[j + 1], "basal rate", 0, 30000)
        if start % 30:
            raise Refused("range", "segment start %d is not on a 30-minute boundary" % start)
        if start <= prev or (j == 0 and start != 0):
            raise Refused("range", "segments start at 0 and ascend")
        if rate > max_basal:
            from . import _guard

            _guard.refuse(pump, 4, rate, "rate %d mU/h is above the max basal of %d mU/h" % (rate, max_basal))
        prev = start
    rates = array("H", bytes(2 * SLOTS))
    n = len(segments)
    for j in range(0, n, 2):
        end = segments[j + 2] if j + 2 < n else 1440
        for s in range(segments[j] // 30, end // 30):
            rates[s] = segments[j + 1]
    return rates


def profile_set(pump, args):
    """Create or replace a profile. Replacing the active one takes effect at the next tick;
    the basal accumulator's remainder carries over, so nothing is lost or doubled."""
    only(args, "name", "segments")
    name = name_arg(args)
    rates = _parse(pump, arg(args, "segments"))
    p = pump.profiles
    i = find_profile(p, name)
    if i < 0 and len(p.names) >= MAX_PROFILES:
        raise Refused("range", "at most %d profiles" % MAX_PROFILES)
    if i == p.active:  # the limit guard is needed (and loaded) only when the rates in force change
        from . import _guard

        _guard.check(pump, basal_muh=_guard.bound_with(pump, max(rates)))
    if i < 0:
        p.names.append(name)
        p.rates.append(rates)
        i = len(p.names) - 1

        def undo():
            p.names.pop()
            p.rates.pop()
    else:
        old = p.rates[i]
        p.rates[i] = rates

        def undo():
            p.rates[i] = old
    _save.commit(pump, undo, profiles=True, settings=False)
    pump.record(PROFILE_SET, i, daily_steps(pump, rates))
    # No echo of the segments in the reply or the event: 48 of them are ~3.5 KB of objects,
    # which a 64 KB heap cannot spare twice; profile_get reads them back.
    daily = pump.mech.mu_from_steps(daily_steps(pump, rates))
    pump.emit("basal", {"profile": name, "daily_mU": daily})
    return {"name": name, "daily_mU": daily, "active": i == p.active}


def basal_set(pump, args):
    only(args, "segments")
    p = pump.profiles
    return profile_set(pump, {"name": p.names[p.active], "segments": arg(args, "segments")})
