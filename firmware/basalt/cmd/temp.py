# Temporary basal rates.
from micropython import const

from basalt import lib as overlay
from basalt.cmd import int_arg, only
from basalt.core import Refused

_TEMP_START = const(3)  # history record type (core/history.py)


def temp_basal(pump, args):
    """{percent: 0..250} or {rate_mUh: 0..max basal}, with minutes 15..1440 in 15-minute steps.
    A percentage follows the profile across segment boundaries. A new temp basal replaces a
    running one (the old one is recorded as cancelled)."""
    only(args, "percent", "rate_mUh", "minutes")
    minutes = int_arg(args, "minutes", 15, 1440)
    if minutes % 15:
        raise Refused("range", "minutes must be a multiple of 15")
    if ("percent" in args) == ("rate_mUh" in args):
        raise Refused("bad_arg", "give exactly one of percent and rate_mUh")
    if pump.state != "running":
        raise Refused("state", "pump is suspended")
    pct = int_arg(args, "percent", 0, 250) if "percent" in args else -1
    rate = int_arg(args, "rate_mUh", 0, 30000) if pct < 0 else 0
    max_basal = pump.limits.max_basal_mUh
    p = pump.profiles
    eff = rate if pct < 0 else (max(p.rates[p.active]) * pct + 99) // 100
    if eff > max_basal:
        overlay.run("_guard", "refuse", pump, 4, eff, "temp basal reaches %d mU/h, above the max basal of %d mU/h" % (eff, max_basal))
    overlay.run("_guard", "check", pump, pct=pct, rate=rate)
    old = pump.end_temp(2)
    pump.tb_pct, pump.tb_rate, pump.tb_min, pump.tb_steps = pct, rate, minutes, 0
    pump.tb_end = pump.uptime_s + minutes * 60
    pump.record(_TEMP_START, pct, minutes)
    info = {"phase": "started", "percent": pct, "rate_mUh": rate, "minutes": minutes, "replaced": old}
    pump.emit("temp_basal", info)
    return info


def temp_basal_cancel(pump, args):
    only(args)
    info = pump.end_temp(2)
    if info is None:
        raise Refused("state", "no temp basal is running")
    return info
