"""Exercise: how physical activity enters the patient model.

The UVA/Padova 2008 model as simglucose codes it has no exercise term. We add the two effects that
the exercise extensions of this model family describe (Breton, "Physical activity - the major
unaccounted impediment to closed loop control", J Diabetes Sci Technol 2008;2(1):169-174; Dalla Man,
Breton, Cobelli, "Physical activity into the meal glucose-insulin model of type 1 diabetes: in silico
studies", J Diabetes Sci Technol 2009;3(1):56-67): activity raises insulin action and raises
insulin-independent glucose uptake by working muscle. Those papers drive both from heart rate above
rest with fitted gains; we expose the two effects as plain multipliers instead, set per scenario
(no value here is a fitted population parameter).

In the model, peripheral utilisation is Michaelis-Menten in the tissue glucose Gt (state x[4]):

    Uid = (Vm0 + Vmx * X) * Gt / (Km0 + Gt)

with X (state x[6]) the remote insulin action. An :class:`Exercise` multiplies its two terms:

- ``glucose_uptake`` multiplies Vm0: insulin-independent uptake. This lowers glucose at any insulin
  level, basal included.
- ``insulin_sensitivity`` multiplies Vmx: insulin-dependent uptake. X is driven by plasma insulin
  *above its basal value* Ib (dX/dt = -p2u*X + p2u*(I - Ib)), so X is 0 at the basal steady state
  and this factor only strengthens the action of insulin above basal (a bolus, a raised temp
  basal). With basal insulin alone it has no effect: the basal share of insulin action is folded
  into Vm0 by the model's steady-state parameterisation.

Both are 1.0 at rest. They are inputs like insulin and carbs: held constant over each minute the
patient is stepped, so a scenario can ramp them (see :func:`session`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    insulin_sensitivity: float = 1.0   # multiplier on Vmx
    glucose_uptake: float = 1.0        # multiplier on Vm0

    def __post_init__(self):
        if self.insulin_sensitivity < 0 or self.glucose_uptake < 0:
            raise ValueError("exercise multipliers must be >= 0")

    @property
    def at_rest(self) -> bool:
        return self.insulin_sensitivity == 1.0 and self.glucose_uptake == 1.0


REST = Exercise()


def session(t_min: float, start_min: float, duration_min: float, peak: Exercise,
            ramp_min: float = 5.0) -> Exercise:
    """The multipliers at minute ``t_min`` of a bout of activity: rising linearly over ``ramp_min``
    from rest to ``peak`` at ``start_min``, held, then falling back over ``ramp_min`` after
    ``start_min + duration_min``."""
    if t_min < start_min:
        w = 0.0
    elif t_min < start_min + duration_min:
        w = 1.0 if ramp_min <= 0 else min(1.0, (t_min - start_min) / ramp_min)
    else:
        w = 0.0 if ramp_min <= 0 else max(0.0, 1.0 - (t_min - start_min - duration_min) / ramp_min)
    if w == 0.0:
        return REST
    return Exercise(insulin_sensitivity=1.0 + w * (peak.insulin_sensitivity - 1.0),
                    glucose_uptake=1.0 + w * (peak.glucose_uptake - 1.0))
