"""hil.patient against simglucose's own T1DPatient, plus the model's basic physiology.

Validation: simglucose 0.2.11's T1DPatient (its equations, its scipy DOPRI5 integrator) is run inside
the test with the same inputs as ours over one simulated day: basal all day, a one-hour suspend, four
meals each with a carb-ratio bolus delivered in the meal's minute.

Tolerances, and why:
- integrator="dopri5" (default) is a port of the integrator simglucose uses, so it takes the same
  steps; what is left is floating-point rounding order, measured at ~1e-11 mg/dL. We allow 1e-3 mg/dL
  (and 1e-6 relative on every state): far below any equation slip we could make (the smallest ones
  move BG by > 0.01 mg/dL over a day), yet loose enough that if a different scipy/compiler build
  flipped one accept/reject decision of the step control (an error at the solver's own rtol = 1e-6,
  i.e. ~2e-4 mg/dL at 200 mg/dL), the test would not fail for it.
- integrator="rk4" (2 steps/min) is a different integrator; its error is measured at <= 0.02 mg/dL on
  these patients; we allow 0.05 mg/dL, well under a CGM's 1 mg/dL resolution.

simglucose as shipped takes ~10 s per patient-day (pandas attribute access in its ODE right-hand
side). The test runs it as shipped for one patient (and times it); for the others it runs the same
T1DPatient class with the same parameter values in a plain attribute container instead of a pandas
Series. The first test asserts that this gives bit-identical states to the shipped form.

Speed figures: `.venv/bin/pytest tests/test_patient_model.py -q -s -k speed`
"""
from __future__ import annotations

import importlib.util
import sys
import time
import types
import warnings

import pytest

from hil.patient import REST, Exercise, Patient, load_all, patient_names, session
from hil.patient.params import STATE_COLUMNS

DAY = 1440
MEALS = {7 * 60: 45.0, 12 * 60: 70.0, 16 * 60: 15.0, 19 * 60: 80.0}   # minute -> g announced
SUSPEND = range(2 * 60, 3 * 60)                                       # basal off, minutes
SHIPPED = "adolescent#001"
VALIDATED = ["adolescent#007", "adult#001", "adult#007", "child#001", "child#005"]

DOPRI5_BG_TOL = 1e-3      # mg/dL
DOPRI5_STATE_RTOL = 1e-6
RK4_BG_TOL = 0.05         # mg/dL


def day_inputs(basal_u_per_min: float, cr: float) -> list[tuple[float, float]]:
    """(carbs announced g, insulin U/min) for each minute of the validation day."""
    out = []
    for m in range(DAY):
        carbs = MEALS.get(m, 0.0)
        insulin = 0.0 if m in SUSPEND else basal_u_per_min
        if carbs:
            insulin += carbs / cr       # the meal bolus, delivered within the meal's minute
        out.append((carbs, insulin))
    return out


# ---- simglucose, the reference ------------------------------------------------------------------

def _simglucose_t1dpatient():
    """simglucose.patient.t1dpatient, imported without running simglucose/__init__.py (which
    imports gym 0.9.4, not installed: simglucose is installed with --no-deps)."""
    spec = importlib.util.find_spec("simglucose")
    if spec is None:
        pytest.skip("simglucose not installed (pip install --no-deps simglucose==0.2.11): no reference")
    for dep in ("numpy", "scipy", "pandas", "pkg_resources"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"simglucose's patient module needs {dep}, not installed: no reference")
    if "simglucose" not in sys.modules:
        sys.modules["simglucose"] = importlib.util.module_from_spec(spec)   # package, __init__ not run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # pkg_resources' deprecation notice
        from simglucose.patient import t1dpatient
    return t1dpatient


@pytest.fixture(scope="module")
def sg():
    return _simglucose_t1dpatient()


def _sg_plain(sg, name):
    """simglucose's T1DPatient with its parameter row as plain floats (same values, no pandas)."""
    import numpy as np
    import pandas as pd
    df = pd.read_csv(sg.PATIENT_PARA_FILE)
    row = df.loc[df.Name == name].squeeze()
    ns = types.SimpleNamespace(**{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return sg.T1DPatient(ns, init_state=np.array(row.iloc[2:15].values, dtype=float))


def _run_sg(sg, p, inputs):
    import numpy as np
    states = []
    t0 = time.perf_counter()
    for carbs, insulin in inputs:
        p.step(sg.Action(CHO=carbs, insulin=insulin))
        states.append(np.array(p.state, dtype=float))
    return np.array(states), time.perf_counter() - t0


def _run_ours(p: Patient, inputs):
    import numpy as np
    states = []
    t0 = time.perf_counter()
    for carbs, insulin in inputs:
        p.step(carbs, insulin)
        states.append(p.state)
    return np.array(states), time.perf_counter() - t0


def _errors(ours, ref, vg):
    import numpy as np
    bg = float(np.abs(ours[:, 12] - ref[:, 12]).max() / vg)        # Gs/Vg: simglucose's "BG"
    gp = float(np.abs(ours[:, 3] - ref[:, 3]).max() / vg)          # Gp/Vg: plasma
    scale = np.maximum(np.abs(ref).max(axis=0), 1e-12)
    rel = float((np.abs(ours - ref).max(axis=0) / scale).max())
    return bg, gp, rel


def _check(name, ref, vg, inputs):
    ours, t_d5 = _run_ours(Patient.from_name(name), inputs)
    ours_rk, t_rk = _run_ours(Patient.from_name(name, integrator="rk4"), inputs)
    bg, gp, rel = _errors(ours, ref, vg)
    bg_rk, gp_rk, rel_rk = _errors(ours_rk, ref, vg)
    print(f"\n{name}: dopri5 max|dBG| {bg:.1e} mg/dL (plasma {gp:.1e}), state rel {rel:.1e}, {t_d5:.3f} s/day;"
          f" rk4 max|dBG| {bg_rk:.1e} (plasma {gp_rk:.1e}), {t_rk:.3f} s/day;"
          f" BG range {ref[:, 12].min() / vg:.0f}-{ref[:, 12].max() / vg:.0f} mg/dL")
    assert bg < DOPRI5_BG_TOL and gp < DOPRI5_BG_TOL, (bg, gp)
    assert rel < DOPRI5_STATE_RTOL, rel
    assert bg_rk < RK4_BG_TOL and gp_rk < RK4_BG_TOL, (bg_rk, gp_rk)
    return t_d5, t_rk


def test_speed_and_match_against_simglucose_as_shipped(sg):
    import numpy as np
    shipped = sg.T1DPatient.withName(SHIPPED)
    vg = float(shipped._params.Vg)
    ours = Patient.from_name(SHIPPED)
    inputs = day_inputs(ours.basal_u_per_min, ours.cr)
    assert ours.basal_u_per_min == pytest.approx(float(shipped._params.u2ss * shipped._params.BW / 6000), rel=1e-15)
    ref, t_shipped = _run_sg(sg, shipped, inputs)
    plain, t_plain = _run_sg(sg, _sg_plain(sg, SHIPPED), inputs)
    # The parameter container makes no difference to simglucose's numbers, only to its speed.
    assert np.array_equal(ref, plain)
    t_d5, t_rk = _check(SHIPPED, ref, vg, inputs)
    print(f"one patient-day ({SHIPPED}): simglucose as shipped {t_shipped:.2f} s, simglucose with plain "
          f"params {t_plain:.2f} s, ours dopri5 {t_d5:.3f} s ({t_shipped / t_d5:.0f}x), "
          f"ours rk4 {t_rk:.3f} s ({t_shipped / t_rk:.0f}x)")


@pytest.mark.parametrize("name", VALIDATED)
def test_matches_simglucose_over_a_day(sg, name):
    p = _sg_plain(sg, name)
    ours = Patient.from_name(name)
    inputs = day_inputs(ours.basal_u_per_min, ours.cr)
    ref, _ = _run_sg(sg, p, inputs)
    _check(name, ref, ours.params["Vg"], inputs)


# ---- parameters ---------------------------------------------------------------------------------

def test_cohort_of_thirty_with_quest_and_basal():
    names = patient_names()
    assert len(names) == 30
    assert names[0] == "adolescent#001" and names[10] == "adult#001" and names[29] == "child#010"
    cohort = Patient.cohort()
    assert [p.name for p in cohort] == names
    for group in ("adolescent", "adult", "child"):
        assert len(Patient.cohort(group)) == 10
    for p in cohort:
        v = p.params.values
        assert len(v) == 61                       # every numeric column of vpatient_params.csv
        assert p.basal_u_per_min == v["u2ss"] * v["BW"] / 6000
        assert p.cr > 0 and p.cf > 0 and p.tdi > 0
        assert p.glucose_mgdl == pytest.approx(v["Gb"], rel=1e-9)   # starts at basal glucose
        assert p.interstitial_mgdl == pytest.approx(v["Gb"], rel=1e-9)
    a1 = Patient.from_name("adolescent#001")
    assert (a1.cr, a1.params.quest.age) == (12.0, 18.0)
    assert a1.cf == pytest.approx(15.0360283441)
    assert a1.tdi == pytest.approx(36.7339146827)
    with pytest.raises(KeyError):
        Patient.from_name("adult#011")


def test_params_equal_what_pandas_reads():
    pd = pytest.importorskip("pandas")
    from hil.patient.params import PARAMS_FILE, params_dir
    df = pd.read_csv(params_dir() / PARAMS_FILE)
    table = load_all()
    for _, row in df.iterrows():
        p = table[row["Name"]]
        for col, val in row.items():
            if col != "Name":
                assert p[col] == float(val), (row["Name"], col)
        assert p.x0 == tuple(float(row[c]) for c in STATE_COLUMNS)


# ---- physiology ---------------------------------------------------------------------------------

def test_basal_only_holds_fasting_glucose_all_cohort():
    for p in Patient.cohort():
        for _ in range(DAY):
            p.step(0.0, p.basal_u_per_min)
        assert abs(p.glucose_mgdl - p.params.fasting_mgdl) < 0.1, p
        assert abs(p.interstitial_mgdl - p.params.fasting_mgdl) < 0.1, p


@pytest.mark.parametrize("name", ["adolescent#003", "adult#004", "child#002"])
def test_more_insulin_lowers_glucose(name):
    finals = []
    for factor in (0.8, 1.0, 1.2, 1.5):
        p = Patient.from_name(name)
        p.advance(6 * 60, insulin_u=factor * p.basal_u_per_min * 6 * 60)
        finals.append(p.glucose_mgdl)
    assert finals == sorted(finals, reverse=True) and finals[0] - finals[-1] > 10, finals
    # a meal bolus blunts the meal's peak
    peaks = []
    for bolus in (0.0, 1.0):
        p = Patient.from_name(name)
        peak = 0.0
        for m in range(5 * 60):
            carbs = 50.0 if m == 30 else 0.0
            p.step(carbs, p.basal_u_per_min + (bolus * carbs / p.cr))
            peak = max(peak, p.glucose_mgdl)
        peaks.append(peak)
    assert peaks[1] < peaks[0] - 10, peaks


@pytest.mark.parametrize("name", ["adolescent#001", "adult#001", "child#001"])
def test_exercise_lowers_glucose(name):
    def run(peak: Exercise, bolus_u: float = 0.0):
        p = Patient.from_name(name, integrator="rk4")
        g = []
        for m in range(5 * 60):
            ins = p.basal_u_per_min + (bolus_u if m == 60 else 0.0)
            p.step(0.0, ins, session(m, 60, 60, peak))
            g.append(p.glucose_mgdl)
        return g

    rest = run(REST)
    uptake = run(Exercise(glucose_uptake=1.5))
    assert min(uptake) < min(rest) - 5
    assert uptake[119] < rest[119] - 5          # lower at the end of the hour of activity
    assert abs(uptake[-1] - rest[-1]) < abs(uptake[119] - rest[119])  # and recovering after
    # insulin sensitivity amplifies insulin above basal (X is 0 at the basal steady state)...
    def run_bolus(peak: Exercise):
        p = Patient.from_name(name, integrator="rk4")
        bolus_u = 0.05 * p.tdi
        g = []
        for m in range(6 * 60):
            p.step(0.0, p.basal_u_per_min + (bolus_u if m == 0 else 0.0), session(m, 60, 120, peak))
            g.append(p.glucose_mgdl)
        return g

    bolus, bolus_ex = run_bolus(REST), run_bolus(Exercise(insulin_sensitivity=2.0))
    assert max(a - b for a, b in zip(bolus, bolus_ex, strict=True)) > 5
    # ...and with basal alone it changes nothing (documented in hil/patient/exercise.py)
    assert max(abs(a - b) for a, b in zip(run(Exercise(insulin_sensitivity=2.0)), rest, strict=True)) < 1e-9


# ---- meal and input handling --------------------------------------------------------------------

def test_meal_is_eaten_at_five_grams_per_minute_and_cgm_lags():
    p = Patient.from_name("adult#001")
    p.step(52.0, p.basal_u_per_min)
    assert p.is_eating and p.planned_meal == 47.0
    eaten_minutes = 1
    while p.planned_meal > 0:
        p.step(0.0, p.basal_u_per_min)
        eaten_minutes += 1
    assert eaten_minutes == 11                  # 10 x 5 g + 2 g
    p.step(0.0, p.basal_u_per_min)
    assert not p.is_eating
    gp, gs = [], []
    for _ in range(4 * 60):
        p.step(0.0, p.basal_u_per_min)
        gp.append(p.glucose_mgdl)
        gs.append(p.interstitial_mgdl)
    assert max(gp) > p.params.fasting_mgdl + 20
    assert gs.index(max(gs)) > gp.index(max(gp))  # the interstitial glucose the CGM sees lags plasma


def test_advance_spreads_delivered_units_and_validates_inputs():
    a, b = Patient.from_name("child#003"), Patient.from_name("child#003")
    a.advance(5, insulin_u=0.5, carbs_g=10)
    b.step(10, 0.1)
    for _ in range(4):
        b.step(0, 0.1)
    assert a.state == b.state and a.t == b.t == 5
    assert a.insulin_on_board_u > 0.4
    with pytest.raises(ValueError):
        a.step(0, -0.1)
    with pytest.raises(ValueError):
        a.step(-1, 0)
    with pytest.raises(ValueError):
        a.advance(0)
    a.reset()
    assert a.t == 0 and a.state == list(a.params.x0)
