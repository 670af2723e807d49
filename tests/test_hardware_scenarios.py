"""Fault injection from scenario files (`inject:`, docs/scenarios.md): each form parses to the
SimHardware call it makes, bad forms are refused with the field named before any pump starts, and
a board run reports the injection as skipped. scenarios/faults.yaml runs with the shipped ones."""
import json

import pytest

from hil.scenario import cli
from hil.scenario.model import ScenarioError, parse

HEAD = 'name: t\npump: {reservoir: 100, basal: ["00:00=1.0"]}\nsteps:\n'


def injected(*values):
    scn = parse(HEAD + "".join(f'  - {{at: "+1m", inject: {v}}}\n' for v in values))
    return [(s.action.args, s.action.label) for s in scn.steps]


def test_every_fault_form_parses_to_its_hardware_call():
    got = [a for a, _ in injected(
        "{occlusion: full}", "{occlusion: partial}", "{occlusion: 30}", "{occlusion: clear}",
        "{reservoir: removed}", "{reservoir: seated}", "{reservoir: new}",
        "{battery: 0.12}", "{battery: replace}",
        "{motor: stall}", "{motor: {missed: 0.25}}", "{motor: {runaway: 20}}", "{motor: ok}",
        "{encoder: {offset: -5}}", "{encoder: {scale: 0.9}}", "{encoder: ok}")]
    assert got == [
        {"what": "occlude", "factor": None}, {"what": "occlude", "factor": 100}, {"what": "occlude", "factor": 30.0},
        {"what": "clear"},
        {"what": "remove", "new": False}, {"what": "seat", "new": False}, {"what": "seat", "new": True},
        {"what": "drain", "soc": 0.12}, {"what": "battery"},
        {"what": "stall"}, {"what": "missed", "fraction": 0.25}, {"what": "runaway", "hz": 20}, {"what": "motor_ok"},
        {"what": "encoder", "offset": -5, "scale": 1.0}, {"what": "encoder", "offset": 0, "scale": 0.9},
        {"what": "encoder_ok"}]


def test_labels_read_as_the_summary_shows_them():
    labels = [lbl for _, lbl in injected("{occlusion: full}", "{battery: 0.12}", "{motor: {runaway: 20}}",
                                         "{encoder: {offset: 3}}")]
    assert labels == ["inject: occlusion (full)", "inject: battery at 12%", "inject: motor runaway at 20 Hz",
                      "inject: encoder jumps +3 counts"]


@pytest.mark.parametrize("value, field", [
    ("{occlusion: 1}", "inject.occlusion"),
    ("{occlusion: blocked}", "inject.occlusion"),
    ("{battery: 1.5}", "inject.battery"),
    ("{battery: empty}", "inject.battery"),
    ("{motor: spin}", "inject.motor"),
    ("{motor: {runaway: 0}}", "inject.motor.runaway"),
    ("{motor: {runaway: 5, missed: 0.1}}", "inject.motor"),
    ("{motor: {missed: 0}}", "inject.motor.missed"),
    ("{encoder: {offset: 1.5}}", "inject.encoder.offset"),
    ("{encoder: {drift: 1}}", "inject.encoder.drift"),
    ("{reservoir: out}", "inject.reservoir"),
    ("{laser: on}", "inject.laser"),
    ("{occlusion: full, battery: 0.5}", "inject"),
    ("occlusion", "inject"),
])
def test_bad_faults_are_refused_with_the_field(value, field):
    with pytest.raises(ScenarioError) as ei:
        parse(HEAD + f'  - {{at: "+1m", inject: {value}}}\n', "f.yaml")
    assert f"field '{field}" in str(ei.value), str(ei.value)


def test_a_fault_cannot_be_expected_refused():
    with pytest.raises(ScenarioError, match="cannot refuse"):
        parse(HEAD + '  - {at: "+1m", inject: {motor: stall}, expect_refused: any}\n')


def test_on_a_board_an_injection_is_skipped(tmp_path):
    from hil.sim.firmware import SimPump

    p = tmp_path / "s.yaml"
    p.write_text(HEAD.replace("reservoir: 100", "reservoir: 10") + '  - {at: "00:00:01", inject: {occlusion: full}}\n'
                 '  - {at: "+1s", expect: {state: running}}\n')
    report = tmp_path / "r.json"
    with SimPump(mode="realtime") as sim:
        code = cli.main([str(p), "--report", str(report), "--port", sim.console_url])
    scn = json.loads(report.read_text())["scenarios"][0]
    assert code == 0, scn
    assert scn["counts"] == {"pass": 1, "fail": 0, "skip": 1, "steps_not_run": 0}
    assert scn["steps"][0]["action"] == {"inject": {"what": "occlude", "factor": None}, "ok": True, "skipped": True}
