# Basal profile editing: create or replace a named 24 h profile (and basal_set, which edits the
# active one). Segments start on 30-minute boundaries; rates are mU/h up to max_basal_mUh.
from array import array

from ..core.errors import Refused
from ..core.history import PROFILE_SET
from ..core.profiles import MAX_PROFILES, SLOTS
from . import _save
from ._util import arg, check_int, daily_steps, find_profile, name_arg, only, segments


def _parse(pump, segments):
    """[[start_min, rate_mUh], ...] on 30-minute boundaries -> array of 48 slot rates."""
    if type(segments) is not list or not 1 <= len(segments) <= SLOTS:
        raise Refused("bad_arg", "segments must be a list of 1..48 [start_min, rate_mUh]")
    max_basal = pump.limits.max_basal_mUh
    starts = []
    for seg in segments:
        if type(seg) is not list or len(seg) != 2:
            raise Refused("bad_arg", "each segment is [start_min, rate_mUh]")
        start = check_int(seg[0], "segment start", 0, 1410)
        rate = check_int(seg[1], "basal rate", 0, 30000)
        if start % 30:
            raise Refused("range", "segment start %d is not on a 30-minute boundary" % start)
        if (starts and start <= starts[-1]) or (not starts and start != 0):
            raise Refused("range", "segments start at 0 and ascend")
        if rate > max_basal:
            from . import _guard

            _guard.refuse(pump, 4, rate, "rate %d mU/h is above the max basal of %d mU/h" % (rate, max_basal))
        starts.append(start)
    rates = array("H", bytes(2 * SLOTS))
    for i in range(len(segments)):
        end = starts[i + 1] if i + 1 < len(starts) else 1440
        for s in range(starts[i] // 30, end // 30):
            rates[s] = segments[i][1]
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
    _save.commit(pump, undo)
    pump.record(PROFILE_SET, i, daily_steps(pump, rates))
    pump.emit("basal", {"profile": name, "segments": segments(p, i)})
    return {"name": name, "segments": segments(p, i)}


def basal_set(pump, args):
    only(args, "segments")
    p = pump.profiles
    return profile_set(pump, {"name": p.names[p.active], "segments": arg(args, "segments")})
