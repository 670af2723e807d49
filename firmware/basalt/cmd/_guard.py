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
from micropython import const

from basalt.core import Refused

_LIMIT_REFUSED = const(8)  # history record type (core/history.py)
# "limit: " per limit code (history _LIMIT_REFUSED a); a constant, so none of it is interned
_LIMIT_CODES = const(("", "max_hour_mU: ", "max_day_mU: ", "max_bolus_mU: ", "max_basal_mUh: ", "max_iob_mU: "))


def refuse(pump, code, amount, msg):
    """Record the refusal (history: a = limit code, b = the amount asked, in mU or mU/h) and refuse."""
    pump.record(_LIMIT_REFUSED, code, amount)
    raise Refused("limit", _LIMIT_CODES[code] + msg)


def check(pump, normal=0, ext=0, duration_s=0, peak=-1, pct=-2, rate=0, caps=None):
    """Raise Refused('limit') unless every window stays within the caps with the change applied.
    normal/ext: new bolus steps (ext over duration_s); peak: the highest rate (mU/h) of the
    profile in force after the change (-1: the active one's); pct/rate: the temp basal after it
    (pct -2: the current one, if any; -1: an absolute rate; >= 0: a percentage of the profile);
    caps: (hour, day) in steps instead of the pump's."""
    p = pump.profiles
    if peak < 0:
        peak = max(p.rates[p.active])
    if pct == -2:
        pct, rate = (pump.tb_pct, pump.tb_rate) if pump.tb_end else (0, 0)
    t = rate if pct < 0 else -(-peak * pct // 100)  # -(-a // b): a / b rounded up
    if t > peak:
        peak = t  # now the highest basal rate possible from here on
    w = pump.win
    u = pump.mech.uu_per_step
    cap_h, cap_d = caps or (pump.cap_hour, pump.cap_day)
    normal_rem = pump.nb_req - pump.nb_done + normal
    if ext:
        ext_rem, ext_total, ext_dur = ext, ext, duration_s
    else:
        ext_rem, ext_total, ext_dur = pump.xb_req - pump.xb_done, pump.xb_req, pump.xb_dur or 1
    for code, buckets, n, bucket_s, cap in ((1, w.hour, 61, 60, cap_h), (2, w.day, 97, 900, cap_d)):
        worst = past = 0
        now = w.minute * 60 // bucket_s  # index of the current bucket
        for j in range(n):  # the last j buckets (and the current one) + the next n-1-j
            past += buckets[(now - j) % n]
            k = n - 1 - j
            fut = normal_rem - (-peak * 1000 * k * bucket_s // (u * 3600))
            if ext_rem:
                e = -(-ext_total * k * bucket_s // ext_dur)
                fut += e if e < ext_rem else ext_rem
            if past + fut > worst:
                worst = past + fut
        if worst > cap:
            mu = pump.mech.mu_from_steps(worst)
            refuse(pump, code, mu, ("could deliver %d mU in an hour, above the limit of %d mU",
                                    "could deliver %d mU in 24 hours, above the limit of %d mU")[code - 1]
                   % (mu, pump.limits.max_hour_mU if code == 1 else pump.limits.max_day_mU))
