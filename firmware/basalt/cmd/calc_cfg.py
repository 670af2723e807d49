# Bolus calculator settings: carb ratio, sensitivity and target schedules; insulin action.
from array import array

from basalt.cmd import arg, check_int, commit, only, opt
from basalt.core import Refused

DEFAULTS = {"dia_min": 300, "peak_min": 75}  # OpenAPS exponential-curve defaults (rapid-acting)


MAX_ENTRIES = 24  # per schedule; commercial pumps allow 8-16 carb ratio / sensitivity / target times


def sched(v, name, width, lo, hi):
    """Flat [start_min, value(s), start_min, value(s), ...] (width values per entry), starting at
    0, ascending on 30-minute boundaries. Flat for the heap's sake, as basal segments."""
    step = width + 1
    if type(v) is not list or not step <= len(v) <= MAX_ENTRIES * step or len(v) % step:
        raise Refused("bad_arg", "%s must be a flat list of 1..%d entries of start_min%s"
                      % (name, MAX_ENTRIES, ", value" * width))
    prev = -1
    for j in range(0, len(v), step):
        s = check_int(v[j], name + " start", 0, 1410)
        if s % 30 or s <= prev or (prev < 0 and s != 0):
            raise Refused("range", name + " starts must be 0, then ascending on 30-minute boundaries")
        for x in v[j + 1:j + step]:
            check_int(x, name, lo, hi)
        prev = s
    return v


def calc_set(pump, args):
    """{cr: [start, tenths of g per U, ...], isf: [start, mg/dL per U, ...], target: [start, lo,
    hi, ...], dia_min: 180..480, peak_min: 35..120}. The first set-up needs cr, isf and target;
    after that any subset updates just those (so 48-entry schedules fit one frame each)."""
    only(args, "cr", "isf", "target", "dia_min", "peak_min")
    old = pump.calc
    cur = old or {"dia_min": DEFAULTS["dia_min"], "peak_min": DEFAULTS["peak_min"]}
    if old is None:
        for k in ("cr", "isf", "target"):
            arg(args, k)  # refuses with "missing argument"
    cr = sched(args["cr"], "cr", 1, 10, 1500) if "cr" in args else cur["cr"]  # 1.0 .. 150.0 g/U
    isf = sched(args["isf"], "isf", 1, 5, 500) if "isf" in args else cur["isf"]
    target = sched(args["target"], "target", 2, 70, 250) if "target" in args else cur["target"]
    for j in range(0, len(target), 3):
        if target[j + 1] > target[j + 2]:
            raise Refused("range", "target low must not exceed high")
    dia = check_int(opt(args, "dia_min", cur["dia_min"]), "dia_min", 180, 480)
    peak = check_int(opt(args, "peak_min", cur["peak_min"]), "peak_min", 35, 120)
    if 2 * peak >= dia:
        raise Refused("range", "peak_min must be less than half of dia_min")
    # Kept as arrays: three 48-entry schedules as lists would hold ~3.5 KB of the heap, as arrays ~0.9 KB.
    pump.calc = {"cr": array("H", cr), "isf": array("H", isf), "target": array("H", target),
                 "dia_min": dia, "peak_min": peak}
    if hasattr(pump, "profiles"):  # not when settings.load validates stored values
        commit(pump, ((pump, "calc", old),))
    return {"dia_min": dia, "peak_min": peak, "entries": [len(cr) // 2, len(isf) // 2, len(target) // 3]}

def calc_get(pump, args):
    """{} -> dia_min, peak_min and the entry count of each schedule; {schedule: cr|isf|target} ->
    that schedule (flat). One schedule per reply keeps replies small for a 64 KB heap."""
    only(args, "schedule")
    c = pump.calc
    if c is None:
        raise Refused("state", "the bolus calculator is not set up (calc_set)")
    which = opt(args, "schedule", None)
    if which is None:
        return {"dia_min": c["dia_min"], "peak_min": c["peak_min"],
                "entries": [len(c["cr"]) // 2, len(c["isf"]) // 2, len(c["target"]) // 3]}
    if which not in ("cr", "isf", "target"):
        raise Refused("bad_arg", "schedule is cr, isf or target")
    a = c[which]
    out = [0] * len(a)  # one block of the final size (list() would grow it through larger copies)
    for i in range(len(a)):
        out[i] = a[i]
    return {"schedule": which, which: out}
