"""Occlusion runs with the real firmware in the loop: SimPump (MicroPython, 64 KB, lockstep) on
SimHardware with a seeded unit, the occlusion injected into the fluid path, the firmware's
detector, alarm and back-off observed from outside.

Where each figure comes from:
- alarm time: the first back-off (retract) train the firmware emits after the occlusion began
  (sim.plant, exact to the tick), confirmed by its "occlusion" alarm event;
- units missed: real plunger steps pushed from the occlusion to the alarm minus what left the
  cannula meanwhile (the fluid-path model): insulin owed that did not arrive;
- released when the line clears: after the back-off nothing moves (the pump waits for the user),
  so clearing at each delay is evaluated on the fluid model with exactly that motion
  (PressureModel.released_if_cleared); each run also clears the line for real in the loop and
  records both (`release_check`, which the reduced test compares);
- false alarms: occlusion alarms over days of normal delivery (basal, three boluses a day,
  reservoir and battery changes), resumed as a user would.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hil.dut import Dut
from hil.sim.firmware import DEFAULT_HEAP, SimPump
from host.client import PumpClient, PumpError

MIN = 60_000
H = 3_600_000
DAY = 24 * H
NL = 50

# what the issue measures: (label, basal mU/h, bolus mU or 0)
CASES = {"basal_0.1": ("basal 0.1 U/h", 100, 0), "basal_1": ("basal 1.0 U/h", 1000, 0),
         "bolus_5": ("5 U bolus (1.5 U/min)", 1000, 5000)}
CLEAR_DELAYS_MS = (MIN, 10 * MIN, H)  # the line clears this long after the alarm
RELEASE_WINDOW_MS = 2 * MIN
LIMITS = {"max_basal_mUh": 6000, "max_day_mU": 250_000, "max_hour_mU": 25_000}  # for 5 U/h + boluses


@dataclass
class OcclusionRun:
    case: str
    seed: int
    t_on_ms: int
    t_alarm_ms: int | None = None
    missed_steps: float | None = None
    time_to_alarm_s: float | None = None
    backoff_steps: int = 0
    released_steps: dict = field(default_factory=dict)  # clear delay (ms after the alarm) -> steps
    release_check: tuple | None = None  # (t_clear_ms, what-if steps, steps when cleared for real)
    counts_per_step: float = 0.0  # this unit's occluded force rise per step (for the record)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["released_steps"] = {str(k): v for k, v in self.released_steps.items()}
        return d


HEAP = DEFAULT_HEAP  # the firmware's budget


def _start(seed: int, micropython: str | None) -> Dut:
    sim = SimPump(seed=seed, micropython=micropython, heap=HEAP).start()
    return Dut(PumpClient(sim.console_url), sim)


def alarm_tick(sim: SimPump, t_from_ms: int) -> int | None:
    """The tick of the first back-off train at or after t_from (the firmware's alarm tick)."""
    first = None
    for tr in reversed(sim.plant.trains):
        if tr.t0_ms < t_from_ms:
            break
        if tr.direction < 0:
            first = tr.t0_ms
    return first


def occlusion_run(case: str, seed: int, micropython: str | None = None,
                  clear_delays_ms=CLEAR_DELAYS_MS) -> OcclusionRun:
    """One unit (seed): normal delivery for a random 2-10 h, then the line blocks (during a bolus
    for bolus_5); run until the firmware alarms and has backed off."""
    _, rate, bolus = CASES[case]
    rng = np.random.default_rng([seed, 41, list(CASES).index(case)])
    wall = time.perf_counter()
    d = _start(seed, micropython)
    try:
        sim, hw = d.sim, d.sim.hardware
        t0 = d.prepare(segments=[[0, rate]])  # the default limits allow every case
        t_on = t0 + int(rng.uniform(2 * H, 10 * H))
        if bolus:
            t_b = t_on - int(rng.uniform(0, bolus * 60 / 1500 - 10)) * 1000 - int(rng.uniform(0, 1000))
            sim.run_until(t_b)
            d.request("bolus", mU=bolus)
        hw.occlude(at_ms=t_on)
        run = OcclusionRun(case, seed, t_on)
        res = hw.pressure.reservoir(hw.pressure._state(t_on)[9].index)
        run.counts_per_step = hw.pressure.gain * hw.pressure.params.area_mm2 / 1000 * NL / res.compliance(
            hw.pressure.position_steps_at(t_on), hw.pressure.params.travel_steps)
        # give up after 3x the goal's volume (300 steps of 5 mU) at the basal rate, or 2 h in a bolus
        give_up = t_on + (2 * H if bolus else 300 * 5 * H // rate)
        chunk = MIN if bolus else 10 * MIN
        t_alarm = None
        while sim.now_ms < give_up and t_alarm is None:
            sim.run_until(min(give_up, sim.now_ms + chunk))
            t_alarm = alarm_tick(sim, t_on)
        if t_alarm is None:
            run.wall_s = time.perf_counter() - wall
            return run
        sim.run_until(max(sim.now_ms, t_alarm + MIN))  # the back-off: 10 steps a tick, <= 40 s
        events = [e.data for e in d.client.drain_events() if e.name == "alarm"]
        if not any(e.get("alarm") == "occlusion" for e in events):
            raise RuntimeError(f"seed {seed}: back-off without an occlusion alarm: {events}")
        run.t_alarm_ms = t_alarm
        run.time_to_alarm_s = (t_alarm - t_on) / 1000
        pushed = hw.position_at(t_alarm - 1) - hw.position_at(t_on - 1)
        run.missed_steps = pushed - hw.delivered_nl_between(t_on - 1, t_alarm - 1) / NL
        run.backoff_steps = -sum(tr.emitted * tr.direction for tr in sim.plant.trains if tr.t0_ms >= t_alarm)
        for delay in clear_delays_ms:
            run.released_steps[delay] = hw.pressure.released_if_cleared(t_alarm + delay, RELEASE_WINDOW_MS) / NL
        # and once for real, now: the line clears while the firmware waits for the user
        t_clear = sim.now_ms
        what_if = hw.pressure.released_if_cleared(t_clear, RELEASE_WINDOW_MS) / NL
        hw.clear_occlusion()
        sim.run_until(t_clear + RELEASE_WINDOW_MS)
        run.release_check = (t_clear, what_if, hw.delivered_nl_between(t_clear, t_clear + RELEASE_WINDOW_MS) / NL)
        run.wall_s = time.perf_counter() - wall
        return run
    finally:
        d.close()


@dataclass
class NormalRun:
    seed: int
    basal_muh: int
    days: int
    occlusion_alarms: list = field(default_factory=list)  # virtual ms of each (false) alarm
    other_alarms: list = field(default_factory=list)
    boluses: int = 0
    reservoir_changes: int = 0
    delivered_steps: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def daily_boluses(seed: int, days: int) -> list[tuple[int, int]]:
    """Three boluses a day (07:30, 12:30, 19:00 +- 30 min), 1-9 U: (ms after start, mU)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for day in range(days):
        for h in (7.5, 12.5, 19.0):
            out.append((int((day * 24 + h) * H + rng.uniform(-0.5, 0.5) * H), int(rng.uniform(1, 10)) * 1000))
    return out


def normal_run(seed: int, basal_muh: int, days: int, micropython: str | None = None) -> NormalRun:
    """`days` of normal delivery on unit `seed`: no occlusion, so every occlusion alarm is false.
    The user acts as users do: changes the reservoir when under 40 U is left, swaps the battery at
    the low-battery alert, and resumes after a (false) occlusion alarm."""
    wall = time.perf_counter()
    run = NormalRun(seed, basal_muh, days)
    d = _start(seed, micropython)
    try:
        sim = d.sim
        t0 = d.prepare(segments=[[0, basal_muh]], limits=LIMITS if basal_muh > 3000 else None)
        for t_bolus, mu in daily_boluses(seed, days) + [(days * DAY, 0)]:
            while sim.now_ms < t0 + t_bolus:
                sim.run_until(min(t0 + t_bolus, sim.now_ms + H))
                _handle_alarms(d, run)
                if d.request("status")["reservoir_mU"] < 40_000 + mu:
                    d.change_reservoir()
                    d.request("resume")
                    run.reservoir_changes += 1
            if not mu:
                break
            try:
                d.request("bolus", mU=mu)
                run.boluses += 1
            except PumpError as e:  # a refusal is not an alarm; record it with the others
                run.other_alarms.append((sim.now_ms, f"bolus refused: {e}"))
        sim.run_until(sim.now_ms + 60_000)
        _handle_alarms(d, run)
        run.delivered_steps = d.request("status").get("delivered_steps", 0)
    finally:
        d.close()
    run.wall_s = time.perf_counter() - wall
    return run


def _handle_alarms(d: Dut, run: NormalRun) -> None:
    for e in d.client.drain_events():
        if e.name != "alarm" or e.data.get("state") not in (None, "active"):
            continue
        what = e.data.get("alarm")
        if what == "occlusion":
            run.occlusion_alarms.append(d.sim.now_ms)
            d.sim.run_until(d.sim.now_ms + MIN)  # let the back-off finish, then the user resumes
            d.request("alarm_ack", alarm="occlusion")
            d.request("resume")
        elif what == "battery_low":
            d.sim.hardware.replace_battery()  # the user swaps the cell; delivery goes on
        elif what != "reservoir_low":
            run.other_alarms.append((d.sim.now_ms, what))
