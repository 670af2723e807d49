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
from ._prof import max_rate

LIMIT_CODES = ("", "max_hour_mU", "max_day_mU", "max_bolus_mU", "max_basal_mUh", "max_iob_mU")


def refuse(pump, code, amount, msg):
    """Record the refusal (history: a = limit code, b = the amount asked, in mU or mU/h) and refuse."""
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
    for code, buckets, n, bucket_s, cap in ((1, w.hour, 61, 60, cap_h), (2, w.day, 97, 900, cap_d)):
        worst = past = 0
        now = w.minute * 60 // bucket_s  # index of the current bucket
        for j in range(n):  # the last j buckets (and the current one) + the next n-1-j
            past += buckets[(now - j) % n]
            k = n - 1 - j
            fut = normal_rem + _ceil(basal_muh * 1000 * k * bucket_s, u * 3600)
            if ext_rem:
                e = _ceil(ext_total * k * bucket_s, ext_dur)
                fut += e if e < ext_rem else ext_rem
            if past + fut > worst:
                worst = past + fut
        if worst > cap:
            refuse(pump, code, pump.mech.mu_from_steps(worst), "could deliver %d mU in %s, above the limit of %d mU"
                   % (pump.mech.mu_from_steps(worst), "an hour" if code == 1 else "24 hours",
                      pump.limits.max_hour_mU if code == 1 else pump.limits.max_day_mU))


def bound_with(pump, new_max):
    """The basal bound if the active profile's highest rate became new_max."""
    b = new_max
    if pump.tb_end:
        t = pump.tb_rate if pump.tb_pct < 0 else (new_max * pump.tb_pct + 99) // 100
        if t > b:
            b = t
    return b
