# Bolus calculator settings: carb ratio, sensitivity and target schedules; insulin action.
from ..core.errors import Refused
from . import _save
from ._util import arg, check_int, only, opt

DEFAULTS = {"dia_min": 300, "peak_min": 75}  # OpenAPS exponential-curve defaults (rapid-acting)


def _schedule(v, name, width, lo, hi):
    """[[start_min, value...], ...] starting at 0, ascending, on 30-minute boundaries."""
    if type(v) is not list or not 1 <= len(v) <= 48:
        raise Refused("bad_arg", name + " must be a list of 1..48 entries")
    prev = -1
    for e in v:
        if type(e) is not list or len(e) != width + 1:
            raise Refused("bad_arg", "each %s entry is [start_min%s]" % (name, ", value" * width))
        s = check_int(e[0], name + " start", 0, 1410)
        if s % 30 or s <= prev or (prev < 0 and s != 0):
            raise Refused("range", name + " starts must be 0, then ascending on 30-minute boundaries")
        for x in e[1:]:
            check_int(x, name, lo, hi)
        prev = s
    return v


def calc_set(pump, args):
    """{cr: [[start, tenths of g per U]], isf: [[start, mg/dL per U]], target: [[start, lo, hi]],
    dia_min: 180..480, peak_min: 35..120} - all required but dia/peak."""
    only(args, "cr", "isf", "target", "dia_min", "peak_min")
    cr = _schedule(arg(args, "cr"), "cr", 1, 10, 1500)  # 1.0 .. 150.0 g/U
    isf = _schedule(arg(args, "isf"), "isf", 1, 5, 500)
    target = _schedule(arg(args, "target"), "target", 2, 70, 250)
    for e in target:
        if e[1] > e[2]:
            raise Refused("range", "target low must not exceed high")
    dia = check_int(opt(args, "dia_min", DEFAULTS["dia_min"]), "dia_min", 180, 480)
    peak = check_int(opt(args, "peak_min", DEFAULTS["peak_min"]), "peak_min", 35, 120)
    if 2 * peak >= dia:
        raise Refused("range", "peak_min must be less than half of dia_min")
    old = pump.calc
    pump.calc = {"cr": cr, "isf": isf, "target": target, "dia_min": dia, "peak_min": peak}
    if hasattr(pump, "profiles"):  # not when settings.load validates stored values

        def undo():
            pump.calc = old
        _save.commit(pump, undo)
    return pump.calc


def calc_get(pump, args):
    only(args)
    if pump.calc is None:
        raise Refused("state", "the bolus calculator is not set up (calc_set)")
    return pump.calc
