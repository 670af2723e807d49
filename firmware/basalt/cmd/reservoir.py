# Suspend/resume and the reservoir change workflow:
#   suspend -> rewind -> reservoir_insert {mU} -> prime_start ... prime_stop (repeatable)
#   -> cannula_fill {mU, default 300} -> resume
# Delivery is impossible until the workflow completes. Priming and cannula fill are counted
# apart from therapy (prime_steps), never as basal or bolus.
from ..core import pump as P
from ..core.errors import Refused
from ..core.history import RESERVOIR, RESUME
from ._util import check_int, only, opt


def suspend(pump, args):
    only(args)
    if pump.state == P.SUSPENDED:
        raise Refused("state", "already suspended (%s)" % P.REASONS[pump.reason])
    return pump.stop_delivery(1)


def resume(pump, args):
    only(args)
    if pump.state == P.RUNNING:
        raise Refused("state", "already running")
    if pump.res_state != P.READY:
        raise Refused("reservoir", "finish the reservoir change first (now: %s)" % pump.res_state)
    if pump.reservoir_steps == 0:
        raise Refused("reservoir", "the reservoir is empty; change it")
    pump.state = P.RUNNING
    pump.reason = 0
    pump.record(RESUME)
    pump.emit("state", {"state": P.RUNNING, "reason": "user"})
    pump.show("ok", "chirp")
    return {"state": P.RUNNING}


def rewind(pump, args):
    only(args)
    need_suspended(pump, "rewinding")
    if pump.res_state in (P.REWINDING, P.PRIMING, P.FILLING):
        raise Refused("state", "the motor is busy (%s)" % pump.res_state)
    pump.res_state = P.REWINDING
    pump.prime_run = 0
    pump.reservoir_steps = 0  # the old reservoir is coming out
    pump.emit("reservoir", {"state": P.REWINDING, "plunger_steps": pump.plunger_steps})
    return {"state": P.REWINDING, "plunger_steps": pump.plunger_steps}


def reservoir_insert(pump, args):
    only(args, "mU")
    if pump.res_state != P.REWOUND:
        raise Refused("state", "rewind before inserting a reservoir (now: %s)" % pump.res_state)
    m = pump.mech
    mu = check_int(opt(args, "mU", -1), "mU", 1000, m.mu_from_steps(m.capacity_steps))
    steps = m.steps_from_mu(mu, "reservoir")
    pump.reservoir_steps = steps
    pump.res_state = P.INSERTED
    pump.record(RESERVOIR, steps)
    pump.emit("reservoir", {"state": P.INSERTED, "reservoir_mU": mu})
    return {"state": P.INSERTED, "reservoir_mU": mu, "reservoir_steps": steps}


def prime_start(pump, args):
    only(args)
    if pump.res_state not in (P.INSERTED, P.PRIMED):
        raise Refused("state", "insert a reservoir before priming (now: %s)" % pump.res_state)
    pump.res_state = P.PRIMING
    pump.prime_run = 0
    pump.emit("reservoir", {"state": P.PRIMING})
    return {"state": P.PRIMING, "max_mU": pump.mech.mu_from_steps(P.PRIME_MAX_STEPS)}


def prime_stop(pump, args):
    only(args)
    if pump.res_state != P.PRIMING:
        raise Refused("state", "not priming")
    from .service import prime_stop as stop

    return stop(pump)


def cannula_fill(pump, args):
    """{mU: 0..1000, default 300}; 0 for a steel cannula that needs no fill."""
    only(args, "mU")
    if pump.res_state != P.PRIMED:
        raise Refused("state", "prime the tubing before filling the cannula (now: %s)" % pump.res_state)
    mu = check_int(opt(args, "mU", P.CANNULA_FILL_MU), "mU", 0, 1000)
    steps = pump.mech.steps_from_mu(mu, "cannula fill")
    if steps > pump.reservoir_steps:
        raise Refused("reservoir", "not enough insulin left to fill the cannula")
    pump.fill_target = steps
    pump.prime_run = 0
    pump.res_state = P.FILLING if steps else P.READY
    pump.emit("reservoir", {"state": pump.res_state, "cannula_mU": mu})
    return {"state": pump.res_state, "cannula_mU": mu}


def need_suspended(pump, what):
    if pump.state != "suspended":
        raise Refused("state", "suspend before " + what)
