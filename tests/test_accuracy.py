"""Delivery accuracy: the IEC 60601-2-24 trumpet analysis, the syringe model and one real run."""
import json
import math

import numpy as np
import pytest

from hil.accuracy import trumpet as tr
from hil.sim.plant import SyringePlant
from hil.sim.syringe_model import SyringeModel, SyringeParams, plant_steps

NL = 50


def readings(rate_nl_h, factor=1.0, n_intervals=120, interval_s=30):
    t = np.arange(n_intervals + 1) * interval_s
    return t, rate_nl_h * factor * t / 3600


def steps(n, period_us=18_000_000, direction=1, t0_us=0):
    return [t0_us + i * period_us for i in range(n)], [direction] * n


# ---- trumpet analysis ---------------------------------------------------------------------------
def test_perfect_delivery_is_zero_everywhere():
    _, q = readings(10_000)
    res = tr.trumpet_curve(q, 10_000)
    assert res.overall_pct == pytest.approx(0, abs=1e-9)
    for p in res.points:
        assert p.max_pct == pytest.approx(0, abs=1e-9)
        assert p.min_pct == pytest.approx(0, abs=1e-9)


def test_constant_over_delivery_is_that_error_everywhere():
    _, q = readings(10_000, factor=1.02)
    res = tr.trumpet_curve(q, 10_000)
    assert res.overall_pct == pytest.approx(2.0)
    for p in res.points:
        assert p.max_pct == pytest.approx(2.0)
        assert p.min_pct == pytest.approx(2.0)


def test_windows_and_sample_counts_follow_the_standard():
    assert tr.WINDOWS_MIN == (2, 5, 11, 19, 31)
    t = tr.sample_times_s()
    assert len(t) == 241 and t[1] - t[0] == 30 and t[-1] == 7200  # every 30 s over 2 h
    _, q = readings(10_000)
    res = tr.trumpet_curve(q, 10_000)  # the second hour: 120 intervals, 121 readings
    assert res.samples == 121 and res.analysis_min == 60 and res.sample_interval_s == 30
    got = {p.window_min: (p.intervals_per_window, p.windows) for p in res.points}
    # P/S intervals per window; m = (T - P)/S + 1 windows sliding by one interval
    assert got == {2: (4, 117), 5: (10, 111), 11: (22, 99), 19: (38, 83), 31: (62, 59)}


def test_window_errors_find_a_lump():
    # 100 nL/h programmed, exact except one extra 10 nL in the interval 30..30.5 min
    t, q = readings(100)
    q = q + np.where(t >= 30.5 * 60, 10.0, 0.0)
    res = tr.trumpet_curve(q, 100)
    p2 = res.point(2)
    assert p2.max_pct == pytest.approx(100 * 10 / (100 * 2 / 60))  # 10 nL over a 3.33 nL window
    assert p2.min_pct == pytest.approx(0, abs=1e-9)
    assert res.overall_pct == pytest.approx(10.0)


def test_analyse_run_takes_the_second_hour():
    # under-delivers by 50 % in the first hour, exact in the second: the first hour must not count
    def volume_at(ts):
        ts = np.asarray(ts, float)
        return np.where(ts < 3600, 0.5 * ts, 1800 + (ts - 3600)) * 1000 / 3600
    res, t, q = tr.analyse_run(volume_at, 1000)
    assert len(t) == 241
    assert res.overall_pct == pytest.approx(0, abs=1e-9)
    assert res.point(2).min_pct == pytest.approx(0, abs=1e-9)


def test_bad_windows_are_refused():
    _, q = readings(1000)
    with pytest.raises(ValueError):
        tr.trumpet_curve(q, 1000, windows_min=(2.2,))
    with pytest.raises(ValueError):
        tr.trumpet_curve(q[:10], 1000, windows_min=(31,))


# ---- syringe model ------------------------------------------------------------------------------
def test_ideal_model_is_exactly_nominal():
    t, d = steps(1000)
    t2, d2 = steps(300, direction=-1, t0_us=t[-1] + 1)
    dl = SyringeModel(SyringeParams.ideal()).run(t + t2, d + d2)
    assert np.array_equal(dl.plunger_nl, dl.nominal_nl)
    assert dl.total_nl == 700 * NL
    assert dl.volume_at([0, 18, 18.5, 1e9]).tolist() == [NL, 2 * NL, 2 * NL, 700 * NL]


def test_ideal_model_on_a_plant_log():
    plant = SyringePlant()
    plant.on_train(1000, 5, 5, 1)  # 5 steps at 5 Hz from t = 1 s
    plant.on_train(2000, 5, 5, 1)
    plant.on_truncate(2500, 3)  # the second train was cut after 3 steps
    t, d = plant_steps(plant)
    assert t == [1_000_000, 1_200_000, 1_400_000, 1_600_000, 1_800_000, 2_000_000, 2_200_000, 2_400_000]
    dl = SyringeModel(SyringeParams.ideal()).run_plant(plant)
    assert dl.total_nl == plant.delivered_nl() == 8 * NL


def test_backlash_loses_the_configured_steps_after_a_reversal():
    p = SyringeParams.ideal().with_(backlash_steps=8)
    t, d = steps(100)
    tb, db = steps(20, direction=-1, t0_us=t[-1] + 1)
    tf, df = steps(30, t0_us=tb[-1] + 1)
    dl = SyringeModel(p).run(t + tb + tf, d + db + df)
    x = dl.plunger_nl / NL
    assert x[99] == pytest.approx(100)  # forward from the start: engaged, nothing lost
    assert np.allclose(x[100:108], 100)  # the first 8 steps back only cross the play
    assert x[119] == pytest.approx(100 - 12)  # then it retracts
    assert np.allclose(x[120:128], 88)  # forward again: 8 more lost
    assert x[-1] == pytest.approx(88 + 22)


def test_pitch_error_averages_out_over_whole_revolutions():
    p = SyringeParams.ideal().with_(pitch_periodic=0.04, pitch_phase_rad=0.7, step_angle_error=0.05)
    t, d = steps(1000)
    dl = SyringeModel(p).run(t, d)
    per_step = np.diff(np.concatenate(([0.0], dl.plunger_nl))) / NL
    assert per_step.max() > 1.03 and per_step.min() < 0.97  # it really varies step to step
    for revs in (1, 2, 5):
        assert dl.plunger_nl[200 * revs - 1] == pytest.approx(200 * revs * NL, abs=1e-6)
    # and a cumulative lead error is a plain scale
    dl = SyringeModel(SyringeParams.ideal().with_(lead_error=0.001)).run(t, d)
    assert dl.total_nl == pytest.approx(1000 * NL * 1.001)


def test_stick_slip_conserves_volume():
    p = SyringeParams.ideal().with_(stick_break_steps=40, stick_slip_steps=1.5, stick_jitter=0.3, primed=False)
    t, d = steps(5000)
    dl = SyringeModel(p, seed=3).run(t, d)
    x, nominal = dl.plunger_nl / NL, dl.nominal_nl / NL
    lag = nominal - x
    assert np.all(np.diff(x) >= 0)  # the plunger never runs backwards
    assert np.all(lag >= -1e-9)  # nothing is created: never ahead of the nut
    assert lag.max() <= 40 + 1.5 * 0.3 * 6  # what sticks is bounded by the break-loose compression
    assert x[38] == 0  # unprimed: the first steps only load the chain
    assert lag[-1] == pytest.approx(40 - 1.5, abs=1.5 * 1.6)  # at the end only the glide compression is held
    # it sticks and slips: some steps deliver nothing, some several steps' worth
    moves = np.diff(x[100:])
    assert (moves == 0).sum() > 100 and moves.max() > 1.2
    # long run: the average rate is the nominal one
    assert (x[-1] - x[999]) / (nominal[-1] - nominal[999]) == pytest.approx(1.0, abs=2 / 4000)


def test_line_compliance_delays_but_conserves():
    p = SyringeParams.ideal().with_(line_tau_s=60)
    t, d = steps(10)
    dl = SyringeModel(p).run(t, d)
    end = t[-1] / 1e6
    v = dl.volume_at([0, end, end + 60, end + 3600])
    assert v[0] < NL and v[1] < 10 * NL
    assert v[2] == pytest.approx(10 * NL - (10 * NL - v[1]) * math.exp(-1))
    assert v[3] == pytest.approx(10 * NL, rel=1e-9)
    assert np.all(np.diff(v) >= 0)


def test_seeded_variation_is_reproducible():
    t, d = steps(400)
    a = SyringeModel(SyringeParams(), seed=7).run(t, d).plunger_nl
    b = SyringeModel(SyringeParams(), seed=7).run(t, d).plunger_nl
    c = SyringeModel(SyringeParams(), seed=8).run(t, d).plunger_nl
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---- end to end: the real firmware in the simulator ---------------------------------------------
def test_end_to_end_at_1_uh(tmp_path):
    from hil.accuracy.__main__ import main

    assert main(["--rates", "1.0", "--out", str(tmp_path), "--seed", "1"]) == 0
    doc = json.loads((tmp_path / "trumpet.json").read_text())
    assert (tmp_path / "trumpet.png").stat().st_size > 10_000
    (rate,) = doc["rates"]
    assert rate["rate_U_h"] == 1.0
    assert rate["steps"] == 400  # 1 U/h for 2 h at 200 steps/U
    assert [p["window_min"] for p in rate["trumpet"]["points"]] == [2, 5, 11, 19, 31]
    assert abs(rate["overall_error_pct"]) < 3
    for p in rate["trumpet"]["points"][:2]:  # the hour is 30 disjoint 2-min or 12 disjoint 5-min windows
        assert p["min_pct"] <= rate["overall_error_pct"] <= p["max_pct"]
    ideal = rate["ideal_mechanism"]
    assert ideal["overall_pct"] == pytest.approx(0, abs=1e-9)  # the firmware itself is exact over the hour
    assert ideal["delivered_nl"] == 200 * NL
