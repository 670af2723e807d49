# The pump clock and reading the limits.
from micropython import const

from basalt.cmd import arg, check_int, commit, only

_TIME_SET = const(15)  # history record type (core/history.py)


def time_get(pump, args):
    only(args)
    return {"local_s": pump.local_s(), "minute_of_day": pump.minute_of_day(), "uptime_s": pump.uptime_s}


def time_set(pump, args):
    """{local_s: seconds since 2000-01-01 00:00 local time}. Basal is owed per elapsed second
    at the rate of the local-time segment then in force, so a clock change only changes which
    segment applies from the next tick: it never repeats delivery or skips insulin owed."""
    only(args, "local_s")
    new = check_int(arg(args, "local_s"), "local_s", 0, 0x7FFFFFFF)  # history keeps it as int32 (to 2068)
    old = pump.local_s()
    undo = ((pump, "clock_offset_s", pump.clock_offset_s),)
    pump.clock_offset_s = new - pump.uptime_s
    commit(pump, undo, after=((_TIME_SET, new, old), ("time", {"local_s": new, "previous_s": old})))
    return {"local_s": new, "previous_s": old, "minute_of_day": pump.minute_of_day()}


def limits_get(pump, args):
    only(args)
    return dict(pump.limits.__dict__)
