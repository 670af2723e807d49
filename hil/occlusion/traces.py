"""Sensor traces without the firmware process: what the occlusion detector sees, tick by tick.

The models are deterministic per seed, and until the detector fires the readings do not depend on
it (the pump delivers as planned). So the trade-off sweep runs the detector - the firmware's own
`basalt.core.occlusion`, imported into CPython - over traces built here, thousands of times faster
than the firmware in the loop. The trains come from the firmware's own delivery engine
(`basalt.core.Delivery`), and the readings follow SimHardware's rule exactly (`tick_sample_ms`):
the reading a tick sees is sampled 1 ms before it when a train ran in the tick before, when an
idle push (every 60 s of virtual time) or an injected event fell in it; otherwise the tick sees
the last reading again (with steps 0, which the detector ignores, so such ticks are left out).
tests/test_occlusion_bench.py checks a trace against the firmware in the loop, reading for reading.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from basalt.core import Delivery, Mechanics

from hil.sim.hardware import IDLE_PUSH_MS, tick_sample_ms
from hil.sim.plant import SyringePlant
from hil.sim.pressure import PressureModel, PressureParams

TICK = 1000
H = 3_600_000
DAY = 24 * H
NL = 50
RESERVOIR_STEPS = 56_000  # a new reservoir after 280 U (of 300), as a user would change it


@dataclass
class Plan:
    """Normal delivery: a basal rate and normal boluses at given uptimes (s), at a bolus speed."""
    basal_muh: int
    boluses: list[tuple[int, int]] = field(default_factory=list)  # (uptime s, mU)
    bolus_speed_mu_min: int = 1500


class _Motor:
    """A motor that emits every train in full (the engine only asks for counts)."""

    def __init__(self):
        self.n = 0

    def start(self, n, hz, direction):
        self.n = n

    def busy(self):
        return False

    def count(self):
        return self.n

    def stop(self):
        return self.n


def plan_trains(plan: Plan, t_end_ms: int, t_start_ms: int = 0) -> list[tuple[int, int]]:
    """(t0_ms, steps) of every forward train the firmware's delivery engine starts for `plan`
    before t_end - one train per 1 s tick, basal then bolus, as core.pump does. Delivery starts
    at t_start (paused there, like a resume): uptime u runs the tick at t_start + (u + 1) s."""
    mech = Mechanics(NL, 60_000, 400)
    d = Delivery(_Motor(), mech)
    boluses = sorted(plan.boluses)
    bi = owed = 0
    out = []
    for u in range((t_end_ms - t_start_ms) // TICK - 1):
        d.settle()
        while bi < len(boluses) and boluses[bi][0] <= u:
            owed += mech.steps_floor(boluses[bi][1])
            bi += 1
        basal = d.accrue_basal(plan.basal_muh, -1)
        normal = d.accrue_normal(plan.bolus_speed_mu_min, owed) if owed else 0
        if not owed:
            d.normal_acc = 0
        owed -= normal
        if basal + normal:
            d.start(basal, 0, normal)
            out.append((t_start_ms + (u + 1) * TICK, basal + normal))
    return out


@dataclass
class Trace:
    """What the detector is handed at each tick with a fresh reading: t (tick ms), raw (counts),
    steps (forward steps of the train that ran in the tick before; 0 for an idle reading)."""
    t: np.ndarray
    raw: np.ndarray
    steps: np.ndarray
    model: PressureModel
    plant: SyringePlant
    resets: list[int] = field(default_factory=list)  # train ticks that start a new reservoir

    def missed_steps(self, t_on_ms: float, ticks: np.ndarray) -> np.ndarray:
        """At each tick: plunger steps pushed since t_on minus what left the cannula - insulin owed
        that has not arrived (steps at exactly t_on count: the line is blocked from then)."""
        t0 = np.array([tr.t0_ms for tr in self.plant.trains])
        cum = np.cumsum([tr.emitted for tr in self.plant.trains])
        first = bisect.bisect_left(t0.tolist(), t_on_ms)
        base = cum[first - 1] if first else 0
        k = np.searchsorted(t0, ticks - 1, side="right")  # trains started before the tick's sample
        pushed = np.where(k > 0, cum[np.maximum(k - 1, 0)], 0) - base
        out0 = self.model.delivered_nl_at(t_on_ms - 1e-3)
        delivered = np.array([self.model.delivered_nl_at(float(t) - 1) for t in ticks]) - out0
        return pushed - delivered / NL


def build(plan: Plan, seed: int, t_end_ms: int, params: PressureParams | None = None,
          occlude: tuple[float, float | None] | None = None, t_start_ms: int = 0,
          reservoir_steps: int = RESERVOIR_STEPS) -> Trace:
    """The trace of `plan` on pump `seed` up to t_end. occlude = (t_on_ms, resistance factor or
    None for a full occlusion). A new reservoir (and site) goes in whenever `reservoir_steps` have
    been delivered from one; the change is taken as instantaneous and the detector is reset on
    its first train, as on a resume."""
    plant = SyringePlant()
    trains = plan_trains(plan, t_end_ms, t_start_ms)
    resets = []
    used = 0
    for t0, n in trains:
        if used + n > reservoir_steps:
            resets.append(t0)
            used = 0
        used += n
        plant.on_train(t0, n, n, 1)
    m = PressureModel(params, seed, plant=plant)
    for t in resets:
        m.new_reservoir(t - 1)
    if occlude is not None:
        m.occlude(occlude[0], factor=occlude[1])
    ticks = {t0 + TICK: n for t0, n in trains}
    for t in range((t_start_ms // IDLE_PUSH_MS + 1) * IDLE_PUSH_MS, t_end_ms, IDLE_PUSH_MS):
        ticks.setdefault(t + TICK, 0)
    if occlude is not None:  # an injection pushes a reading for the next tick
        ticks.setdefault((int(occlude[0]) // TICK + 1) * TICK, 0)
    ts = np.array(sorted(t for t in ticks if t < t_end_ms), dtype=np.int64)
    raw = np.array([m.sensor_at(tick_sample_ms(int(t))) for t in ts], dtype=np.int64)
    steps = np.array([ticks[int(t)] for t in ts], dtype=np.int64)
    return Trace(ts, raw, steps, m, plant, resets)


def alarms(t: np.ndarray, raw: np.ndarray, steps: np.ndarray, resets, make_detector,
           first_only: bool = False) -> list[int]:
    """Indices of the ticks at which the detector alarms; after each alarm it is reset, as after a
    user's resume (the back-off is not replayed). resets: train ticks of new reservoirs."""
    det = make_detector()
    reset_ticks = {int(r) + TICK for r in resets}
    out = []
    for i, (ti, r, s) in enumerate(zip(t.tolist(), raw.tolist(), steps.tolist(), strict=True)):
        if ti in reset_ticks:
            det.reset()
        if det.update(r, s):
            out.append(i)
            if first_only:
                break
            det.reset()
    return out


def relieve(trace: Trace, det, t_alarm_ms: int, per_tick: int = 10, most: int = 400) -> tuple[int, int]:
    """The pump's back-off after `det` alarmed at tick t_alarm, replayed on the trace's model
    (core/pump.py: `det.relief` steps, at most `most`, `per_tick` a tick from the alarm tick on).
    The trace's later forward trains are dropped (the pump stopped). Returns (steps retracted,
    tick ms after the last back-off train)."""
    plant = trace.plant
    plant.trains[:] = [tr for tr in plant.trains if tr.t0_ms < t_alarm_ms]
    trace.model._reset()
    t, left = t_alarm_ms, min(det.relief, most)
    while left > 0:
        n = min(per_tick, left)
        plant.on_train(t, n, n, -1)
        left -= n
        t += TICK
    return min(det.relief, most), t
