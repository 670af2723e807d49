"""The syringe mechanism between the motor's steps and the insulin that leaves the outlet.

SyringePlant records what the firmware commands: every step, its virtual time and direction. A real
pump does not turn each step into exactly 50 nL at the outlet, and the accuracy report
(hil.accuracy) needs those imperfections to mean anything. This module maps the step sequence to
the volume delivered at the outlet over time, through the chain

    motor angle m (whole steps, +1 forward / -1 back)
      -> screw travel   x_s = (m + periodic errors + per-step jitter) * (1 + lead_error)
      -> nut / carriage x_n   backlash: a dead band of `backlash_steps` between screw and nut
      -> plunger        x_p   compliance + stick-slip: the stopper sticks to the barrel until the
                              compression x_n - x_p reaches its break-away value, then slips
      -> outlet               optional first-order line compliance (time constant line_tau_s)

All lengths are in steps (1 step = 1.25 um of travel = 50 nL in the 40 mm^2 bore); volumes are
multiplied by nl_per_step * (1 + bore_error) at the end. With every imperfection off
(SyringeParams.ideal()) each forward step is exactly nl_per_step at the outlet, at its own time.

Parameters and where their defaults come from (docs/accuracy.md has the discussion):

- pitch_periodic: lead-screw periodic error ("drunkenness", a once-per-revolution wobble of the
  thread from run-out and thread-rolling). Modelled as a position error that is a sinusoid over
  one screw revolution (200 steps, direct drive); the parameter is the peak per-step travel error
  as a fraction of a step. 0.03 gives a 0.95-step (1.2 um) positional amplitude, plausible for a
  small rolled 0.25 mm-pitch screw. Because it is a position error it cancels over every whole
  revolution and when the motor returns to an earlier angle.
- step_angle_error: a hybrid stepper's non-cumulative full-step accuracy, typically specified as
  +-5 % of a step on motor datasheets; periodic over the 4-full-step electrical cycle.
- lead_error: cumulative lead error of the screw, a fractional scale on all travel. Rolled lead
  screws are commonly specified at about 0.006 in/ft (0.05 %); positive over-delivers.
- bore_error: fractional error of the reservoir's bore area (moulding tolerance). Default 0.
- backlash_steps: play between screw and nut, lost after every direction change. 8 steps = 10 um,
  typical of a plain (not anti-backlash) nut on a fine screw. Basal delivery only moves forward,
  so backlash only shows after a retraction.
- stick_break_steps / stick_slip_steps: the stopper's break-loose and glide friction over the
  stiffness of the compliant chain (rubber stopper, pusher, nut), as compressions in steps.
  A stuck stopper stays put while the nut compresses the chain; at stick_break_steps it breaks
  loose and slips forward until the compression falls back by stick_slip_steps (to the glide
  level). Nothing is created or lost: what sticks stays stored in the compression and comes out
  with a later slip. Default: 40 steps (50 um) to break loose and 1 step (50 nL, 1.25 um) per
  slip: a break-loose-minus-glide difference of about 0.3 N over a chain stiffness of about
  250 N/mm, the order of small elastomer stoppers in a stiff drive. Stick-slip flow ripple in
  syringe pumps is measured e.g. by Leuthner & Hayden, Lab Chip 2024 (doi 10.1039/d3lc00698k).
- stick_jitter: relative standard deviation of each slip's size (friction is not constant).
- step_jitter: relative standard deviation of each step's travel (seeded, zero mean).
- line_tau_s: first-order compliance of the infusion line: a plunger displacement reaches the
  outlet as dv * (1 - exp(-t / tau)). Default 0 (rigid line).
- primed: the pump starts primed - the backlash taken up forward and the chain compressed to a
  random point between glide and break-loose - as after the priming the standard requires before
  a test. primed=False starts from a relaxed chain: the first stick_break_steps only load it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class SyringeParams:
    pitch_periodic: float = 0.03
    pitch_phase_rad: float = 0.0
    steps_per_rev: int = 200
    step_angle_error: float = 0.05
    step_angle_phase_rad: float = math.pi / 4
    lead_error: float = 0.0005
    bore_error: float = 0.0
    backlash_steps: float = 8.0
    stick_break_steps: float = 40.0
    stick_slip_steps: float = 1.0
    stick_jitter: float = 0.3
    step_jitter: float = 0.02
    line_tau_s: float = 0.0
    primed: bool = True

    @classmethod
    def ideal(cls) -> SyringeParams:
        """Every imperfection off: exactly nl_per_step per forward step, delivered at once."""
        return cls(pitch_periodic=0.0, step_angle_error=0.0, lead_error=0.0, bore_error=0.0,
                   backlash_steps=0.0, stick_break_steps=0.0, stick_slip_steps=0.0, stick_jitter=0.0,
                   step_jitter=0.0, line_tau_s=0.0)

    def with_(self, **changes) -> SyringeParams:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        if self.steps_per_rev <= 0:
            raise ValueError("steps_per_rev must be positive")
        for name in ("backlash_steps", "stick_break_steps", "stick_slip_steps", "stick_jitter",
                     "step_jitter", "line_tau_s", "pitch_periodic", "step_angle_error"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.stick_slip_steps > self.stick_break_steps:
            raise ValueError("stick_slip_steps cannot exceed stick_break_steps")


@dataclass
class Delivery:
    """The mechanism's response to one step sequence.

    t_us[i] is the time of step i; plunger_nl[i] and nominal_nl[i] are the cumulative plunger
    displacement (as volume) and the nominal volume (net steps * nl_per_step) just after it.
    """
    t_us: np.ndarray
    direction: np.ndarray
    plunger_nl: np.ndarray
    nominal_nl: np.ndarray
    line_tau_s: float = 0.0
    params: SyringeParams = field(default_factory=SyringeParams)

    @property
    def total_nl(self) -> float:
        """Volume that has left the plunger by the last step (the line holds it if tau > 0)."""
        return float(self.plunger_nl[-1]) if len(self.plunger_nl) else 0.0

    @property
    def nominal_total_nl(self) -> float:
        return float(self.nominal_nl[-1]) if len(self.nominal_nl) else 0.0

    def plunger_at(self, t_s: Iterable[float]) -> np.ndarray:
        """Cumulative plunger displacement (nL) at each time: steps with t <= T count."""
        t_s = np.asarray(list(t_s) if not isinstance(t_s, np.ndarray) else t_s, dtype=float)
        idx = np.searchsorted(self.t_us, np.round(t_s * 1e6).astype(np.int64), side="right")
        padded = np.concatenate(([0.0], self.plunger_nl))
        return padded[idx]

    def volume_at(self, t_s: Iterable[float]) -> np.ndarray:
        """Cumulative volume (nL) out of the outlet at each time - what a balance there would read."""
        t_s = np.asarray(list(t_s) if not isinstance(t_s, np.ndarray) else t_s, dtype=float)
        if self.line_tau_s <= 0 or not len(self.t_us):
            return self.plunger_at(t_s)
        # Line compliance: what the plunger pushed in drains out with time constant tau. Walk the
        # events and the (sorted) sample times together; `held` is the volume still in the line.
        order = np.argsort(t_s, kind="stable")
        out = np.empty(len(t_s))
        dv = np.diff(np.concatenate(([0.0], self.plunger_nl)))
        ev_t = self.t_us / 1e6
        tau = self.line_tau_s
        held = out_cum = 0.0
        last_t = -math.inf
        i = 0
        for j in order:
            T = t_s[j]
            while i < len(ev_t) and ev_t[i] <= T:
                if last_t > -math.inf:
                    drained = held * (1 - math.exp(-(ev_t[i] - last_t) / tau))
                    held -= drained
                    out_cum += drained
                held += dv[i]
                last_t = ev_t[i]
                i += 1
            if last_t == -math.inf or T <= last_t:
                out[j] = out_cum
            else:
                out[j] = out_cum + held * (1 - math.exp(-(T - last_t) / tau))
        return out


class SyringeModel:
    def __init__(self, params: SyringeParams | None = None, nl_per_step: int = 50, seed: int = 0):
        self.params = params if params is not None else SyringeParams()
        self.nl_per_step = nl_per_step
        self.seed = seed

    # ---- position errors ------------------------------------------------------------------------
    def _periodic_error(self, m: int) -> float:
        """Position error (steps) of the screw at motor angle m, from the two periodic terms.

        Each term is a sinusoid in position, scaled so that its peak per-step travel error is the
        configured fraction of a step; being a function of position it cancels over whole periods.
        """
        p = self.params
        e = 0.0
        if p.pitch_periodic:
            n = p.steps_per_rev
            amp = p.pitch_periodic / (2 * math.sin(math.pi / n))
            e += amp * math.sin(2 * math.pi * m / n + p.pitch_phase_rad)
        if p.step_angle_error:
            e += p.step_angle_error * math.sin(2 * math.pi * m / 4 + p.step_angle_phase_rad)
        return e

    # ---- the chain ------------------------------------------------------------------------------
    def run(self, t_us: Sequence[int], direction: Sequence[int]) -> Delivery:
        """Plunger displacement after each step of the sequence (times ascending, direction +-1)."""
        p = self.params
        rng = np.random.default_rng(self.seed)
        n = len(t_us)
        t = np.asarray(t_us, dtype=np.int64)
        d = np.asarray(direction, dtype=np.int64)
        if n and np.any(np.diff(t) < 0):
            raise ValueError("step times must ascend")
        if n and not np.all(np.abs(d) == 1):
            raise ValueError("directions must be +1 or -1")
        jitter = rng.normal(0.0, p.step_jitter, n) if p.step_jitter else np.zeros(n)
        scale = 1.0 + p.lead_error

        m = 0  # motor angle, whole steps
        xs = 0.0  # screw travel (steps)
        e_prev = self._periodic_error(0)
        xn = 0.0  # nut/carriage: engaged on the forward flank, xs <= xn <= xs + backlash
        # plunger: behind the nut by the chain's compression c = xn - xp
        rigid = p.stick_break_steps == 0
        c_glide = p.stick_break_steps - p.stick_slip_steps
        c_break = self._next_break(rng) if not rigid else 0.0
        if rigid:
            c0 = 0.0
        elif p.primed:
            c0 = c_glide + rng.uniform(0.0, c_break - c_glide)
        else:
            c0 = 0.0
        xp = xn - c0
        xp0 = xp

        plunger = np.empty(n)
        for i in range(n):
            step = int(d[i])
            m += step
            e = self._periodic_error(m)
            xs += (step + (e - e_prev) + step * jitter[i]) * scale
            e_prev = e
            # backlash: the nut moves only when a flank of the screw pushes it
            if xn < xs:
                xn = xs
            elif xn > xs + p.backlash_steps:
                xn = xs + p.backlash_steps
            # stick-slip through the compliant chain
            if rigid:
                xp = xn
            else:
                c = xn - xp
                if c >= c_break:  # breaks loose forward, slides until the compression is at glide
                    xp = xn - c_glide
                    c_break = self._next_break(rng)
                elif c <= -c_break:  # pulled back hard enough to slip backwards
                    xp = xn + c_glide
                    c_break = self._next_break(rng)
            plunger[i] = xp - xp0

        vol = self.nl_per_step * (1.0 + p.bore_error)
        nominal = np.cumsum(d) * self.nl_per_step if n else np.zeros(0)
        return Delivery(t, d, plunger * vol, nominal.astype(float), p.line_tau_s, p)

    def _next_break(self, rng: np.random.Generator) -> float:
        """Break-loose compression for the next slip: glide + a slip size that varies."""
        p = self.params
        slip = p.stick_slip_steps
        if p.stick_jitter and slip:
            slip *= max(0.1, 1.0 + p.stick_jitter * rng.normal())
        return p.stick_break_steps - p.stick_slip_steps + slip

    def run_plant(self, plant) -> Delivery:
        """The mechanism's response to everything a SyringePlant recorded."""
        t, d = plant_steps(plant)
        self.nl_per_step = plant.nl_per_step
        return self.run(t, d)


def plant_steps(plant) -> tuple[list[int], list[int]]:
    """(times in us, directions) of every step the plant recorded, in time order."""
    pairs: list[tuple[int, int]] = []
    for tr in plant.trains:
        pairs.extend((t, tr.direction) for t in tr.step_times_us())
    pairs.sort(key=lambda p: p[0])  # stable: steps of one train keep their order
    return [p[0] for p in pairs], [p[1] for p in pairs]
