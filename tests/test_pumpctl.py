"""pumpctl against the real firmware in the simulator (lockstep: virtual time moves only when a
test calls sim.advance/run_until; the firmware answers commands while paused)."""
from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from datetime import datetime

import pytest

from hil.dut import Dut
from hil.sim.firmware import SimPump, free_port
from host.cli import main
from host.client import PumpClient
from host.units import fmt_u

MU_PER_STEP = 5  # reference mechanism: 200 steps per U


@pytest.fixture(autouse=True)
def quick_socket_close(monkeypatch):
    """pyserial's socket:// close() sleeps 0.3 s "in case of quick reconnects"; the simulator's
    console takes a new connection at once (it replaces the old one), so skip that wait here."""
    from serial.urlhandler import protocol_socket

    class _Time:
        sleep = staticmethod(lambda s: None)

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(protocol_socket, "time", _Time())


@pytest.fixture
def sim():
    with SimPump() as s:
        yield s


def run(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    rc = main(["--port", url, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, url: str, *argv: str):
    rc, out, err = run(capsys, url, "--json", *argv)
    assert rc == 0, err
    return json.loads(out)


def start_delivery(sim, reservoir_mu: int = 100_000, segments=None, limits=None) -> None:
    """Reservoir changed (no priming, no cannula fill), profile set, running - via hil.dut.Dut."""
    with PumpClient(sim.console_url) as c:
        Dut(c, sim).prepare(reservoir_mu, segments or [[0, 0]], limits)


def request(sim, cmd: str, **args) -> dict:
    with PumpClient(sim.console_url) as c:
        return c.request(cmd, **args)


def in_background(sim, capsys, argv: list[str], step_ms: int = 1000) -> tuple[int, str, str]:
    """Run pumpctl in a thread and grant virtual time until it ends (for commands that wait)."""
    result: dict[str, int] = {}
    th = threading.Thread(target=lambda: result.setdefault("rc", main(["--port", sim.console_url, *argv])))
    th.start()
    deadline = time.monotonic() + 20
    while th.is_alive() and time.monotonic() < deadline:
        sim.advance(step_ms)
        th.join(0.01)
    th.join(5)
    assert not th.is_alive(), "pumpctl did not finish"
    out, err = capsys.readouterr()
    return result["rc"], out, err


# ---- status, ping -------------------------------------------------------------------------------
def test_status_json_fields_and_human_view(sim, capsys):
    st = run_json(capsys, sim.console_url, "status")
    assert st["state"] == "suspended" and st["reason"] == "boot" and st["reservoir_state"] == "none"
    assert st["basal_mUh"] == 0 and st["reservoir_mU"] == 0 and st["reservoir_steps"] == 0
    assert st["bolus"] is None and st["extended"] is None and st["temp_basal"] is None
    assert st["profile"] == "default" and st["limit_hold"] is False and st["history_seq"] == 0
    assert st["local_s"] == 0 and st["prime_mU"] == 0 and st["last_hour_mU"] == 0 and st["last_day_mU"] == 0

    start_delivery(sim, 150_500, [[0, 1000]])
    rc, out, _ = run(capsys, sim.console_url, "status")
    assert rc == 0
    for text in ("running", "150.500 U (30100 steps), ready", "Profile", "default", "1.000 U/h",
                 "Temp basal", "Extended bolus", "Last hour / 24 h", "2000-01-01 00:00:0"):
        assert text in out, text


def test_ping_and_global_options_after_the_subcommand(sim, capsys, monkeypatch):
    monkeypatch.setenv("BASALT_PORT", sim.console_url)
    rc = main(["ping", "--json"])  # port from the environment, --json after the subcommand
    out, _ = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    assert doc["version"].endswith("/sim") and doc["frames_bad"] == 0 and doc["events_dropped"] == 0
    rc, out, _ = run(capsys, sim.console_url, "ping")
    assert rc == 0 and "pong from" in out and "/sim" in out


# ---- reservoir ----------------------------------------------------------------------------------
def test_reservoir_workflow_step_by_step(sim, capsys):
    url = sim.console_url
    rc, _, err = run(capsys, url, "reservoir", "insert", "100")
    assert rc == 2 and "state" in err and "rewind before" in err
    assert run_json(capsys, url, "reservoir", "rewind")["state"] == "rewinding"
    sim.advance(1000)  # a fresh pump's plunger is home: one tick to 'rewound'
    ins = run_json(capsys, url, "reservoir", "insert", "100")
    assert ins == {"state": "inserted", "reservoir_mU": 100000, "reservoir_steps": 20000}
    assert run_json(capsys, url, "reservoir", "prime", "start")["state"] == "priming"
    sim.advance(2000)
    primed = run_json(capsys, url, "reservoir", "prime", "stop")
    assert primed["state"] == "primed" and primed["primed_steps"] > 0
    assert primed["primed_mU"] == primed["primed_steps"] * MU_PER_STEP
    rc, _, err = run(capsys, url, "resume")
    assert rc == 2 and "reservoir" in err and "primed" in err
    rc, out, _ = run(capsys, url, "reservoir", "fill", "0.1")
    assert rc == 0 and "Cannula fill filling: 0.100 U" in out
    sim.advance(6000)  # 20 steps at the bolus speed (5 steps/s)
    st = run_json(capsys, url, "status")
    assert st["reservoir_state"] == "ready" and st["prime_steps"] == primed["primed_steps"] + 20
    assert st["reservoir_steps"] == 20000 - st["prime_steps"]
    assert st["delivered_steps"] == 0 and st["basal_delivered_mU"] == 0  # priming is not therapy
    assert run_json(capsys, url, "resume")["state"] == "running"


def test_reservoir_change_runs_the_whole_workflow(sim, capsys):
    start_delivery(sim, 50_000, [[0, 1000]])
    sim.advance(60_000)
    before = run_json(capsys, sim.console_url, "status")
    assert before["plunger_steps"] > 0
    rc, out, err = in_background(sim, capsys, ["reservoir", "change", "200", "--prime-seconds", "2", "--fill", "0.3"])
    assert rc == 0, err
    assert "Suspended." in out and "Reservoir inserted: 200.000 U (40000 steps)" in out
    assert "Tubing primed" in out and "Reservoir change complete" in out and "pump running" in out
    st = run_json(capsys, sim.console_url, "status")
    assert st["state"] == "running" and st["reservoir_state"] == "ready"
    primed = st["prime_steps"] - before["prime_steps"]
    assert primed >= 40 + 60  # a whole 1 s train at the prime speed at least, then the 0.3 U cannula fill
    # The reservoir now holds the new fill minus priming minus what basal has delivered since.
    delivered = st["delivered_steps"] - before["delivered_steps"]
    assert st["reservoir_steps"] == 40000 - primed - delivered
    rows = run_json(capsys, sim.console_url, "history", "--all")["records"]
    assert [r["name"] for r in rows[-6:]] == ["suspend", "rewind", "reservoir", "prime", "prime", "resume"]
    assert rows[-4]["a_mU"] == 200000 and rows[-2]["detail"] == "cannula primed, 300 mU"

    rc, out, err = in_background(sim, capsys, ["--json", "reservoir", "change", "100", "--no-resume"])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["insert"]["reservoir_mU"] == 100000 and "resume" not in doc
    assert doc["status"]["state"] == "suspended" and doc["status"]["reservoir_state"] == "ready"


# ---- basal and profiles -------------------------------------------------------------------------
def test_basal_set_then_show_round_trips(sim, capsys):
    rc, out, _ = run(capsys, sim.console_url, "basal", "set", "00:00=0.8", "06:30=1.25", "22:00=0.05")
    assert rc == 0 and "06:30" in out and "1.250" in out
    shown = run_json(capsys, sim.console_url, "basal", "show")
    assert shown["segments"] == [0, 800, 390, 1250, 1320, 50] and shown["profile"] == "default"
    assert shown["basal_mUh"] == 0  # suspended: nothing owed
    rc, out, _ = run(capsys, sim.console_url, "basal", "show")
    assert rc == 0
    for text in ("00:00", "06:30", "22:00", "0.800", "1.250", "0.050"):
        assert text in out
    # 0.8*6.5 + 1.25*15.5 + 0.05*2 = 24.675 U per day
    assert "24.675 U per day" in out


def test_basal_refusals(sim, capsys):
    rc, _, err = run(capsys, sim.console_url, "basal", "set", "00:00=0.8", "06:15=1")
    assert rc == 2 and "range" in err and "30-minute" in err
    rc, _, err = run(capsys, sim.console_url, "basal", "set", "00:00=5")
    assert rc == 2 and "limit" in err and "max_basal_mUh" in err  # above max_basal_mUh (3 U/h)
    assert run_json(capsys, sim.console_url, "basal", "show")["segments"] == [0, 0]


def test_profiles_list_show_select_delete(sim, capsys):
    url = sim.console_url
    start_delivery(sim, segments=[[0, 1000]])
    assert run_json(capsys, url, "profile", "set", "high", "00:00=2", "12:00=2.5") == \
        {"name": "high", "daily_mU": 54000, "active": False}
    rc, out, _ = run(capsys, url, "profile", "list")
    assert rc == 0 and "high" in out and "54.000" in out and "24.000" in out  # 2*12 + 2.5*12
    lst = run_json(capsys, url, "profile", "list")
    assert lst["active"] == "default"
    assert {p["name"]: p["daily_mU"] for p in lst["profiles"]} == {"default": 24000, "high": 54000}
    shown = run_json(capsys, url, "profile", "show", "high")
    assert shown == {"name": "high", "segments": [0, 2000, 720, 2500], "active": False}
    assert run_json(capsys, url, "status")["basal_mUh"] == 1000
    assert run_json(capsys, url, "profile", "select", "high") == {"active": "high"}
    st = run_json(capsys, url, "status")
    assert st["profile"] == "high" and st["basal_mUh"] == 2000
    assert run_json(capsys, url, "basal", "show")["profile"] == "high"  # basal = the active profile
    rc, _, err = run(capsys, url, "profile", "delete", "high")
    assert rc == 2 and "state" in err and "active profile" in err
    rc, _, err = run(capsys, url, "profile", "show", "nosuch")
    assert rc == 2 and "range" in err
    rc, out, _ = run(capsys, url, "profile", "delete", "default")
    assert rc == 0 and "Profiles: high" in out
    rc, _, err = run(capsys, url, "profile", "set", "x", "00:00=3.5")
    assert rc == 2 and "limit" in err and "max_basal_mUh" in err


# ---- temp basal ---------------------------------------------------------------------------------
def test_temp_basal_changes_the_rate_and_cancels(sim, capsys):
    url = sim.console_url
    start_delivery(sim, segments=[[0, 1000]])
    tb = run_json(capsys, url, "temp", "set", "--percent", "50", "--minutes", "30")
    assert tb["phase"] == "started" and tb["percent"] == 50 and tb["minutes"] == 30 and tb["replaced"] is None
    st = run_json(capsys, url, "status")
    assert st["basal_mUh"] == 500 and st["temp_basal"]["percent"] == 50 and st["temp_basal"]["remaining_s"] == 1800
    rc, out, _ = run(capsys, url, "temp", "set", "--rate", "2.5", "--minutes", "15")
    assert rc == 0 and "2.500 U/h for 15 min: started" in out and "replaced" in out
    sim.advance(60_000)
    st = run_json(capsys, url, "status")
    assert st["basal_mUh"] == 2500 and st["temp_basal"]["rate_mUh"] == 2500
    assert st["temp_basal"]["delivered_mU"] > 0
    rc, out, _ = run(capsys, url, "temp", "cancel")
    assert rc == 0 and "cancelled" in out
    assert run_json(capsys, url, "status")["basal_mUh"] == 1000
    rc, _, err = run(capsys, url, "temp", "cancel")
    assert rc == 2 and "no temp basal" in err
    rc, _, err = run(capsys, url, "temp", "set", "--rate", "3.5", "--minutes", "30")
    assert rc == 2 and "limit" in err and "max_basal_mUh" in err


# ---- bolus --------------------------------------------------------------------------------------
def test_bolus_then_cancel_reports_what_the_plant_delivered(sim, capsys):
    start_delivery(sim)
    t0 = sim.now_ms
    started = run_json(capsys, sim.console_url, "bolus", "2.5")
    assert started["phase"] == "started"
    assert started["requested_mU"] == 2500 and started["requested_steps"] == 500
    sim.run_until(t0 + 3500)  # three whole trains and part of a fourth
    rc, out, err = run(capsys, sim.console_url, "status")
    assert rc == 0, err
    # Trains of the first two ticks are counted; the one in flight since the third at the next tick.
    assert "Running bolus" in out and "#1 0.050 of 2.500 U delivered (10 of 500 steps)" in out
    rc, out, err = run(capsys, sim.console_url, "cancel")
    assert rc == 0, err
    steps = sim.plant.net_steps()  # no basal programmed, no priming: every step is bolus
    assert 0 < steps < 500
    assert f"delivered {fmt_u(steps * MU_PER_STEP)} U of 2.500 U requested ({steps} of 500 steps)" in out
    st = run_json(capsys, sim.console_url, "status")
    assert st["bolus"] is None
    assert st["bolus_delivered_mU"] == steps * MU_PER_STEP and st["delivered_steps"] == steps
    assert st["reservoir_steps"] == 20000 - steps
    # Nothing left to cancel.
    rc, _, err = run(capsys, sim.console_url, "cancel")
    assert rc == 2 and "state" in err and "no bolus" in err


def test_extended_and_combo_bolus_show_in_status(sim, capsys):
    url = sim.console_url
    start_delivery(sim)
    ext = run_json(capsys, url, "bolus", "0", "--ext", "1", "--minutes", "30")
    assert ext["kind"] == "extended" and ext["normal"] is None
    assert ext["extended"]["requested_mU"] == 1000 and ext["extended"]["minutes"] == 30
    sim.advance(60_000)
    st = run_json(capsys, url, "status")
    assert st["bolus"] is None and st["extended"]["requested_mU"] == 1000
    assert 0 < st["extended"]["delivered_mU"] < 1000  # about 1/30 of it per minute
    rc, out, _ = run(capsys, url, "status")
    assert "extended #1" in out and "of 1.000 U delivered" in out and "over 30 min" in out
    rc, _, err = run(capsys, url, "bolus", "0", "--ext", "1", "--minutes", "30")
    assert rc == 2 and "busy" in err  # one extended at a time; never queued
    rc, _, err = run(capsys, url, "bolus", "0.5", "--ext", "1", "--minutes", "60")
    assert rc == 2 and "busy" in err  # a combo's extended part too
    rc, out, _ = run(capsys, url, "bolus", "0.5")  # a normal bolus alongside the extended one is fine
    assert rc == 0 and "Bolus #" in out and "0.500 U" in out
    st = run_json(capsys, url, "status")
    assert st["bolus"]["requested_mU"] == 500 and st["extended"]["requested_mU"] == 1000
    rc, out, _ = run(capsys, url, "cancel", "--kind", "extended")
    assert rc == 0 and "Extended bolus #1 cancelled" in out
    st = run_json(capsys, url, "status")
    assert st["extended"] is None and st["bolus"] is not None
    run(capsys, url, "cancel")
    combo = run_json(capsys, url, "bolus", "0.5", "--ext", "1", "--minutes", "60")
    assert combo["kind"] == "combo" and combo["normal"]["requested_mU"] == 500
    assert combo["extended"]["requested_mU"] == 1000 and combo["extended"]["minutes"] == 60
    cancelled = run_json(capsys, url, "cancel")
    assert cancelled["kind"] == "normal" and cancelled["extended"]["kind"] == "extended"


def test_over_limit_bolus_is_refused_with_the_limit_named(sim, capsys):
    start_delivery(sim)
    rc, out, err = run(capsys, sim.console_url, "bolus", "10.01")
    assert rc == 2
    assert "limit" in err and "max_bolus_mU" in err
    assert out == ""
    rc, out, err = run(capsys, sim.console_url, "--json", "bolus", "12")
    assert rc == 2 and "max_bolus_mU" in err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["err"] == "limit" and "max_bolus_mU" in doc["msg"]
    sim.advance(2000)
    assert sim.plant.net_steps() == 0


def test_hourly_limit_guard_refuses_naming_the_limit(sim, capsys):
    # 1 U/h basal + a 1 U bolus could put 2 U in one hour, above max_hour 1.5 U.
    start_delivery(sim, segments=[[0, 1000]],
                   limits={"max_bolus_mU": 1000, "max_basal_mUh": 1000, "max_hour_mU": 1500, "max_day_mU": 30000})
    rc, _, err = run(capsys, sim.console_url, "bolus", "1")
    assert rc == 2 and "limit" in err and "max_hour_mU" in err
    rc, _, err = run(capsys, sim.console_url, "bolus", "0.4")
    assert rc == 0, err
    rows = run_json(capsys, sim.console_url, "history", "--type", "limit_refused")["records"]
    assert rows and rows[-1]["detail"].startswith("max_hour_mU")


def test_state_refusals_and_repeated_commands_are_not_replayed(sim, capsys):
    rc, _, err = run(capsys, sim.console_url, "bolus", "1")
    assert rc == 2 and "state" in err and "suspended" in err
    rc, _, err = run(capsys, sim.console_url, "resume")
    assert rc == 2 and "reservoir" in err
    start_delivery(sim)
    # A second identical command must be executed (and refused), not answered from the
    # pump's retransmission cache.
    rc, _, err = run(capsys, sim.console_url, "resume")
    assert rc == 2 and "already running" in err
    rc, _, err = run(capsys, sim.console_url, "reservoir", "rewind")
    assert rc == 2 and "suspend before" in err
    assert run_json(capsys, sim.console_url, "suspend")["state"] == "suspended"
    rc, _, err = run(capsys, sim.console_url, "suspend")
    assert rc == 2 and "already suspended" in err


def test_suspend_cancels_boluses_and_temp_basal(sim, capsys):
    url = sim.console_url
    start_delivery(sim, segments=[[0, 1000]])
    run_json(capsys, url, "temp", "set", "--percent", "0", "--minutes", "60")
    run_json(capsys, url, "bolus", "1", "--ext", "1", "--minutes", "30")
    rc, out, _ = run(capsys, url, "suspend")
    assert rc == 0
    assert "Running bolus cancelled" in out and "Extended bolus cancelled" in out and "cancelled" in out
    st = run_json(capsys, url, "status")
    assert st["bolus"] is None and st["extended"] is None and st["temp_basal"] is None


# ---- calculator ---------------------------------------------------------------------------------
def test_calc_set_show_and_suggest_match_the_firmware(sim, capsys):
    url = sim.console_url
    rc, _, err = run(capsys, url, "calc", "suggest", "--carbs", "10")
    assert rc == 2 and "not set up" in err
    rc, _, err = run(capsys, url, "calc", "set", "--cr", "00:00=10")  # the first set-up needs all three
    assert rc == 2 and "missing argument isf" in err
    cfg = run_json(capsys, url, "calc", "set", "--cr", "00:00=10", "12:00=12.5", "--isf", "00:00=50",
                   "--target", "00:00=100-120", "--dia", "240", "--peak", "60")
    assert cfg == {"cr": [0, 100, 720, 125], "isf": [0, 50], "target": [0, 100, 120],
                   "dia_min": 240, "peak_min": 60, "entries": [2, 1, 1]}
    assert run_json(capsys, url, "calc", "show") == cfg
    run_json(capsys, url, "limits", "set", "max_iob=6")
    # Hourly schedules (24 entries, the firmware's maximum) for all three.
    full = run_json(capsys, url, "calc", "set", *[f"--{k}" if i < 0 else f"{i:02d}:00={v}"
                                                 for k, v in (("cr", "10.1"), ("isf", "51"), ("target", "99-121"))
                                                 for i in range(-1, 24)])
    assert len(full["cr"]) == 48 and len(full["isf"]) == 48 and len(full["target"]) == 72 and full["dia_min"] == 240
    assert full["cr"][1::2] == [101] * 24 and full["target"][2::3] == [121] * 24
    assert run_json(capsys, url, "calc", "set", "--cr", "00:00=10", "12:00=12.5", "--isf", "00:00=50",
                    "--target", "00:00=100-120") == cfg
    # 45 g / 10 g/U = 4.5 U; (180 - 120) / 50 = 1.2 U; nothing on board.
    s = run_json(capsys, url, "calc", "suggest", "--carbs", "45", "--bg", "180")
    assert (s["carbs_mU"], s["correction_mU"], s["iob_mU"], s["raw_mU"], s["suggested_mU"]) == (4500, 1200, 0, 5700, 5700)
    assert s["delivers"] is False and s["capped_by"] == []
    # Below the target's low end the correction is negative: (80 - 100) / 50 = -0.4 U.
    s = run_json(capsys, url, "calc", "suggest", "--carbs", "45", "--bg", "80")
    assert s["correction_mU"] == -400 and s["suggested_mU"] == 4100
    rc, out, _ = run(capsys, url, "calc", "suggest", "--carbs", "45", "--bg", "180")
    assert rc == 0 and "nothing is delivered" in out and "4.500 U" in out and "1.200 U" in out and "5.700 U" in out
    # Insulin on board: a 1 U bolus delivered within the current 5-minute bucket counts whole.
    start_delivery(sim)
    run_json(capsys, url, "bolus", "1")
    sim.advance(45_000)  # 200 steps at 5 steps/s
    assert run_json(capsys, url, "status")["bolus"] is None
    s = run_json(capsys, url, "calc", "suggest", "--carbs", "45", "--bg", "180")
    assert s["iob_mU"] == 1000 and s["suggested_mU"] == 4700
    assert run_json(capsys, url, "status")["bolus"] is None  # a suggestion never delivers
    # max_iob caps it: 60 g -> 6 U + 1.2 U - 1 U = 6.2 U, but the room is 6 U - 1 U on board.
    s = run_json(capsys, url, "calc", "suggest", "--carbs", "60", "--bg", "180")
    assert s["raw_mU"] == 6200 and s["suggested_mU"] == 5000 and s["capped_by"] == ["max_iob_mU"]


# ---- clock --------------------------------------------------------------------------------------
def test_time_set_then_show_round_trips_and_moves_the_segment(sim, capsys):
    url = sim.console_url
    start_delivery(sim, segments=[[0, 1000], [420, 2000]])
    assert run_json(capsys, url, "status")["basal_mUh"] == 1000
    rc, out, _ = run(capsys, url, "time", "set", "2024-03-05T07:30")
    assert rc == 0 and "2024-03-05 07:30:00" in out
    t = run_json(capsys, url, "time", "show")
    assert t["local_s"] == (datetime(2024, 3, 5, 7, 30) - datetime(2000, 1, 1)).total_seconds()
    assert t["minute_of_day"] == 450
    rc, out, _ = run(capsys, url, "time", "show")
    assert rc == 0 and "2024-03-05 07:30:00" in out
    st = run_json(capsys, url, "status")
    assert st["basal_mUh"] == 2000 and st["minute_of_day"] == 450
    sim.advance(65_000)
    rc, out, _ = run(capsys, url, "time", "show")
    assert "2024-03-05 07:31:05" in out
    run_json(capsys, url, "time", "set", "2024-03-05T23:59:59")
    assert run_json(capsys, url, "time", "show")["minute_of_day"] == 1439
    rows = run_json(capsys, url, "history", "--type", "time_set")["records"]
    assert [r["a"] for r in rows] == [t["local_s"], (datetime(2024, 3, 5, 23, 59, 59) - datetime(2000, 1, 1)).total_seconds()]


# ---- history ------------------------------------------------------------------------------------
def test_history_pages_and_exports_decoded_records(sim, capsys, tmp_path):
    url = sim.console_url
    start_delivery(sim)  # rewind, reservoir, prime (tubing; a 0 U cannula fill records nothing), profile_set, resume
    run_json(capsys, url, "bolus", "0.1")
    sim.advance(5000)  # 20 steps: complete
    run_json(capsys, url, "temp", "set", "--percent", "0", "--minutes", "15")
    run_json(capsys, url, "temp", "cancel")
    doc = run_json(capsys, url, "history", "--all")
    names = [r["name"] for r in doc["records"]]
    assert names == ["rewind", "reservoir", "prime", "profile_set", "resume", "bolus_request",
                     "bolus_done", "temp_start", "temp_end"]
    assert doc["newest"] == 9 and doc["next"] == 9 and doc["uu_per_step"] == 5000
    page = run_json(capsys, url, "history", "--limit", "3")
    assert [r["seq"] for r in page["records"]] == [1, 2, 3] and page["next"] == 3
    page = run_json(capsys, url, "history", "--since", "3", "--limit", "2")
    assert [r["seq"] for r in page["records"]] == [4, 5]
    rc, out, _ = run(capsys, url, "history", "--type", "bolus_done")
    assert rc == 0 and "bolus_done" in out and "normal bolus complete, 100 mU" in out and "rewind" not in out

    rc, out, err = run(capsys, url, "history", "export", "--format", "csv")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == names
    by = {r["name"]: r for r in rows}
    assert by["reservoir"]["a"] == "20000" and by["reservoir"]["a_mU"] == "100000"
    assert by["bolus_request"]["a_mU"] == "100" and by["bolus_request"]["b_mU"] == "0"
    assert by["bolus_done"]["a"] == "20" and by["bolus_done"]["a_mU"] == "100" and by["bolus_done"]["b"] == "1"
    assert by["temp_start"]["a"] == "0" and by["temp_start"]["b"] == "15" and by["temp_start"]["a_mU"] == ""
    assert by["temp_end"]["b"] == "2" and "cancelled" in by["temp_end"]["detail"]
    assert by["resume"]["type"] == "12"

    path = tmp_path / "h.json"
    rc, _, err = run(capsys, url, "history", "export", "--format", "json", "-o", str(path), "--type", "bolus_request")
    assert rc == 0 and "wrote 1 record" in err
    exported = json.loads(path.read_text())
    assert exported["uu_per_step"] == 5000
    assert [(r["name"], r["a_mU"], r["b_mU"]) for r in exported["records"]] == [("bolus_request", 100, 0)]


def test_history_beyond_the_ring(sim, capsys):
    url = sim.console_url
    with PumpClient(url) as c:
        for _ in range(40):
            c.request("profile_select", name="default")
    doc = run_json(capsys, url, "history", "--all")
    oldest = doc["oldest"]  # the pump keeps the newest records of its RAM ring
    assert 1 < oldest <= 40 - 15
    assert [r["seq"] for r in doc["records"]] == list(range(oldest, 41))
    assert all(r["name"] == "profile_select" for r in doc["records"])
    rc, out, _ = run(capsys, url, "history", "--limit", "2")
    assert rc == 0 and f"records 1..{oldest - 1} are gone" in out


# ---- limits -------------------------------------------------------------------------------------
def test_limits_set_and_show(sim, capsys):
    new = run_json(capsys, sim.console_url, "limits", "set", "max_bolus=5", "max_basal=2.5",
                   "bolus_speed=3", "bolus_increment=0.05", "max_hour=12", "max_day=80", "max_iob=7.5")
    assert new == {"max_bolus_mU": 5000, "max_basal_mUh": 2500, "bolus_speed_mU_min": 3000,
                   "bolus_increment_mU": 50, "max_hour_mU": 12000, "max_day_mU": 80000, "max_iob_mU": 7500}
    assert run_json(capsys, sim.console_url, "limits", "show") == new
    rc, out, _ = run(capsys, sim.console_url, "limits", "show")
    assert rc == 0 and "5.000 U" in out and "2.500 U/h" in out and "3.000 U/min" in out and "0.050 U" in out
    assert "max_hour" in out and "12.000 U" in out and "80.000 U" in out and "7.500 U" in out
    rc, _, err = run(capsys, sim.console_url, "limits", "set", "max_bolus_mU=40000")  # raw key, above ceiling
    assert rc == 2 and "range" in err
    rc, _, err = run(capsys, sim.console_url, "limits", "set", "max_hour=1")  # below max bolus
    assert rc == 2 and "range" in err
    start_delivery(sim)
    rc, _, err = run(capsys, sim.console_url, "bolus", "1.01")  # not a multiple of the new 0.05 U increment
    assert rc == 2 and "multiples of 50 mU" in err


# ---- refused before sending, transport ----------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["bolus", "2.5001"], ["bolus", "abc"], ["bolus", "-1"], ["bolus", "inf"], ["bolus", "0"],
    ["bolus", "1", "--minutes", "30"], ["bolus", "1", "--ext", "1"], ["bolus", "1", "--ext", "1", "--minutes", "40"],
    ["reservoir", "insert", "1e-4"], ["reservoir", "fill", "x"], ["reservoir", "change", "-5"],
    ["basal", "set", "00:00"], ["basal", "set", "6:75=1"], ["basal", "set", "00:00=0.0005"],
    ["temp", "set", "--percent", "300", "--minutes", "30"], ["temp", "set", "--rate", "1", "--minutes", "20"],
    ["calc", "set", "--cr", "00:00=10.05", "--isf", "00:00=50", "--target", "00:00=100-120"],
    ["calc", "set"], ["calc", "set", "--cr", "00:00=10", "--isf", "00:00=50", "--target", "00:00=100"],
    ["calc", "suggest"],
    ["time", "set", "2024-03-05 07:30"], ["time", "set", "1999-12-31T23:59"],
    ["history", "--type", "nosuch"], ["history", "--limit", "0"],
    ["limits", "set", "max_bolus=ten"], ["limits", "set", "max_bolus"], ["limits", "set", "speed=1"],
    ["limits", "set", "max_bolus_mU=1.5"], ["limits", "set", "max_hour=1", "max_hour_mU=1000"],
])
def test_bad_arguments_are_refused_before_anything_is_sent(capsys, argv):
    # Nothing listens on this port: exit 2 (not 3) proves the port was never opened.
    rc, out, err = run(capsys, f"socket://127.0.0.1:{free_port()}", *argv)
    assert rc == 2
    assert "nothing was sent" in err and out == ""


def test_transport_problems_exit_3(capsys, monkeypatch):
    rc, _, err = run(capsys, f"socket://127.0.0.1:{free_port()}", "status")
    assert rc == 3 and "open port" in err.lower()
    rc, _, err = run(capsys, "nosuchscheme://x", "status")
    assert rc == 3
    monkeypatch.delenv("BASALT_PORT", raising=False)
    assert main(["status"]) == 2
    assert "no port" in capsys.readouterr().err
    # A peer that accepts and never answers.
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        url = f"socket://127.0.0.1:{ls.getsockname()[1]}"
        rc, _, err = run(capsys, url, "--timeout", "0.1", "ping")
    assert rc == 3 and "no reply" in err


def test_reservoir_change_times_out_with_exit_3(sim, capsys):
    # Lockstep and nobody grants time: the rewind never completes.
    rc, out, err = run(capsys, sim.console_url, "reservoir", "change", "100", "--wait-timeout", "0.3")
    assert rc == 3 and "did not reach 'rewound'" in err


# ---- events -------------------------------------------------------------------------------------
def follow(sim, capsys, argv: list[str], step_ms: int = 5000) -> tuple[int, str]:
    """Run `pumpctl events ...` in a thread; once it is connected, grant virtual time until it ends."""
    result: dict[str, int] = {}
    th = threading.Thread(target=lambda: result.setdefault("rc", main(["--port", sim.console_url, *argv])))
    th.start()
    deadline = time.monotonic() + 20
    out = err = ""
    # The pump is paused, so no event can be missed while pumpctl connects; it says when it has.
    while "following events" not in err and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
        o, e = capsys.readouterr()
        out, err = out + o, err + e
    while th.is_alive() and time.monotonic() < deadline:
        sim.advance(step_ms)
        th.join(0.02)
    th.join(5)
    assert not th.is_alive(), "events did not stop"
    return result["rc"], out + capsys.readouterr().out


def test_events_count_collects_real_events(sim, capsys):
    start_delivery(sim)
    run_json(capsys, sim.console_url, "bolus", "5")  # 200 s at 1.5 U/min: a progress event every 5 s
    rc, out = follow(sim, capsys, ["--json", "events", "--count", "3"])
    assert rc == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 3
    assert [e["ev"] for e in events] == ["bolus"] * 3
    assert all(e["data"]["phase"] == "progress" and e["data"]["requested_mU"] == 5000 for e in events)
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 3))
    done = [e["data"]["delivered_mU"] for e in events]
    assert done == sorted(done) and done[0] > 0
    assert all(e["data"]["delivered_mU"] == e["data"]["delivered_steps"] * MU_PER_STEP for e in events)

    rc, out = follow(sim, capsys, ["events", "--count", "2"])
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all("bolus" in ln and "progress" in ln and "of 5.000 U" in ln for ln in lines)


def test_events_stop_after_for_seconds(sim, capsys):
    t0 = time.monotonic()
    rc, out, err = run(capsys, sim.console_url, "events", "--for", "0.3")
    assert rc == 0 and out == "" and "following events" in err
    assert time.monotonic() - t0 < 5


def test_events_show_completion_and_temp_basal_end(sim, capsys):
    start_delivery(sim)
    run_json(capsys, sim.console_url, "bolus", "0.1")  # 20 steps: done within 4 s
    rc, out = follow(sim, capsys, ["--json", "events", "--count", "2"], step_ms=1000)
    assert rc == 0
    first, ev = (json.loads(line) for line in out.splitlines())
    assert first["data"]["phase"] == "progress"
    assert ev["ev"] == "bolus" and ev["data"]["phase"] == "complete"
    assert ev["data"]["delivered_steps"] == 20 == sim.plant.net_steps()
    run_json(capsys, sim.console_url, "temp", "set", "--percent", "200", "--minutes", "15")
    rc, out = follow(sim, capsys, ["events", "--count", "1"], step_ms=300_000)
    assert rc == 0 and "temp_basal" in out and "200% of the profile for 15 min: ended" in out
