# The bolus calculator: a suggestion only - it never delivers.
#   suggestion = carbs / carb ratio + (BG - target) / sensitivity - insulin on board
# Carb ratio, sensitivity and the target range follow time-of-day schedules. The correction
# aims at the top of the range when BG is above it and the bottom when below (negative), and
# is 0 inside it. Insulin on board counts boluses (as pump bolus wizards do) through the
# exponential insulin action curve OpenAPS uses, with configurable duration and peak. The
# result is never negative, never above max_bolus_mU, never takes insulin on board above
# max_iob_mU, and is rounded down to the bolus increment. Arithmetic is in micro-units; only
# the action curve itself is evaluated in floating point.
import math

from basalt.cmd import check_int, int_arg, only, opt
from basalt.core import Refused


def at(sched, minute, step):
    """Offset of the entry in force at minute in a flat schedule of `step`-wide entries."""
    cur = 0
    for j in range(0, len(sched), step):
        if sched[j] > minute:
            break
        cur = j
    return cur


def remaining(t, td, tp):
    """Fraction of a bolus still active t minutes after it (OpenAPS exponential curve)."""
    if t <= 0:
        return 1.0
    if t >= td:
        return 0.0
    tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
    a = 2 * tau / td
    s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
    return 1 - s * (1 - a) * ((t * t / (tau * td * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1)


def iob_uu(pump):
    """Bolus insulin on board in micro-units. Each 5-minute bucket counts from its start, so the
    estimate errs high (a smaller suggestion)."""
    c = pump.calc
    td, tp = c["dia_min"], c["peak_min"]
    u = pump.mech.uu_per_step
    total = 0
    w = pump.win
    for k in range(td // 5 + 1):
        steps = w.bolus5[(w.minute // 5 - k) % len(w.bolus5)]  # the 5-minute bucket k buckets ago
        if steps:
            total += int(steps * u * remaining(k * 5, td, tp))
    return total


def bolus_calc(pump, args):
    """{carbs_g: 0..300, bg_mgdl: 40..600 (optional)} -> the suggestion and its breakdown."""
    only(args, "carbs_g", "bg_mgdl")
    c = pump.calc
    if c is None:
        raise Refused("state", "the bolus calculator is not set up (calc_set)")
    carbs = int_arg(args, "carbs_g", 0, 300)
    bg = check_int(opt(args, "bg_mgdl", 0), "bg_mgdl", 0, 600)
    if bg and bg < 40:
        raise Refused("range", "bg_mgdl must be 40..600 (or omitted)")
    minute = pump.minute_of_day()
    cr = c["cr"][at(c["cr"], minute, 2) + 1]
    isf = c["isf"][at(c["isf"], minute, 2) + 1]
    j = at(c["target"], minute, 3)
    t = c["target"][j:j + 3]
    carb_uu = carbs * 10_000_000 // cr  # carbs / (cr/10 g per U), in uU
    corr_uu = 0
    if bg and bg > t[2]:
        corr_uu = (bg - t[2]) * 1_000_000 // isf
    elif bg and bg < t[1]:
        corr_uu = -((t[1] - bg) * 1_000_000 // isf)
    iob = iob_uu(pump)
    raw = carb_uu + corr_uu - iob
    lim = pump.limits
    capped = []
    sugg = raw if raw > 0 else 0
    if sugg > lim.max_bolus_mU * 1000:
        sugg = lim.max_bolus_mU * 1000
        capped.append("max_bolus_mU")
    room = lim.max_iob_mU * 1000 - iob
    if sugg > room:
        sugg = room if room > 0 else 0
        capped.append("max_iob_mU")
    inc = lim.bolus_increment_mU
    mu = sugg // 1000 // inc * inc
    return {"suggested_mU": mu, "carbs_mU": carb_uu // 1000, "correction_mU": _div(corr_uu),
            "iob_mU": iob // 1000, "raw_mU": _div(raw), "capped_by": capped,
            "carb_ratio_g_per_U_x10": cr, "isf_mgdl_per_U": isf, "target_mgdl": [t[1], t[2]],
            "increment_mU": inc, "delivers": False}


def _div(uu):
    return uu // 1000 if uu >= 0 else -((-uu) // 1000)


