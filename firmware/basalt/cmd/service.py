# One control tick of the reservoir change (rewind, prime, cannula fill), while suspended.
# An overlay: it runs only during the minutes a reservoir change takes.
from ..core.delivery import DELIVER, RETRACT
from ..core.history import PRIME, REWIND
from ..core.pump import PRIME_HZ, PRIME_MAX_STEPS, PRIMED, PRIMING, READY, REWINDING, REWOUND


def tick(pump):
    rs = pump.res_state
    d = pump.delivery
    if rs == REWINDING:
        if pump.plunger_steps <= 0:
            pump.res_state = REWOUND
            pump.record(REWIND, pump.prime_run)
            pump.emit("reservoir", {"state": REWOUND})
            return
        n = pump.plunger_steps if pump.plunger_steps < pump.mech.max_hz else pump.mech.max_hz
        d.service(n, RETRACT)
        return
    left = pump.reservoir_steps
    if rs == PRIMING:
        if pump.prime_run >= PRIME_MAX_STEPS or left == 0:
            prime_stop(pump)
            return
        n = PRIME_HZ
        if n > PRIME_MAX_STEPS - pump.prime_run:
            n = PRIME_MAX_STEPS - pump.prime_run
    else:  # FILLING
        if pump.prime_run >= pump.fill_target or left == 0:
            pump.res_state = READY if pump.prime_run >= pump.fill_target else PRIMED
            pump.record(PRIME, pump.prime_run, 2)
            pump.emit("reservoir", {"state": pump.res_state, "cannula_steps": pump.prime_run})
            return
        n = pump.limits.bolus_speed_mU_min * 1000 // (pump.mech.uu_per_step * 60) or 1
        if n > pump.fill_target - pump.prime_run:
            n = pump.fill_target - pump.prime_run
    d.service(n if n < left else left, DELIVER)


def prime_stop(pump):
    pump._settle(True)
    pump.res_state = PRIMED
    pump.record(PRIME, pump.prime_run, 1)
    pump.emit("reservoir", {"state": PRIMED, "primed_steps": pump.prime_run})
    return {"state": PRIMED, "primed_steps": pump.prime_run, "primed_mU": pump.mech.mu_from_steps(pump.prime_run)}
