# Therapy limits, enforced here in the firmware (the host only mirrors them). Each limit has a
# default and a hard ceiling that no configuration can exceed.
from .errors import Refused, check_int

# name: (default, lowest settable, hard ceiling)
_SPEC = {
    "max_bolus_mU": (10000, 100, 30000),  # 10 U default; 30 U ceiling (commercial range 0.1-30 U)
    "max_basal_mUh": (3000, 50, 30000),  # 3 U/h default as Omnipod 5; 30 U/h ceiling
    "bolus_speed_mU_min": (1500, 500, 15000),  # 1.5 U/min as Medtronic standard
    "bolus_increment_mU": (10, 5, 100),  # 0.01 U; commercial 0.01-0.1 U
}


class Limits:
    def __init__(self):
        for k, spec in _SPEC.items():
            setattr(self, k, spec[0])

    def to_dict(self):
        return {k: getattr(self, k) for k in _SPEC}

    def update(self, changes, mech, schedule_max_muh):
        """Validate every change first; apply all or nothing."""
        if type(changes) is not dict or not changes:
            raise Refused("bad_arg", "limits must be a non-empty object")
        new = self.to_dict()
        for k, v in changes.items():
            spec = _SPEC.get(k)
            if spec is None:
                raise Refused("bad_arg", "unknown limit " + str(k))
            new[k] = check_int(v, k, spec[1], spec[2])
        inc_steps = mech.steps_from_mu(new["bolus_increment_mU"], "bolus_increment_mU")
        if new["max_bolus_mU"] % new["bolus_increment_mU"]:
            raise Refused("range", "max_bolus_mU must be a multiple of bolus_increment_mU")
        # The motor must keep up with the bolus speed within one tick.
        if new["bolus_speed_mU_min"] * 1000 // (mech.uu_per_step * 60) + 1 > mech.max_hz:
            raise Refused("range", "bolus speed exceeds the motor's step rate")
        if schedule_max_muh > new["max_basal_mUh"]:
            raise Refused("limit", "the basal schedule has a rate above the new max_basal_mUh")
        for k in new:
            setattr(self, k, new[k])
        return inc_steps
