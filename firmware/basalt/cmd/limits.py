# Therapy limits: change them (all validated together, then applied together).
from basalt import lib as overlay
from basalt.cmd import check_int, commit
from basalt.cmd._limits import SPEC
from basalt.core import Refused


def limits_set(pump, args):
    """Any subset of the limits; all are validated together, then applied together."""
    if not args:
        raise Refused("bad_arg", "give at least one limit")
    new = dict(pump.limits.__dict__)
    for k in args:
        spec = SPEC.get(k)
        if spec is None:
            raise Refused("bad_arg", "unknown limit " + str(k))
        new[k] = check_int(args[k], k, spec[0], spec[1])
    m = pump.mech
    m.steps_from_mu(new["bolus_increment_mU"], "bolus_increment_mU")
    if new["max_bolus_mU"] % new["bolus_increment_mU"]:
        raise Refused("range", "max_bolus_mU must be a multiple of bolus_increment_mU")
    if new["bolus_speed_mU_min"] * 1000 // (m.uu_per_step * 60) + 1 > m.max_hz:
        raise Refused("range", "bolus speed exceeds the motor's step rate")
    if new["max_hour_mU"] < new["max_basal_mUh"] or new["max_hour_mU"] < new["max_bolus_mU"]:
        raise Refused("range", "max_hour_mU must be at least max_basal_mUh and max_bolus_mU")
    if new["max_day_mU"] < 24 * new["max_basal_mUh"]:
        raise Refused("range", "max_day_mU must be at least 24 hours of max_basal_mUh")
    for i in range(len(pump.profiles.names)):
        if max(pump.profiles.rates[i]) > new["max_basal_mUh"]:
            raise Refused("limit", "max_basal_mUh: profile %s has a higher rate" % pump.profiles.names[i])
    if pump.tb_end and pump.tb_pct < 0 and pump.tb_rate > new["max_basal_mUh"]:
        raise Refused("limit", "max_basal_mUh: the running temp basal is above it")
    if new["max_hour_mU"] < pump.limits.max_hour_mU or new["max_day_mU"] < pump.limits.max_day_mU:
        # Lowered caps must still hold for what is already committed; raised caps hold by
        # construction (commitments were checked against the lower ones), so the guard is only
        # loaded when it can matter.
        overlay.run("_guard", "check", pump, caps=(m.steps_floor(new["max_hour_mU"]), m.steps_floor(new["max_day_mU"])))
    undo = tuple((pump.limits, k, getattr(pump.limits, k)) for k in new)  # (putting back resets the caps)
    for k in new:
        setattr(pump.limits, k, new[k])
    pump.set_caps()
    commit(pump, undo)
    return dict(pump.limits.__dict__)
