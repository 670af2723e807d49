"""CGM in scenarios (hil/scenario, docs/scenarios.md "CGM"): the `cgm:` setup block, the CGM
faults of `inject:`, the `cgm_pair` / `cgm_set` actions and the `cgm` expectation - validated
before any pump starts, then run against the firmware's CGM client over the simulated radio."""
from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenario.model import CGM_STATUS_BITS, ScenarioError, parse
from tests.test_scenarios import run, write

ROOT = Path(__file__).resolve().parent.parent
ADDR = "C0:98:E5:49:00:01"


# ---- the loader -----------------------------------------------------------------------------------
HEAD = f'name: cgm\ncgm:\n  sensor: "{ADDR}"\n  glucose: 120\nsteps:\n  - at: "00:10"\n    expect: {{state: running}}\n'


def with_cgm(block: str) -> str:
    return "name: cgm\ncgm:\n" + block + 'steps:\n  - at: "00:10"\n    expect: {state: running}\n'


INVALID = {
    # the setup block: (text, line, field, words in the message)
    "unknown key": (with_cgm('  sensor: "C0:98:E5:49:00:01"\n  colour: red\n'), 4, "cgm.colour",
                    ["unknown key", "sensor, glucose"]),
    "address": (with_cgm("  sensor: C0-98-E5-49-00-01\n"), 3, "cgm.sensor", ["Bluetooth address"]),
    "not a mapping": ("name: cgm\ncgm: yes\nsteps:\n  - at: '00:10'\n    expect: {state: running}\n", 2, "cgm",
                      ["'cgm' is a mapping"]),
    "glucose range": (with_cgm("  glucose: 5000\n"), 3, "cgm.glucose", ["outside 10..600 mg/dL"]),
    "glucose word": (with_cgm("  glucose: high\n"), 3, "cgm.glucose", ["not a number"]),
    "points order": (with_cgm('  glucose: ["06:00=120", "05:00=90"]\n'), 3, "cgm.glucose", ["must ascend"]),
    "point form": (with_cgm('  glucose: ["06:00 120"]\n'), 3, "cgm.glucose", ['"HH:MM=mg/dL"']),
    "point time": (with_cgm('  glucose: ["6h=120"]\n'), 3, "cgm.glucose", ["HH:MM"]),
    "missing trace": (with_cgm('  glucose: "no-such-day.csv"\n'), 3, "cgm.glucose", ["no-such-day.csv"]),
    "noise": (with_cgm("  noise: sometimes\n"), 3, "cgm.noise", ["true or false"]),
    "seed": (with_cgm("  seed: -1\n"), 3, "cgm.seed", ["seed"]),
    "low": (with_cgm("  low: 40\n"), 3, "cgm.low", ["55..150"]),
    "high below low": (with_cgm("  low: 150\n  high: 130\n  noise: false\n"), 4, "cgm.high", ["above low"]),
    "loss": (with_cgm("  loss_min: 5\n"), 3, "cgm.loss_min", ["10..120"]),
    # steps: injections, actions, expectations
    "inject without a sensor": ('name: x\nsteps:\n  - at: "00:10"\n    inject: {cgm_drop: 1}\n', 4, "inject",
                                ["needs a simulated sensor", "'cgm:'"]),
    "link loss duration": (HEAD + '  - at: "+1m"\n    inject: {cgm_link_loss: 20}\n', 9,
                           "inject.cgm_link_loss", ["duration"]),
    "link loss too long": (HEAD + '  - at: "+1m"\n    inject: {cgm_link_loss: 25h}\n', 9,
                           "inject.cgm_link_loss", ["1s..24h"]),
    "drop count": (HEAD + '  - at: "+1m"\n    inject: {cgm_drop: 0}\n', 9, "inject.cgm_drop (readings)", ["1..10000"]),
    "forced glucose": (HEAD + '  - at: "+1m"\n    inject: {cgm_glucose: lots}\n', 9, "inject.cgm_glucose (mg/dL)",
                       ["whole number"]),
    "status word": (HEAD + '  - at: "+1m"\n    inject: {cgm_status: broken}\n', 9, "inject.cgm_status",
                    ["malfunction", "calibration"]),
    "session stop value": (HEAD + '  - at: "+1m"\n    inject: {cgm_session_stop: soon}\n', 9,
                           "inject.cgm_session_stop", ["takes no value"]),
    "second sensor": (HEAD + '  - at: "+1m"\n    inject: {cgm_second_sensor: {glucose: 300}}\n', 9,
                      "inject.cgm_second_sensor", ["needs address"]),
    "pair address": (HEAD + '  - at: "+1m"\n    cgm_pair: "C0:98"\n', 9, "cgm_pair", ["Bluetooth address"]),
    "set key": (HEAD + '  - at: "+1m"\n    cgm_set: {lo: 80}\n', 9, "cgm_set.lo", ["unknown key"]),
    "expect field": (HEAD + '  - at: "+1m"\n    expect:\n      cgm: {glucoze: 120}\n', 9, "expect.cgm.glucoze",
                     ["unknown CGM expectation", "glucose"]),
    "link state": (HEAD + '  - at: "+1m"\n    expect:\n      cgm: {link: sideways}\n', 9, "expect.cgm.link",
                   ["idle, scanning"]),
    "reason": (HEAD + '  - at: "+1m"\n    expect:\n      cgm: {rejected: {bad_crc: 1}}\n', 9,
               "expect.cgm.rejected.bad_crc", ["unknown rejection reason", "crc"]),
    "alarm name": (HEAD + '  - at: "+1m"\n    expect:\n      cgm: {alarm: glucose_lo}\n', 9, "expect.cgm.alarm",
                   ["unknown alarm", "glucose_low"]),
    "link is a word": (HEAD + '  - at: "+1m"\n    expect:\n      cgm: {glucose: {approx: 100}}\n', 9,
                       "expect.cgm.glucose", ["needs 'tol'"]),
    "history field": (HEAD + '  - at: "+1m"\n    expect:\n      history: {type: cgm, mgdl: 120}\n', 9,
                      "expect.history", ["unknown field 'mgdl'", "glucose, offset"]),
    "refused inject": (HEAD + '  - at: "+1m"\n    inject: {cgm_drop: 1}\n    expect_refused: any\n', 10,
                       "expect_refused", ["cannot refuse"]),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_cgm_keys_name_the_line_and_field(case):
    text, line, fld, words = INVALID[case]
    with pytest.raises(ScenarioError) as ei:
        parse(text, str(ROOT / "scenarios" / "x.yaml"))
    e = ei.value
    assert (e.line, e.field) == (line, fld), str(e)
    for w in words:
        assert w in str(e), str(e)


def test_an_invalid_cgm_file_runs_nothing(tmp_path, capsys, no_pump):
    good = write(tmp_path, HEAD, "good.yaml")
    bad = write(tmp_path, with_cgm("  sensor: nowhere\n"), "bad.yaml")
    code, rep = run(tmp_path, good, bad)
    assert code == 2 and rep["scenarios"] == []
    assert rep["invalid"][0]["line"] == 3 and rep["invalid"][0]["field"] == "cgm.sensor"
    assert "nothing was run" in capsys.readouterr().out


def test_the_cgm_block_and_its_defaults():
    scn = parse(HEAD)
    c = scn.cgm
    assert (c.address, c.noise, c.seed, c.pair, c.settings) == (ADDR, True, 0, True, {})
    assert c.glucose.kind == "constant" and c.glucose.at(0) == c.glucose.at(600) == 120
    assert parse("name: x\nsteps:\n  - at: '00:10'\n    expect: {state: running}\n").cgm is None
    scn = parse(with_cgm('  sensor: "c0:98:e5:49:00:0a"\n  noise: false\n  seed: 7\n  pair: false\n'
                         "  low: 80\n  high: 250\n  loss_min: 30\n"))
    c = scn.cgm
    assert (c.address, c.noise, c.seed, c.pair) == ("C0:98:E5:49:00:0A", False, 7, False)
    assert c.settings == {"low_mgdl": 80, "high_mgdl": 250, "loss_min": 30}
    assert parse(with_cgm("  low: 0\n  high: 0\n")).cgm.settings == {"low_mgdl": 0, "high_mgdl": 0}


def test_glucose_points_follow_scenario_time():
    g = parse(with_cgm('  glucose: ["01:00=100", "03:00=200", "26:00=150.5"]\n')).cgm.glucose
    assert g.kind == "points"
    assert g.at(0) == 100 and g.at(60) == 100  # held before the first point
    assert g.at(120) == 150 and g.at(180) == 200
    assert g.at(26 * 60) == 150.5 and g.at(48 * 60) == 150.5  # hours past 24; held after the last


def test_a_csv_trace_is_read_relative_to_the_scenario(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "day.csv").write_text("minutes,mgdl\n# fasting\n0,110\n60,180\n120,140\n")
    scn = parse(with_cgm('  glucose: "traces/day.csv"\n'), str(tmp_path / "s.yaml"))
    g = scn.cgm.glucose
    assert g.kind == "trace" and g.at(30) == 145 and g.at(500) == 140
    (tmp_path / "bad.csv").write_text("0,110\n60,abc\n")
    with pytest.raises(ScenarioError) as ei:
        parse(with_cgm('  glucose: "bad.csv"\n'), str(tmp_path / "s.yaml"))
    assert ei.value.field == "cgm.glucose" and "bad row" in str(ei.value)
    (tmp_path / "wild.csv").write_text("0,110\n60,900\n")
    with pytest.raises(ScenarioError, match="outside 10..600"):
        parse(with_cgm('  glucose: "wild.csv"\n'), str(tmp_path / "s.yaml"))


def test_cgm_injections_actions_and_expectations_parse():
    steps = "".join(f'  - at: "+1m"\n    {s}\n' for s in (
        "inject: {cgm_link_loss: 20m}", "inject: {cgm_drop: 2}", "inject: {cgm_corrupt: 1}",
        "inject: {cgm_duplicate: 1}", "inject: {cgm_glucose: 500}", "inject: {cgm_glucose: nan}",
        "inject: {cgm_status: calibration}", "inject: {cgm_session_stop: true}", "inject: {cgm_session_stop:}",
        'inject: {cgm_second_sensor: "c0:98:e5:49:00:02"}',
        'inject: {cgm_second_sensor: {address: "C0:98:E5:49:00:03", glucose: 250}}',
        'cgm_pair: "C0:98:E5:49:00:02"', "cgm_pair: null", "cgm_set: {low: 30, loss_min: 200}"))
    scn = parse(HEAD + steps)
    args = [s.action.args for s in scn.steps[1:]]
    assert args[:10] == [
        {"what": "cgm_link_loss", "ms": 20 * 60_000}, {"what": "cgm_drop", "n": 2}, {"what": "cgm_corrupt", "n": 1},
        {"what": "cgm_duplicate", "n": 1}, {"what": "cgm_glucose", "mgdl": 500}, {"what": "cgm_glucose", "mgdl": None},
        {"what": "cgm_status", "bits": CGM_STATUS_BITS["calibration"], "status": "calibration"},
        {"what": "cgm_session_stop"}, {"what": "cgm_session_stop"},
        {"what": "cgm_second_sensor", "address": "C0:98:E5:49:00:02", "mgdl": 300.0}]
    assert args[10] == {"what": "cgm_second_sensor", "address": "C0:98:E5:49:00:03", "mgdl": 250.0}
    cmds = [(s.action.cmd, s.action.args) for s in scn.steps[-3:]]
    # actions pass values on as written, so a scenario can check the pump refuses them
    assert cmds == [("cgm_pair", {"address": "C0:98:E5:49:00:02"}), ("cgm_pair", {"address": None}),
                    ("cgm_set", {"low_mgdl": 30, "loss_min": 200})]

    scn = parse(HEAD + '  - at: "+1m"\n    expect:\n      cgm: {paired: "c0:98:e5:49:00:01", link: up, '
                "glucose_mgdl: {approx: 110, tol: 15}, age_s: {max: 300}, trend: {min: -5, max: 5}, "
                "readings: {min: 10}, rejected: {crc: 1, duplicate: {max: 2}}, events_lost: 0, low: 70, "
                "alarm: [glucose_low, cgm_signal_loss], no_alarm: glucose_high}\n"
                "      event: {name: cgm, reason: crc, glucose: 120}\n"
                "      history: [{type: cgm, glucose: 120, offset: {min: 5}}, {type: cgm_rejected, reason: crc}]\n"
                "      no_history: {type: alarm, alarm: glucose_low}\n")
    checks = scn.steps[1].checks
    described = {c.label: c.cmp.describe() if c.cmp else None for c in checks}
    assert described["cgm paired"] == ADDR and described["cgm link"] == "up"
    assert described["cgm glucose"] == "110 mg/dL ± 15 mg/dL"
    assert described["cgm readings accepted"] == ">= 10" and described["cgm rejected crc"] == "1"
    assert described["cgm rejected duplicate"] == "<= 2" and described["cgm age_s"] == "<= 300 s"
    assert described["alarm glucose_low active"] == "true" and described["alarm glucose_high not active"] == "false"
    assert {c.params.get("reason") for c in checks if c.label.startswith("cgm rejected")} == {2, 13}
    scn = parse(HEAD + '  - at: "+1m"\n    expect:\n      cgm: {glucose: null, paired: null, rejected: {min: 1}}\n')
    assert [(c.label, c.cmp.value) for c in scn.steps[1].checks][:2] == [("cgm glucose", None), ("cgm paired", None)]
    assert scn.steps[1].checks[2].params == {"field": "rejected", "reason": None}


# ---- in the simulator -------------------------------------------------------------------------------
def test_cgm_scenario_every_fault_and_alert_end_to_end(tmp_path):
    """scenarios/cgm.yaml: every injection rejected for its reason, every CGM alert raised and
    cleared, the backfill, the unpaired sensor ignored - and the report sums it up."""
    pytest.importorskip("bumble")
    code, rep = run(tmp_path, ROOT / "scenarios" / "cgm.yaml")
    scn = rep["scenarios"][0]
    failed = [(s["index"], c) for s in scn["steps"] for c in s["checks"] if c["result"] != "pass"]
    assert code == 0, (scn["error"], failed)
    c = scn["cgm"]
    assert c["paired"] == ADDR and c["readings"] >= 70  # every 5 min until the session ends at 07:05
    assert c["rejected"] == {"crc": 1, "special": 1, "range": 1, "session_stopped": 2, "malfunction": 1,
                             "calibration": 1, "duplicate": 1}
    assert c["backfilled"] >= 4  # the reading dropped on the air, and the link loss's
    assert c["link_downs"] == 1 and c["reconnects"] == 1
    assert set(c["alarms"]) == {"cgm_signal_loss", "cgm_session_ended", "cgm_sensor_error", "glucose_low",
                                "glucose_high"}
    radio = c["radio"]
    assert radio["link_losses"] == 1 and radio["errors"] == []
    assert radio["sensors"] == [ADDR, "C0:98:E5:49:00:02"]
    assert list(radio["connects"]) == [ADDR]  # the unpaired sensor advertised for hours: never connected
    assert c["injected"] == {"cgm_drop": 1, "cgm_corrupt": 1, "cgm_duplicate": 1, "cgm_glucose": 2,
                             "cgm_status": 3, "cgm_second_sensor": 1, "cgm_link_loss": 1, "cgm_session_stop": 1}
    # the setup paired the pump and set the alerts after the profiles, before the reservoir change
    cmds = [s["cmd"] for s in scn["setup"]]
    i = cmds.index("cgm_pair")
    assert cmds[i:i + 3] == ["cgm_pair", "cgm_set", "rewind"] and cmds[i - 1] == "profile_select"


def test_failed_cgm_checks_show_expected_and_actual(tmp_path, capsys):
    pytest.importorskip("bumble")
    p = write(tmp_path, f"""
name: wrong about the CGM
pump: {{reservoir: null, state: suspended}}
cgm: {{sensor: "{ADDR}", glucose: 120, noise: false}}
steps:
  - at: "00:20:30"
    expect:
      cgm: {{link: up, glucose: 200, rejected: {{crc: 1}}, alarm: glucose_low, readings: {{min: 4}}}}
      event: {{name: cgm, glucose: 120, count: 4}}
      no_event: {{name: cgm, link: up}}
""")
    code, rep = run(tmp_path, p)
    assert code == 1
    checks = {c["what"]: c for c in rep["scenarios"][0]["steps"][0]["checks"]}
    assert checks["cgm link"]["result"] == "pass" and checks["cgm readings accepted"]["result"] == "pass"
    assert (checks["cgm glucose"]["expected"], checks["cgm glucose"]["actual"]) == ("200 mg/dL", "120 mg/dL")
    assert checks["cgm rejected crc"]["actual"] == "0" and checks["cgm rejected crc"]["result"] == "fail"
    assert checks["alarm glucose_low active"]["actual"] == "not active"
    assert checks["event cgm(glucose=120)"]["result"] == "pass"
    assert checks["no event cgm(link=up)"]["result"] == "fail"  # the link came up in this window
    out = capsys.readouterr().out
    assert "expected 200 mg/dL" in out and "actual   120 mg/dL" in out
    assert "cgm C0:98:E5:49:00:01 link up" in out


def test_a_board_without_a_radio_refuses_the_pairing(tmp_path):
    """--port: setup pairs the board with `sensor`; a board without a radio refuses, and the run
    is aborted with the pump's reason (a sim pump in real time stands in for the board)."""
    from hil.sim.firmware import SimPump

    p = write(tmp_path, f"""
name: on a board
pump: {{reservoir: null, state: suspended}}
cgm: {{sensor: "{ADDR}"}}
steps:
  - at: "00:00:01"
    inject: {{cgm_drop: 1}}
""")
    with SimPump(mode="realtime") as sim:
        code, rep = run(tmp_path, p, extra=["--port", sim.console_url])
    scn = rep["scenarios"][0]
    assert code == 3
    assert "cgm_pair" in scn["error"] and "radio" in scn["error"]
