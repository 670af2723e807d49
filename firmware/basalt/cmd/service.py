# One control tick of the reservoir change (rewind, prime, cannula fill), while suspended.
# An overlay: it runs only during the minutes a reservoir change takes.
from micropython import const

from basalt.core import DELIVER, RETRACT

_PRIME_HZ = const(40)  # 12 U/min: tubing prime speed
_PRIME_MAX_STEPS = const(6000)  # 30 U: a prime that long means something is wrong (cmd/reservoir.py reports it)
_PRIME = const(9)  # history record type (core/history.py)
_REWIND = const(10)  # history record type (core/history.py)


def tick(pump):
    rs = pump.res_state
    d = pump.delivery
    if rs == "rewinding":
        if pump.plunger_steps <= 0:
            pump.res_state = "rewound"
            pump.record(_REWIND, pump.prime_run)
            pump.emit("reservoir", {"state": "rewound"})
            return
        n = pump.plunger_steps if pump.plunger_steps < pump.mech.max_hz else pump.mech.max_hz
        d.service(n, RETRACT)
        return
    left = pump.reservoir_steps
    if rs == "priming":
        if pump.prime_run >= _PRIME_MAX_STEPS or left == 0:
            prime_stop(pump)
            return
        n = _PRIME_HZ
        if n > _PRIME_MAX_STEPS - pump.prime_run:
            n = _PRIME_MAX_STEPS - pump.prime_run
    else:  # "filling"
        if pump.prime_run >= pump.fill_target or left == 0:
            pump.res_state = "ready" if pump.prime_run >= pump.fill_target else "primed"
            if pump.res_state == "ready":
                for c in (1, 6, 10):  # a new reservoir is in place: the alarms about the old one end
                    pump.clear_alarm(c)
            pump.record(_PRIME, pump.prime_run, 2)
            pump.emit("reservoir", {"state": pump.res_state, "cannula_steps": pump.prime_run})
            return
        n = pump.limits.bolus_speed_mU_min * 1000 // (pump.mech.uu_per_step * 60) or 1
        if n > pump.fill_target - pump.prime_run:
            n = pump.fill_target - pump.prime_run
    d.service(n if n < left else left, DELIVER)


def prime_stop(pump):
    pump.settle(True)
    pump.res_state = "primed"
    pump.record(_PRIME, pump.prime_run, 1)
    pump.emit("reservoir", {"state": "primed", "primed_steps": pump.prime_run})
    return {"state": "primed", "primed_steps": pump.prime_run, "primed_mU": pump.mech.mu_from_steps(pump.prime_run)}
