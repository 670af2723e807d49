# The reservoir change workflow (suspend and resume are state.py's):
#   suspend -> rewind -> reservoir_insert {mU} -> prime_start ... prime_stop (repeatable)
#   -> cannula_fill {mU, default 300} -> resume
# Delivery is impossible until the workflow completes. Priming and cannula fill are counted
# apart from therapy (prime_steps), never as basal or bolus.
from micropython import const

from basalt.cmd import check_int, only, opt
from basalt.core import Refused

_PRIME_MAX_STEPS = const(6000)  # 30 U: the longest prime (cmd/service.py stops it there)
_CANNULA_FILL_MU = const(300)  # 0.3 U, the soft-cannula fill volume of common infusion sets
_RESERVOIR = const(14)  # history record type (core/history.py)


def rewind(pump, args):
    only(args)
    need_suspended(pump, "rewinding")
    if pump.res_state in ("rewinding", "priming", "filling"):
        raise Refused("state", "the motor is busy (%s)" % pump.res_state)
    pump.res_state = "rewinding"
    pump.prime_run = 0
    pump.reservoir_steps = 0  # the old reservoir is coming out
    pump.emit("reservoir", {"state": "rewinding", "plunger_steps": pump.plunger_steps})
    return {"state": "rewinding", "plunger_steps": pump.plunger_steps}


def reservoir_insert(pump, args):
    only(args, "mU")
    if pump.res_state != "rewound":
        raise Refused("state", "rewind before inserting a reservoir (now: %s)" % pump.res_state)
    m = pump.mech
    mu = check_int(opt(args, "mU", -1), "mU", 1000, m.mu_from_steps(m.capacity_steps))
    steps = m.steps_from_mu(mu, "reservoir")
    pump.reservoir_steps = steps
    pump.res_state = "inserted"
    pump.record(_RESERVOIR, steps)
    pump.emit("reservoir", {"state": "inserted", "reservoir_mU": mu})
    return {"state": "inserted", "reservoir_mU": mu, "reservoir_steps": steps}


def prime_start(pump, args):
    only(args)
    if pump.res_state not in ("inserted", "primed"):
        raise Refused("state", "insert a reservoir before priming (now: %s)" % pump.res_state)
    pump.res_state = "priming"
    pump.prime_run = 0
    pump.emit("reservoir", {"state": "priming"})
    return {"state": "priming", "max_mU": pump.mech.mu_from_steps(_PRIME_MAX_STEPS)}


def prime_stop(pump, args):
    only(args)
    if pump.res_state != "priming":
        raise Refused("state", "not priming")
    from basalt.cmd.service import prime_stop as stop

    return stop(pump)


def cannula_fill(pump, args):
    """{mU: 0..1000, default 300}; 0 for a steel cannula that needs no fill."""
    only(args, "mU")
    if pump.res_state != "primed":
        raise Refused("state", "prime the tubing before filling the cannula (now: %s)" % pump.res_state)
    mu = check_int(opt(args, "mU", _CANNULA_FILL_MU), "mU", 0, 1000)
    steps = pump.mech.steps_from_mu(mu, "cannula fill")
    if steps > pump.reservoir_steps:
        raise Refused("reservoir", "not enough insulin left to fill the cannula")
    pump.fill_target = steps
    pump.prime_run = 0
    pump.res_state = "filling" if steps else "ready"
    if not steps:
        ready(pump)
    pump.emit("reservoir", {"state": pump.res_state, "cannula_mU": mu})
    return {"state": pump.res_state, "cannula_mU": mu}


def ready(pump):
    """A new reservoir is in place: the alarms about the old one end."""
    for c in (1, 6, 10):
        pump.clear_alarm(c)


def need_suspended(pump, what):
    if pump.state != "suspended":
        raise Refused("state", "suspend before " + what)
