# Limit guard for commands: refuse anything that could let delivery exceed max_hour_mU or
# max_day_mU in ANY 60-minute or 24-hour window, now or later.
#
# Every window either straddles now or lies in the future. For each split - the last j
# minutes (from the rolling buckets, conservatively including the current minute) plus the
# next k = 60 - j minutes - the future part is bounded by: all of any normal bolus still owed,
# the extended bolus at its own rate, and basal at the highest rate the active profile or
# temp basal can reach - each rounded up to whole steps, which also covers the remainder the
# accumulators carry (floor(carry + x) <= ceil(x) for a carry below one step). If no split can
# exceed the cap, no window can; the per-tick backstop in core/pump.py then never has to act.
from ..core.errors import Refused
from ..core.history import LIMIT_REFUSED
from ._util import max_rate

LIMIT_CODES = ("", "max_hour_mU", "max_day_mU", "max_bolus_mU", "max_basal_mUh", "max_iob_mU")


def refuse(pump, code, amount, msg):
    pump.record(LIMIT_REFUSED, code, amount)
    raise Refused("limit", LIMIT_CODES[code] + ": " + msg)


def basal_bound(pump, profile=-1, pct=-2, rate=0):
    """Highest basal rate (mU/h) possible from now on. pct=-2: the current temp basal (if any);
    pct=-1: an absolute temp at `rate`; pct>=0: a percentage temp."""
    pmax = max_rate(pump.profiles, profile)
    if pct == -2:
        if not pump.tb_end:
            return pmax
        pct, rate = pump.tb_pct, pump.tb_rate
    t = rate if pct < 0 else (pmax * pct + 99) // 100
    return t if t > pmax else pmax


def _ceil(a, b):
    return (a + b - 1) // b


def check(pump, normal=0, ext=0, ext_dur_s=0, basal_muh=-1, caps=None):
    """Raise Refused('limit') unless every window stays within the caps with the change applied.
    normal/ext: new bolus steps; basal_muh: the basal bound after the change (-1: unchanged)."""
    w = pump.win
    u = pump.mech.uu_per_step
    cap_h, cap_d = caps or (pump.cap_hour, pump.cap_day)
    if basal_muh < 0:
        basal_muh = basal_bound(pump)
    normal_rem = pump.nb_req - pump.nb_done + normal
    if ext:
        ext_rem, ext_total, ext_dur = ext, ext, ext_dur_s
    else:
        ext_rem, ext_total, ext_dur = pump.xb_req - pump.xb_done, pump.xb_req, pump.xb_dur or 1
    worst = 0
    past = 0  # the last j minutes, including the current one
    m = w.minute
    for j in range(61):
        past += w.hour[(m - j) % 61]
        k = 60 - j
        fut = normal_rem + _ceil(basal_muh * 1000 * k, u * 60)
        if ext_rem:
            e = _ceil(ext_total * 60 * k, ext_dur)
            fut += e if e < ext_rem else ext_rem
        if past + fut > worst:
            worst = past + fut
    if worst > cap_h:
        refuse(pump, 1, worst, "could deliver %d mU in an hour, above the limit of %d mU"
               % (pump.mech.mu_from_steps(worst), pump.limits.max_hour_mU))
    worst = 0
    past = 0
    q = m // 15
    for j in range(97):
        past += w.day[(q - j) % 97]
        k = 96 - j
        fut = normal_rem + _ceil(basal_muh * 1000 * k, u * 4)
        if ext_rem:
            e = _ceil(ext_total * 900 * k, ext_dur)
            fut += e if e < ext_rem else ext_rem
        if past + fut > worst:
            worst = past + fut
    if worst > cap_d:
        refuse(pump, 2, worst, "could deliver %d mU in 24 hours, above the limit of %d mU"
               % (pump.mech.mu_from_steps(worst), pump.limits.max_day_mU))


def bound_with(pump, new_max):
    """The basal bound if the active profile's highest rate became new_max."""
    b = new_max
    if pump.tb_end:
        t = pump.tb_rate if pump.tb_pct < 0 else (new_max * pump.tb_pct + 99) // 100
        if t > b:
            b = t
    return b
