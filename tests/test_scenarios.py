"""The scenario runner (hil/scenario, docs/scenarios.md): shipped scenarios pass, failures and
invalid files are reported the way QA reads them."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from hil.scenario import cli
from hil.scenario.model import ScenarioError, parse, parse_time

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


def run(tmp_path: Path, *files, extra=()) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    code = cli.main([str(f) for f in files] + ["--report", str(report), *extra])
    return code, json.loads(report.read_text())


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- shipped scenarios --------------------------------------------------------------------------
def test_shipped_scenarios_exist():
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "basal_day.yaml", "bolus_cancel.yaml", "limits.yaml", "therapy_3day.yaml",
            "reservoir_change.yaml", "cgm.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenario_passes(tmp_path, path):
    code, rep = run(tmp_path, path)
    scn = rep["scenarios"][0]
    failed = [(s["index"], c) for s in scn["steps"] for c in s["checks"] if c["result"] != "pass"]
    assert code == 0, (scn["error"], failed)
    assert rep["ok"] and rep["exit_code"] == 0
    assert scn["result"] == "pass" and scn["counts"]["fail"] == 0 and scn["counts"]["pass"] > 0
    assert scn["link"]["events_dropped"] == 0
    # Every shipped scenario ends suspended (nothing in flight): the pump's own totals agree
    # with the plant's step log to the step - therapy, priming and plunger travel apart.
    assert scn["pump"]["state"] == "suspended"
    assert scn["pump"]["delivered_steps"] == scn["plant"]["steps"]
    assert scn["pump"]["prime_steps"] == scn["plant"]["prime_steps"]
    assert scn["pump"]["plunger_steps"] == scn["plant"]["net_steps"]


def test_default_day_totals(tmp_path):
    code, rep = run(tmp_path, ROOT / "scenarios" / "default.yaml")
    assert code == 0
    scn = rep["scenarios"][0]
    assert scn["virtual_ms"] == 24 * 3600 * 1000
    assert scn["pump"]["delivered_total_U"] == pytest.approx(34.825)
    assert scn["plant"]["delivered_U"] == pytest.approx(34.825)
    # the setup's 10 s prime and 0.3 U cannula fill moved the plunger, but are not therapy
    assert scn["pump"]["primed_U"] == scn["plant"]["primed_U"] == pytest.approx(2.105)
    assert scn["plant"]["net_steps"] == scn["plant"]["steps"] + scn["plant"]["prime_steps"]
    assert [s["cmd"] for s in scn["setup"]][-7:] == ["rewind", "reservoir_insert", "prime_start", "prime_stop",
                                                     "cannula_fill", "time_set", "resume"]
    assert rep["totals"]["checks_failed"] == 0 and rep["totals"]["virtual_time"] == "24:00:00"
    kinds = {c["check"] for s in scn["steps"] for c in s["checks"]}
    assert {"plant_delivered", "pump_matches_plant", "bolus_speed", "event", "expect_refused", "unchanged",
            "temp_basal", "extended", "history", "reply", "profile", "prime", "clock"} <= kinds
    # The CGM over simulated Bluetooth all day: a reading every 5 minutes, every one accepted and
    # logged, the 15-minute link loss reconnected and its readings backfilled by RACP.
    cgm = scn["cgm"]
    assert cgm["paired"] == cgm["sensor"] and cgm["link"] == "up" and cgm["events_lost"] == 0
    assert cgm["readings"] >= 285 and cgm["logged"] == cgm["readings"] and cgm["rejected"] == {}
    assert cgm["backfilled"] >= 1 and cgm["link_downs"] == 1 and cgm["reconnects"] == 1
    assert cgm["radio"]["connects"] == {cgm["sensor"]: 2} and not cgm["radio"]["errors"]


def test_basal_day_is_exactly_24_units(tmp_path):
    code, rep = run(tmp_path, ROOT / "scenarios" / "basal_day.yaml")
    assert code == 0
    scn = rep["scenarios"][0]
    assert scn["plant"]["steps"] == 4800
    day = [c for s in scn["steps"] for c in s["checks"] if c["what"] == "plant delivered 00:00..24:00"]
    assert day and day[0]["actual"].startswith("24.000 U (4800 steps)")


# ---- failures -----------------------------------------------------------------------------------
FAILING = """
name: deliberately failing
description: wrong numbers on purpose
pump: {reservoir: 100, basal: ["00:00=1.0"]}
steps:
  - at: "01:00"
    expect:
      state: running
      plant_delivered: {from: "00:00", to: "01:00", equals: 1.5}
  - at: "+0s"
    bolus: 20
  - at: "+1m"
    expect:
      reservoir: 50
      event: {name: bolus, phase: complete}
"""


def test_failing_scenario_reports_expected_and_actual(tmp_path, capsys):
    code, rep = run(tmp_path, write(tmp_path, FAILING))
    assert code == 1
    assert rep["ok"] is False and rep["exit_code"] == 1
    scn = rep["scenarios"][0]
    assert scn["result"] == "fail" and scn["error"] is None
    steps = scn["steps"]
    assert [s["result"] for s in steps] == ["fail", "fail", "fail"]
    plant = [c for c in steps[0]["checks"] if c["check"] == "plant_delivered"][0]
    assert plant["result"] == "fail"
    assert plant["expected"] == "1.500 U" and plant["actual"] == "1.000 U (200 steps)"
    assert [c["result"] for c in steps[0]["checks"] if c["check"] == "state"] == ["pass"]
    refused = steps[1]["checks"][0]  # 20 U is over the default 10 U max and nobody expected that
    assert refused["result"] == "fail" and refused["expected"] == "accepted"
    assert refused["actual"].startswith("refused: limit")
    res = [c for c in steps[2]["checks"] if c["check"] == "reservoir"][0]
    assert res["expected"] == "50.000 U" and res["actual"] == "98.985 U" and res["result"] == "fail"
    ev = [c for c in steps[2]["checks"] if c["check"] == "event"][0]
    assert ev["result"] == "fail" and "no 'bolus' events" in ev["actual"]
    assert rep["totals"]["checks_failed"] == 4 and rep["totals"]["checks_passed"] == 1
    out = capsys.readouterr().out
    assert "expected 1.500 U" in out and "actual   1.000 U (200 steps)" in out and "FAILED" in out


def test_unstartable_pump_aborts_with_exit_3(tmp_path):
    p = write(tmp_path, 'name: x\nsteps:\n  - at: "00:01"\n    expect: {state: running}\n')
    code, rep = run(tmp_path, p, extra=["--micropython", str(tmp_path / "no-such-micropython")])
    assert code == 3
    scn = rep["scenarios"][0]
    assert "could not start the pump" in scn["error"]
    assert scn["steps"][0]["result"] == "not run"


# ---- invalid files ------------------------------------------------------------------------------
HEAD = 'name: bad\npump: {reservoir: 50}\nsteps:\n  - at: "00:00"\n    expect: {state: running}\n'

INVALID = {
    "time": (HEAD + '  - at: "25:61"\n    suspend: true\n', ["step 2", "field 'at'", "25:61"]),
    "backwards": (HEAD + '  - at: "01:00"\n    suspend: true\n  - at: "00:30"\n    resume: true\n',
                  ["step 3", "before the previous step"]),
    "amount": (HEAD + '  - at: "+1m"\n    bolus: 2.5x\n', ["step 2", "field 'bolus'", "not a number"]),
    "precision": (HEAD + '  - at: "+1m"\n    bolus: 0.0005\n', ["field 'bolus'", "0.001 U"]),
    "two actions": (HEAD + '  - at: "+1m"\n    bolus: 1\n    suspend: true\n', ["one action per step"]),
    "unknown key": (HEAD + '  - at: "+1m"\n    bolsu: 1\n', ["field 'bolsu'", "unknown key"]),
    "bare expectation": (HEAD + '  - at: "+1m"\n    reservoir_left: 1\n', ["field 'reservoir_left'"]),
    "outside expect": (HEAD + '  - at: "+1m"\n    basal_rate: 1\n', ["field 'basal_rate'", "under 'expect:'"]),
    "refusal code": (HEAD + '  - at: "+1m"\n    bolus: 20\n    expect_refused: limits\n',
                     ["field 'expect_refused'", "unknown refusal code"]),
    "future plant": (HEAD + '  - at: "01:00"\n    expect:\n      plant_delivered: {to: "02:00", equals: 1}\n',
                     ["field 'expect.plant_delivered'", "after this step"]),
    "approx without tol": (HEAD + '  - at: "+1m"\n    expect:\n      reservoir: {approx: 49}\n',
                           ["field 'expect.reservoir'", "needs 'tol'"]),
    "segments": (HEAD.replace("{reservoir: 50}", '{reservoir: 50, basal: ["0:00-1"]}'),
                 ["field 'pump.basal'", "HH:MM=RATE"]),
    "limit name": (HEAD + '  - at: "+1m"\n    limits: {max_bolsu: 5}\n', ["field 'limits.max_bolsu'"]),
    "no steps": ("name: bad\nsteps: []\n", ["'steps' is required"]),
    "yaml": ("name: bad\nsteps: [\n", ["not valid YAML"]),
    "duplicate": (HEAD + '  - at: "+1m"\n    expect: {state: running, state: suspended}\n',
                  ["duplicate key 'state'"]),
    "speed without bolus": (HEAD + '  - at: "+1m"\n    expect:\n      bolus_speed: {approx: 1.5, tol: 0.1}\n',
                            ["field 'expect.bolus_speed'", "needs 'from'"]),
    "old reservoir action": (HEAD + '  - at: "+1m"\n    reservoir: 100\n', ["field 'reservoir'", "rewind, insert"]),
    "temp both": (HEAD + '  - at: "+1m"\n    temp_basal: {percent: 50, rate: 1.0, minutes: 30}\n',
                  ["field 'temp_basal'", "exactly one of percent and rate"]),
    "temp no minutes": (HEAD + '  - at: "+1m"\n    temp_basal: {percent: 50}\n', ["needs minutes"]),
    "cancel kind": (HEAD + '  - at: "+1m"\n    cancel_bolus: both\n', ["field 'cancel_bolus'", "normal, extended"]),
    "extended without minutes": (HEAD + '  - at: "+1m"\n    bolus: {extended: 2.0}\n',
                                 ["field 'bolus'", "'minutes'"]),
    "bolus key": (HEAD + '  - at: "+1m"\n    bolus: {later: 2.0}\n', ["field 'bolus.later'", "unknown key"]),
    "clock": (HEAD + '  - at: "+1m"\n    time: "2026-13-01T07:00"\n', ["field 'time'", "local date and time"]),
    "pump clock": (HEAD.replace("{reservoir: 50}", '{reservoir: 50, time: "07:00"}'), ["field 'pump.time'"]),
    "prime duration": (HEAD.replace("{reservoir: 50}", "{reservoir: 50, prime: 10}"),
                       ["field 'pump.prime'", "duration"]),
    "active profile": (HEAD.replace("{reservoir: 50}", "{reservoir: 50, active_profile: sport}"),
                       ["field 'pump.active_profile'", "not one of the profiles"]),
    "profile name": (HEAD + '  - at: "+1m"\n    select_profile: "two words"\n', ["field 'select_profile'"]),
    "prime word": (HEAD + '  - at: "+1m"\n    prime: go\n', ["field 'prime'", "start or stop"]),
    "calc without action": (HEAD + '  - at: "+1m"\n    expect:\n      calc: {suggested: 1.0}\n',
                            ["field 'expect.calc'", "needs an action"]),
    "calc ratio": (HEAD + '  - at: "+1m"\n    calc_set: {carb_ratio: ["00:00=10.25"], sensitivity: ["00:00=50"], '
                   'target: ["00:00=100-120"]}\n', ["field 'calc_set.carb_ratio'", "0.1 g/U"]),
    "history type": (HEAD + '  - at: "+1m"\n    expect:\n      history: {type: bolus_finished}\n',
                     ["field 'expect.history'", "unknown history type"]),
    "history field": (HEAD + '  - at: "+1m"\n    expect:\n      history: {type: bolus_done, amount: 1}\n',
                      ["unknown field 'amount'", "delivered"]),
    "plant kind": (HEAD + '  - at: "+1m"\n    expect:\n      plant_delivered: {kind: prime, equals: 0}\n',
                   ["field 'expect.plant_delivered'", "therapy, service, all"]),
    "status object": (HEAD + '  - at: "+1m"\n    expect:\n      temp_basal: 50\n', ["field 'expect.temp_basal'"]),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_file_rejected_before_the_pump_starts(tmp_path, capsys, no_pump, case):
    text, needles = INVALID[case]
    good = write(tmp_path, HEAD, "good.yaml")
    bad = write(tmp_path, text, "bad.yaml")
    code, rep = run(tmp_path, good, bad)
    assert code == 2
    assert rep["exit_code"] == 2 and rep["scenarios"] == []
    err = rep["invalid"][0]["error"]
    assert err.startswith(str(bad))
    for n in needles:
        assert n in err, err
    out = capsys.readouterr().out
    assert "invalid scenario" in out and "nothing was run" in out


def test_error_names_the_line(tmp_path):
    with pytest.raises(ScenarioError) as ei:
        parse(HEAD + '  - at: "+1m"\n    note: x\n    bolus: -1\n', "f.yaml")
    assert ei.value.line == 8 and ei.value.step == 2 and ei.value.field == "bolus"
    assert str(ei.value).startswith("f.yaml:8: step 2 (at +1m), field 'bolus':")


# ---- the format -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, prev, ms", [
    ("06:30", 0, 390 * 60_000),
    ("24:00", 0, 24 * 3_600_000),
    ("36:15:30", 0, (36 * 3600 + 15 * 60 + 30) * 1000),
    ("+30s", 60_000, 90_000),
    ("+2h", 0, 7_200_000),
    ("+1h30m", 1000, 1000 + 5_400_000),
    ("+90m", 0, 5_400_000),
    ("+05:00", 1000, 301_000),
    ("+1:00:05", 0, 3_605_000),
    ("+0s", 5000, 5000),
])
def test_time_grammar(text, prev, ms):
    assert parse_time(text, prev) == ms


def test_unquoted_times_and_decimals_are_exact():
    # YAML 1.1 would read 12:30 as the integer 750 and 0.1 as a binary float.
    scn = parse("name: t\npump:\n  basal: [00:00=0.1, 12:30=1.15]\nsteps:\n  - at: 12:30\n    bolus: 0.1\n"
                "  - at: +1m\n    expect:\n      reservoir: {approx: 299.9, tol: 0.001}\n")
    assert scn.steps[0].t_ms == 750 * 60_000
    assert scn.setup.segments == [0, 100, 750, 1150]  # the protocol's flat form
    assert scn.steps[0].action.args == {"mU": 100}
    assert scn.steps[1].t_ms == 751 * 60_000


def test_board_mode_skips_plant_checks(tmp_path):
    """--port runs in wall-clock time against any console URL; here a realtime simulator."""
    from hil.sim.firmware import SimPump

    p = write(tmp_path, """
name: on a board
pump: {reservoir: 10, basal: ["00:00=1.0"]}
steps:
  - at: "00:00:01"
    bolus: 0.05
    expect:
      event: {name: bolus, phase: started}
  - at: "+5s"
    expect:
      state: running
      event: {name: bolus, phase: complete, delivered: 0.05}
      plant_delivered: {from: "00:00", equals: 0.05}
""")
    with SimPump(mode="realtime") as sim:
        code, rep = run(tmp_path, p, extra=["--port", sim.console_url])
    scn = rep["scenarios"][0]
    assert code == 0, scn
    assert rep["target"] == sim.console_url
    assert scn["counts"]["skip"] == 1 and scn["counts"]["fail"] == 0
    assert scn["virtual_ms"] >= 6000


# ---- the therapy actions and expectations -----------------------------------------------------------
def test_new_actions_parse_to_protocol_commands():
    scn = parse("""
name: t
pump: {reservoir: 100, prime: 1m30s, cannula: 0.3, time: "2026-11-22T07:00", profiles: {sport: ["00:00=0.5"]},
       active_profile: sport, limits: {max_hour: 12, max_day: 80, max_iob: 8}}
steps:
  - {at: "00:01", bolus: {now: 1.5, extended: 2.0, minutes: 90}}
  - {at: "+0s", bolus: {extended: 1.0, minutes: 30}}
  - {at: "+0s", cancel_bolus: extended}
  - {at: "+0s", temp_basal: {rate: 0.75, minutes: 45}}
  - {at: "+0s", temp_basal: {percent: 120, minutes: 30}}
  - {at: "+0s", cancel_temp: true}
  - {at: "+0s", profile: {set: {night: ["00:00=0.4", "06:00=0.9"]}}}
  - {at: "+0s", profile: {delete: night}}
  - {at: "+0s", select_profile: default}
  - {at: "+0s", time: "2026-11-23T00:00"}
  - {at: "+0s", calc_set: {carb_ratio: ["00:00=10", "12:00=8.5"], sensitivity: ["00:00=45"],
                           target: ["00:00=100-120", "22:00=110"], dia_min: 240}}
  - {at: "+0s", calc: {carbs: 30, bg: 150}, expect: {calc: {suggested: 1.0, capped_by: []}}}
  - {at: "+0s", rewind: true}
  - {at: "+0s", insert: 200}
  - {at: "+0s", prime: start}
  - {at: "+0s", fill: 0}
""")
    su = scn.setup
    assert (su.prime_ms, su.cannula_mu, su.active_profile) == (90_000, 300, "sport")
    assert su.clock_s == (datetime.datetime(2026, 11, 22, 7) - datetime.datetime(2000, 1, 1)).total_seconds()
    assert su.profiles == {"sport": [0, 500]}
    assert su.limits == {"max_hour_mU": 12000, "max_day_mU": 80000, "max_iob_mU": 8000}
    got = [(s.action.cmd, s.action.args) for s in scn.steps]
    assert got == [
        ("bolus", {"mU": 1500, "ext_mU": 2000, "minutes": 90}),
        ("bolus", {"ext_mU": 1000, "minutes": 30}),
        ("bolus_cancel", {"kind": "extended"}),
        ("temp_basal", {"rate_mUh": 750, "minutes": 45}),
        ("temp_basal", {"percent": 120, "minutes": 30}),
        ("temp_basal_cancel", {}),
        ("profile_set", {"name": "night", "segments": [0, 400, 360, 900]}),
        ("profile_delete", {"name": "night"}),
        ("profile_select", {"name": "default"}),
        ("time_set", {"local_s": int((datetime.datetime(2026, 11, 23) - datetime.datetime(2000, 1, 1)).total_seconds())}),
        ("calc_set", {"cr": [0, 100, 720, 85], "isf": [0, 45], "target": [0, 100, 120, 1320, 110, 110],
                      "dia_min": 240}),
        ("bolus_calc", {"carbs_g": 30, "bg_mgdl": 150}),
        ("rewind", {}), ("reservoir_insert", {"mU": 200000}), ("prime_start", {}), ("cannula_fill", {"mU": 0}),
    ]
    assert scn.steps[0].action.label == "combo bolus 1.500 U now + 2.000 U over 90 min"


THERAPY = """
name: therapy kinds
pump:
  reservoir: 100
  prime: 3s
  time: "2026-11-22T06:00"
  basal: ["00:00=0.6", "07:00=1.2"]
  profiles: {night: ["00:00=0.4"]}
  limits: {max_hour: 12, max_iob: 3}
steps:
  - at: "00:00"
    expect:
      clock: "2026-11-22T06:00"
      limits: {max_hour: 12, max_day: 120, max_iob: 3}
      basal_rate: 0.6
      # two whole 1 s trains of 40 steps and the first step of the third
      prime: 0.405
      plant_delivered: {kind: service, equals: 0.405}
      temp_basal_running: false
  - at: "01:00"
    note: 07:00 local
    temp_basal: {rate: 0.3, minutes: 30}
    expect:
      basal_rate: 0.3
      temp_basal_running: true
      temp_basal: {rate: 0.3, remaining_s: 1800, percent: -1}
      event: {name: temp_basal, phase: started, rate: 0.3}
      history: {type: temp_start, percent: -1, minutes: 30}
  - at: "+10m"
    cancel_temp: true
    expect:
      event: {name: temp_basal, phase: cancelled}
      basal_rate: 1.2
      no_history: temp_start
  - at: "+0s"
    time: "2026-11-22T23:00"
    expect:
      clock: "2026-11-22T23:00"
      event: {name: time}
      history: {type: time_set, local: "2026-11-22T23:00", previous: "2026-11-22T07:10"}
  - at: "+0s"
    profile: {set: {late: ["00:00=0.2", "23:00=0.8"]}}
    expect:
      profiles: {late: ["00:00=0.2", "23:00=0.8"]}
  - at: "+0s"
    select_profile: late
    expect: {profile: late, basal_rate: 0.8}
  - at: "+0s"
    profile: {delete: night}
    expect:
      reply: {profiles: [default, late]}
  - at: "+0s"
    profile: {delete: late}
    expect_refused: state
  - at: "+0s"
    bolus: {now: 2.0, extended: 1.0, minutes: 60}
  - at: "+30s"
    expect:
      normal_bolus: {requested: 2.0, delivered: {min: 0.6, max: 0.8}}
      extended: {requested: 1.0, minutes: 60}
  - at: "+0s"
    cancel_bolus: normal
    expect:
      bolus_running: false
      extended_running: true
      reply: {kind: normal, phase: cancelled}
      history: {type: bolus_cancel, kind: normal, requested: 2.0}
  - at: "+0s"
    calc_set: {carb_ratio: ["00:00=10"], sensitivity: ["00:00=50"], target: ["00:00=100-120"]}
  - at: "+0s"
    note: 40 g would be 4.0 U, but max_iob (3 U) less what is on board caps it
    calc: {carbs: 40}
    expect:
      calc: {carbs: 4.0, correction: 0, capped_by: max_iob_mU, suggested: {max: 2.5}, target: 100-120}
  - at: "+0s"
    bolus: 20
    expect_refused: limit
  - at: "+1h"
    suspend: true
    expect:
      last_hour: {min: 1.0, max: 3.0}
      extended: false
      pump_matches_plant: true
      plant_delivered: {kind: all, equals: {min: 0}}
"""


def test_therapy_actions_and_expectations_in_the_simulator(tmp_path):
    code, rep = run(tmp_path, write(tmp_path, THERAPY.replace("equals: {min: 0}", "min: 0")))
    scn = rep["scenarios"][0]
    failed = [(s["index"], c) for s in scn["steps"] for c in s["checks"] if c["result"] != "pass"]
    assert code == 0, (scn["error"], failed)
    kinds = {c["check"] for s in scn["steps"] for c in s["checks"]}
    assert {"clock", "temp_basal", "temp_basal_running", "history", "no_history", "profiles", "reply", "calc",
            "normal_bolus", "extended", "last_hour", "limits", "pump_matches_plant"} <= kinds
    # the prime stopped at the instant of the resume: its last step is still priming, not therapy
    assert scn["plant"]["prime_steps"] == 81 and scn["pump"]["prime_steps"] == 81


WRONG_PLANT = """
name: wrong plant numbers
pump: {reservoir: 50, prime: 2s, basal: ["00:00=1.0"]}
steps:
  - at: "01:00"
    expect:
      plant_delivered: {kind: service, equals: 1.0}
      prime: 0
      history: {type: bolus_done}
      temp_basal: {percent: 50}
"""


def test_failing_therapy_checks_report_expected_and_actual(tmp_path):
    code, rep = run(tmp_path, write(tmp_path, WRONG_PLANT))
    assert code == 1
    checks = {c["check"]: c for c in rep["scenarios"][0]["steps"][0]["checks"]}
    assert checks["plant_delivered"]["actual"] == "0.205 U (41 steps)" and checks["plant_delivered"]["result"] == "fail"
    assert checks["prime"]["actual"] == "0.205 U"
    assert checks["history"]["result"] == "fail" and "no 'bolus_done' history records" in checks["history"]["actual"]
    assert checks["temp_basal"]["actual"] == "no temp basal running"
