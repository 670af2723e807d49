# Alarms: the reminder (repeats, escalation, the LED of several alarms) run from the tick when
# due, and the host's list, acknowledge and configure commands (docs/alarms.md). Raising and
# latching live in core/pump.py: resident, as a safety path must never depend on an import.
from micropython import const

from basalt.cmd import check_int, commit, only, opt
from basalt.core import Refused
from basalt.core import pump as P

# Alarms whose condition the pump watches (reservoir empty/low/removed, limit hold, battery, the
# CGM's signal, session and sensor, glucose low/high): acknowledging silences them, and they
# clear when the condition ends. The others clear when acknowledged. A bit per alarm code
# (ALARMS in core/pump.py).
_COND = const(0b1111100010111001010)


def remind(pump):
    """Annunciate the most urgent alarm and schedule the next reminder (docs/alarms.md):
    unacknowledged alarms repeat at their priority's interval and escalate when neglected;
    acknowledged high alarms chirp every 15 min while their condition lasts."""
    u = pump.uptime_s
    quiet = pump.remind < 0  # after an acknowledge or a clear: no reminder chirp now
    top = acked = c = 0
    for i in range(1, len(P.ALARMS)):
        if pump.alarm_st[i] == 1 and P.PRIO[i] > top:
            top, c = P.PRIO[i], i
        elif pump.alarm_st[i] == 2 and P.PRIO[i] == 3:
            acked = 1
    if top:
        long = u - pump.alarm_t[c] >= (0, 1800, 900, 300)[top]  # unacknowledged this long: louder
        if top == 3 or long:
            pump.show("alarm", "siren" if top == 3 and long else "alarm")
            a = pump.annunciator
            if a is not None and hasattr(a, "vibrate"):
                a.vibrate("alarm")
        else:
            pump.show("warn", "alert" if top == 2 else "chirp")
        pump.remind = u + (0, 900, 60, 15)[top]  # unacknowledged: sound again after this (s)
    elif acked:
        pump.show("alarm", "off" if quiet else "chirp")  # boards loop a pattern until told "off"
        pump.remind = u + 900
    else:
        pump.show("ok" if pump.state == "running" else "warn", "off")
        pump.remind = 0


def alarms(pump, args):
    only(args)
    out = []
    for c in range(1, len(P.ALARMS)):
        if pump.alarm_st[c]:
            out.append({"alarm": P.ALARMS[c], "priority": P.LEVELS[P.PRIO[c]], "since_s": pump.alarm_t[c],
                        "state": "active" if pump.alarm_st[c] == 1 else "acknowledged"})
    return {"alarms": out, "reservoir_low_mU": pump.res_low_mu, "reservoir_low_h": pump.res_low_h,
            "auto_off_h": pump.auto_off_s // 3600}


def alarm_ack(pump, args):
    """{alarm: name | "all" (default)}: silence sounding alarms. One whose condition persists
    (see COND in core/pump.py) stays active, silent, until the condition ends."""
    only(args, "alarm")
    name = opt(args, "alarm", "all")
    if name != "all" and name not in P.ALARMS[1:]:
        raise Refused("bad_arg", "unknown alarm %r" % (name,))
    n = 0
    for c in range(1, len(P.ALARMS)):
        if pump.alarm_st[c] == 1 and name in ("all", P.ALARMS[c]):
            pump.clear_alarm(c, 1 if _COND >> c & 1 else 2)
            n += 1
    if name != "all" and not n:
        raise Refused("state", "%s is not sounding" % name)
    return {"acknowledged": n}


def alarm_set(pump, args):
    """{reservoir_low_mU: 0..100000, reservoir_low_h: 0..72, auto_off_h: 0..24}: the low-reservoir
    alert fires below the amount, or, when reservoir_low_h is set, below that many hours at the
    current rate; auto-off (0 = off) alarms after that many hours without user action."""
    only(args, "reservoir_low_mU", "reservoir_low_h", "auto_off_h")
    mu = check_int(opt(args, "reservoir_low_mU", pump.res_low_mu), "reservoir_low_mU", 0, 100000)
    h = check_int(opt(args, "reservoir_low_h", pump.res_low_h), "reservoir_low_h", 0, 72)
    off = check_int(opt(args, "auto_off_h", pump.auto_off_s // 3600), "auto_off_h", 0, 24)
    if not mu and not h:
        raise Refused("range", "the low-reservoir alert needs an amount or a number of hours")
    undo = ((pump, "res_low_mu", pump.res_low_mu), (pump, "res_low_h", pump.res_low_h),
            (pump, "auto_off_s", pump.auto_off_s))
    pump.res_low_mu, pump.res_low_h, pump.auto_off_s = mu, h, off * 3600
    commit(pump, undo)
    return alarms(pump, {})
