"""Physics sanity of the fluid-path/occlusion-sensor model and the battery model (hil/sim)."""
import math
import time

import numpy as np
import pytest

from hil.sim.battery import BatteryModel, BatteryParams, ocv
from hil.sim.plant import SyringePlant
from hil.sim.pressure import PressureModel, PressureParams
from hil.sim.syringe_model import SyringeModel, SyringeParams, plant_steps

NL = 50
H = 3_600_000
DAY = 24 * H


def basal_plant(u_per_h, hours, t0_ms=0, hz=100):
    """One single-step train at each step time of a constant basal rate."""
    plant = SyringePlant()
    period = int(H / (u_per_h * 200))
    for t in range(t0_ms, t0_ms + int(hours * H), period):
        plant.on_train(t, 1, hz, 1)
    return plant, period


def quiet(**kw):
    return PressureParams.quiet().with_(**kw)


# ---- fluid path -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_occlusion_outflow_equals_plunger_displacement(seed):
    plant, period = basal_plant(1.0, 24)
    m = PressureModel(seed=seed, plant=plant)
    n = len(plant.trains)
    t_end = plant.trains[-1].t0_ms + 60_000  # a minute after the last step: ~50 time constants
    assert m.delivered_nl_at(t_end) == pytest.approx(n * NL, rel=1e-9)
    # at any moment, what went in is either out or stored
    for t in (5 * H + 1, 12 * H + 7_000, 20 * H + period - 1):
        steps = plant.steps_between(0, t + 0.001)
        assert m.delivered_nl_at(t) + m.stored_nl_at(t) == pytest.approx(steps * NL, abs=1e-6)
    # pressure at rest between basal steps is small: each 50 nL relaxes with tau ~ 1 s
    assert 0 <= m.pressure_at(period * 100 + period - 1) < 0.01


def test_bolus_pressure_is_flow_times_resistance():
    p = quiet()
    plant = SyringePlant()
    for s in range(120):  # 1.5 U/min = 5 steps per second, one train a second
        plant.on_train(s * 1000, 5, 5, 1)
    m = PressureModel(p, plant=plant)
    q_nl_s = 5 * NL
    mean_p = np.mean(m.series(np.arange(60_000, 120_000, 37), "pressure"))
    assert mean_p == pytest.approx(q_nl_s * p.r_open_kpa_s_nl, rel=0.05)


def test_occlusion_pressure_rises_each_step_and_outflow_stops():
    p = quiet()
    plant, period = basal_plant(1.0, 6)
    m = PressureModel(p, plant=plant)
    t_on = 2 * H + period // 2
    m.occlude(t_on)
    c = m.reservoir(0).compliance(0, p.travel_steps)
    rise = NL / c
    before = [m.pressure_at(t_on + k * period) for k in range(0, 60)]  # just before each step
    diffs = np.diff(before)
    assert np.all(diffs > 0)
    assert diffs == pytest.approx(rise, rel=0.01)  # compliance shrinks a hair with the barrel
    out = m.delivered_nl_between(t_on, t_on + 59 * period)
    # only the leak through R x 1e6 gets out: P_max / R_occ * duration, a few nL against 2950 stored
    leak_bound = before[-1] / (p.r_open_kpa_s_nl * p.r_occluded_factor) * 59 * period / 1000
    assert 0 < out < leak_bound < 0.002 * 59 * NL
    # the sensor follows: readings at rest before each step rise too (no noise in quiet())
    s = [m.sensor_at(t_on + k * period) for k in range(1, 60, 5)]
    assert all(b > a for a, b in zip(s, s[1:], strict=False))
    print(f"\noccluded: {rise:.3f} kPa/step, {rise * p.area_mm2 / 1000:.4f} N/step, "
          f"C = {c:.1f} nL/kPa (quiet, full reservoir)")


def stored_then_cleared(backoff_steps, seed=0, params=None):
    p = params or PressureParams()
    plant = SyringePlant()
    for k in range(0, 80):  # 1 U/h with a step every 18 s ...
        plant.on_train(k * 18_000, 1, 100, 1)
        if k == 61 and backoff_steps:  # ... backing off at 1100 s, before the clearing ...
            plant.on_train(1_100_000, backoff_steps, 200, -1)
    m = PressureModel(p, seed=seed, plant=plant)
    m.occlude(9_000, 1_188_500)  # ... occluded from 9 s, cleared after ~20 min (66 steps missed)
    stored = m.stored_nl_at(1_188_499)
    released = m.delivered_nl_between(1_188_500, 1_205_999)  # ~13 time constants, before the next step
    return m, stored, released


def test_clearing_releases_the_stored_volume_and_backoff_shrinks_it():
    m, stored, released = stored_then_cleared(0)
    n_steps = m._src.plant.steps_between(9_000, 1_188_500)
    assert n_steps == 66
    assert stored == pytest.approx(n_steps * NL, rel=1e-3)
    assert released == pytest.approx(stored, rel=1e-3)
    _, stored_b, released_b = stored_then_cleared(20)
    assert released_b == pytest.approx(stored - 20 * NL, rel=1e-3)
    assert released_b < released
    # backing off exactly the missed steps leaves (almost) nothing to release
    _, _, released_c = stored_then_cleared(n_steps)
    assert abs(released_c) < 0.1 * 10_000  # the goal: at most 0.1 U
    assert abs(released_c) < 5.0  # all but the few nL that leaked out while occluded
    # backing off more draws insulin/tissue fluid back when the line opens (negative release)
    m_d, _, released_d = stored_then_cleared(n_steps + 10)
    assert released_d == pytest.approx(-10 * NL, abs=5.0)


def test_backoff_relieves_pressure_and_the_void_conserves_volume():
    p = PressureParams()
    plant = SyringePlant()
    plant.on_train(0, 100, 200, 1)
    plant.on_train(2_000, 400, 200, -1)  # far more than the stored volume: a void opens
    plant.on_train(10_000, 400, 200, 1)
    m = PressureModel(p, plant=plant)
    m.occlude(0, 20_000)
    assert m.pressure_at(1_000) > 50
    assert m.pressure_at(1_999) > m.pressure_at(2_200) > m.pressure_at(3_000)
    assert m.pressure_at(3_000) == pytest.approx(p.p_floor_kpa)
    vol_in = m.stored_nl_at(9_999)
    assert vol_in == pytest.approx(-300 * NL, abs=0.1)  # the void counts as negative storage
    # (less the ~0.03 nL that leaks back through the occluded line in those 7 s)
    assert m.stored_nl_at(19_999) == pytest.approx(100 * NL, abs=0.2)  # refilled, then 100 steps up
    assert m.delivered_nl_at(60_000) == pytest.approx(100 * NL, rel=1e-9)


def test_noise_and_drift_statistics_match_the_parameters():
    p = quiet(noise_counts=4.0)
    m = PressureModel(p, seed=3)
    x = m.series(np.arange(1, 20_001) * 1.0)  # 20 s at rest, 1 ms apart: drift is off
    assert np.std(x) == pytest.approx(math.sqrt(4.0 ** 2 + 1 / 12), rel=0.05)
    assert np.mean(x) == pytest.approx(p.zero_counts, abs=0.2)
    # aging drift alone: a straight line at +-rate
    m = PressureModel(quiet(drift_rate_n_day=0.005), seed=3)
    t = np.arange(0, 31) * DAY
    f = m.series(t, "force")
    assert abs(np.polyfit(t / DAY, f, 1)[0]) == pytest.approx(0.005, rel=1e-6)
    # the daily term: its amplitude
    m = PressureModel(quiet(drift_diurnal_n=0.03), seed=3)
    f = m.series(np.arange(0, DAY, 60_000), "force")
    assert (f.max() - f.min()) / 2 == pytest.approx(0.03, rel=0.01)
    # the slow wander: RMS over 30 days, sampled hourly, close to the configured value
    rms = [np.sqrt(np.mean(PressureModel(quiet(drift_slow_n=0.05), seed=s).series(
        np.arange(0, 30 * DAY, H), "force") ** 2)) for s in range(8)]
    assert np.mean(rms) == pytest.approx(0.05, rel=0.2)
    # counts follow force through the unit's gain (nominal conversion within its 2% spread)
    m = PressureModel(quiet(drift_rate_n_day=0.1, gain_sigma=0.02), seed=5)
    delta_n = m.counts_to_n(m.sensor_at(30 * DAY)) - m.counts_to_n(m.sensor_at(0))
    assert abs(delta_n) == pytest.approx(3.0, rel=0.08)


def test_friction_varies_with_travel_between_reservoirs_and_with_dwell():
    p = PressureParams()
    glides = [PressureModel(p, seed=s).reservoir(0).glide_n for s in range(40)]
    assert np.std(np.log(glides)) == pytest.approx(p.glide_sigma, rel=0.35)
    m = PressureModel(p, seed=0)
    assert m.reservoir(1).glide_n != m.reservoir(0).glide_n  # per reservoir, same seed
    res = m.reservoir(0)
    along = [res.glide(x, p.travel_steps) for x in range(0, 60_000, 1000)]
    assert np.std(along) / np.mean(along) > 0.03
    breaks = [PressureModel(p, seed=s).reservoir(0).breakaway_log for s in range(20)]
    assert len(set(breaks)) == 20
    # break-away after a dwell > glide while moving > held at rest
    plant = SyringePlant()
    plant.on_train(0, 10, 100, 1)
    plant.on_train(600_000, 10, 100, 1)  # after 10 min at rest
    m = PressureModel(p.with_(glide_roughness=0.0), seed=0, plant=plant)
    peak = m.friction_n_at(600_000.5)
    moving = m.friction_n_at(600_050.5)
    held = m.friction_n_at(599_999)
    assert peak > moving * 1.3
    assert moving > held * 1.5
    assert held == pytest.approx(p.hold_ratio * res.glide(10, p.travel_steps), rel=0.01)
    # friction opposes the motion: negative while retracting
    plant.on_train(700_000, 5, 100, -1)
    assert m.friction_n_at(700_045) < 0


def test_incremental_plant_equals_batch_and_past_edits_recompute():
    plant, period = basal_plant(1.0, 3)
    batch = PressureModel(seed=4, plant=plant)
    batch.occlude(H, 2 * H)
    ts = np.arange(0, 3 * H, 7_001.0)
    want = batch.series(ts)
    live = SyringePlant()
    inc = PressureModel(seed=4, plant=live)
    got = []
    trains = iter(plant.trains)
    nxt = next(trains, None)
    for t in ts:
        while nxt is not None and nxt.t0_ms <= t:
            live.on_train(nxt.t0_ms, nxt.n, nxt.hz, nxt.direction)
            nxt = next(trains, None)
        if t >= H and not getattr(inc, "_occl", False):
            inc.occlude(H, 2 * H)  # given late: in the past of what was evaluated
            inc._occl = True
        got.append(inc.sensor_at(float(t)))
    assert got == list(want)
    # a train cut short after it was partly evaluated
    p2 = SyringePlant()
    p2.on_train(0, 100, 10, 1)
    m = PressureModel(quiet(), plant=p2)
    m.pressure_at(3_000)
    p2.on_truncate(5_000, 50)
    assert m.stored_nl_at(20_000) + m.delivered_nl_at(20_000) == pytest.approx(50 * NL)


def test_composes_with_the_syringe_model():
    plant, _ = basal_plant(1.0, 4)
    t, d = plant_steps(plant)
    delivery = SyringeModel(SyringeParams(), seed=2).run(t, d)
    m = PressureModel.from_delivery(delivery, seed=2)
    end = plant.trains[-1].t0_ms + 60_000
    assert m.delivered_nl_at(end) == pytest.approx(delivery.total_nl, rel=1e-9)


def test_deterministic_for_a_seed():
    plant, _ = basal_plant(1.0, 2)
    ts = np.arange(0, 2 * H, 3_001.0)
    a = PressureModel(seed=7, plant=plant).series(ts)
    b = PressureModel(seed=7, plant=plant).series(ts)
    c = PressureModel(seed=8, plant=plant).series(ts)
    assert list(a) == list(b)
    assert list(a) != list(c)


def test_speed_30_days_at_1u_per_hour():
    plant, period = basal_plant(1.0, 30 * 24)
    t = time.perf_counter()
    m = PressureModel(seed=0, plant=plant)
    m.occlude(10 * DAY, 10 * DAY + H)
    out = m.delivered_nl_at(30 * DAY)
    t_eval = time.perf_counter() - t
    t = time.perf_counter()
    n = 30 * 24 * 60
    for k in range(n):
        m.sensor_at(k * 60_000.0)
    t_sens = time.perf_counter() - t
    print(f"\n30 days at 1 U/h: {len(plant.trains)} steps evaluated in {t_eval:.2f} s; "
          f"{n} sensor samples in {t_sens:.2f} s ({t_sens / n * 1e6:.1f} us each)")
    assert out == pytest.approx(len(plant.trains) * NL, rel=1e-6)


# ---- battery ----------------------------------------------------------------------------------
def test_ocv_curve_is_monotonic():
    s = np.linspace(0, 1, 101)
    v = [ocv(x) for x in s]
    assert np.all(np.diff(v) > 0)
    assert v[0] == pytest.approx(3.0) and v[-1] == pytest.approx(4.2)


def test_battery_discharges_sags_under_load_and_swap_restores():
    plant, period = basal_plant(1.0, 24 * 14)
    b = BatteryModel(seed=1, plant=plant)
    idle_t = [d * DAY + period // 2 for d in range(0, 10)]  # between trains: idle current only
    v = [b.voltage_at(t) for t in idle_t]
    soc = [b.soc_at(t) for t in idle_t]
    assert np.all(np.diff(v) < 0) and np.all(np.diff(soc) < 0)
    # sag: during a train the motor draws motor_ma through R_int
    t_train = 5 * DAY
    t_train -= t_train % period
    during, after = b.voltage_at(t_train + 5), b.voltage_at(t_train + 200)
    assert during < after
    assert after - during == pytest.approx(BatteryParams().motor_ma / 1000 * b.r_int_at(t_train + 5), rel=0.01)
    # it runs flat, then reads 0 (protection circuit); a new cell restores it
    t_dead = next(t for t in range(0, 14 * DAY, H) if b.depleted_at(t))
    assert b.voltage_at(t_dead) == 0.0 and b.voltage_at(t_dead - 2 * H) > 3.0
    b.replace(t_dead + H)
    assert b.soc_at(t_dead + H + 1) == pytest.approx(1.0, abs=1e-4)
    assert b.voltage_at(t_dead + H + period // 2) > 4.1
    assert b.voltage_at(t_dead + H - 1) == 0.0  # history before the swap is kept
    print(f"\nbattery: 1200 mAh nominal, flat after {t_dead / DAY:.1f} days at 1 U/h "
          f"(cell {b.cell_at(0).capacity_mah:.0f} mAh, idle {b.cell_at(0).idle_ma:.2f} mA)")


def test_motor_load_costs_charge():
    idle = BatteryModel(seed=2, plant=SyringePlant())
    busy_plant, _ = basal_plant(5.0, 24)
    busy = BatteryModel(seed=2, plant=busy_plant)
    assert busy.soc_at(DAY) < idle.soc_at(DAY)
    trains_ms = len(busy_plant.trains) * (10 + BatteryParams().hold_ms)
    expect = trains_ms * BatteryParams().motor_ma / H / busy.cell_at(0).capacity_mah
    assert idle.soc_at(DAY) - busy.soc_at(DAY) == pytest.approx(expect, rel=1e-6)


def test_battery_deterministic_and_varies_by_seed():
    plant, _ = basal_plant(1.0, 24)
    a = [BatteryModel(seed=3, plant=plant).adc_at(t) for t in range(0, DAY, H)]
    b = [BatteryModel(seed=3, plant=plant).adc_at(t) for t in range(0, DAY, H)]
    assert a == b
    caps = {round(BatteryModel(seed=s).cell_at(0).capacity_mah, 3) for s in range(10)}
    assert len(caps) == 10
    m = BatteryModel(seed=3)
    assert m.counts_to_volts(m.adc_at(1000)) == pytest.approx(m.voltage_at(1000), abs=0.02)
