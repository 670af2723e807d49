# Bolus commands: normal (now, at the configured speed), extended (square wave over 30 min to
# 8 h) and combo (a normal part now and an extended part); cancelling is therapy.py's. One normal and one
# extended bolus can run at a time; a second of the same kind is refused (they never queue).
from micropython import const

from basalt import lib as overlay
from basalt.cmd import check_int, only, opt
from basalt.core import Refused
from basalt.core.pump import REASONS

_BOLUS_REQUEST = const(5)  # history record type (core/history.py)


def bolus(pump, args):
    """{mU} normal; {ext_mU, minutes} extended; {mU, ext_mU, minutes} combo."""
    only(args, "mU", "ext_mU", "minutes")
    lim = pump.limits
    now = check_int(opt(args, "mU", 0), "mU", 0, 1 << 30)
    ext = check_int(opt(args, "ext_mU", 0), "ext_mU", 0, 1 << 30)
    minutes = 0
    if ext or "minutes" in args:
        minutes = check_int(opt(args, "minutes", -1), "minutes", 30, 480)
        if minutes % 15:
            raise Refused("range", "minutes must be a multiple of 15")
        if not ext:
            raise Refused("range", "an extended bolus needs ext_mU > 0")
    total = now + ext
    if total == 0:
        raise Refused("range", "bolus must be more than 0 mU")
    if total > lim.max_bolus_mU:
        overlay.run("_guard", "refuse", pump, 3, total, "%d mU exceeds the max bolus of %d mU" % (total, lim.max_bolus_mU))
    inc = lim.bolus_increment_mU
    if now % inc or ext % inc:
        raise Refused("range", "bolus amounts must be multiples of %d mU" % inc)
    m = pump.mech
    now_s = m.steps_from_mu(now, "bolus")
    ext_s = m.steps_from_mu(ext, "bolus")
    if pump.state != "running":
        raise Refused("state", "pump is suspended (%s)" % REASONS[pump.reason])
    if now and pump.nb_req:
        raise Refused("busy", "a normal bolus is already running; cancel it first")
    if ext and pump.xb_req:
        raise Refused("busy", "an extended bolus is already running; cancel it first")
    owed = (pump.nb_req - pump.nb_done) + (pump.xb_req - pump.xb_done) + pump.delivery.in_flight()
    if now_s + ext_s > pump.reservoir_steps - owed:
        raise Refused("reservoir", "bolus does not fit in the reservoir")
    overlay.run("_guard", "check", pump, now_s, ext_s, minutes * 60)
    pump.bolus_id += 1
    if now_s:
        pump.nb_req, pump.nb_done, pump.nb_id = now_s, 0, pump.bolus_id
    if ext_s:
        pump.xb_req, pump.xb_done, pump.xb_id = ext_s, 0, pump.bolus_id
        pump.xb_dur, pump.xb_start = minutes * 60, pump.uptime_s
    pump.record(_BOLUS_REQUEST, now_s, ext_s)
    normal = pump.bolus_info(1, "started") if now_s else None
    extended = pump.bolus_info(2, "started") if ext_s else None
    for info in (normal, extended):
        if info:
            pump.emit("bolus", info)
    if not ext_s:
        return normal
    return {"id": pump.bolus_id, "phase": "started", "kind": "combo" if now_s else "extended",
            "normal": normal, "extended": extended}
