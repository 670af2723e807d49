"""pumpctl against the real firmware in the simulator (lockstep: virtual time moves only when a
test calls sim.run_until; the firmware answers commands while paused)."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from hil.sim.firmware import SimPump, free_port
from host.cli import main
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


def start_delivery(capsys, url: str, reservoir: str = "100") -> None:
    assert run(capsys, url, "reservoir", "load", reservoir)[0] == 0
    assert run(capsys, url, "resume")[0] == 0


# ---- status, ping -------------------------------------------------------------------------------
def test_status_json_fields_and_human_view(sim, capsys):
    st = run_json(capsys, sim.console_url, "status")
    assert st["state"] == "suspended" and st["reason"] == "boot"
    assert st["basal_mUh"] == 0 and st["reservoir_mU"] == 0 and st["reservoir_steps"] == 0
    assert st["basal_delivered_mU"] == 0 and st["bolus_delivered_mU"] == 0 and st["bolus"] is None

    start_delivery(capsys, sim.console_url, "150.5")
    rc, out, _ = run(capsys, sim.console_url, "status")
    assert rc == 0
    assert "running" in out
    assert "150.500 U (30100 steps)" in out
    assert "none" in out  # no running bolus


def test_ping_and_global_options_after_the_subcommand(sim, capsys, monkeypatch):
    monkeypatch.setenv("BASALT_PORT", sim.console_url)
    rc = main(["ping", "--json"])  # port from the environment, --json after the subcommand
    out, _ = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    assert doc["version"].endswith("/sim") and doc["frames_bad"] == 0 and doc["events_dropped"] == 0
    rc, out, _ = run(capsys, sim.console_url, "ping")
    assert rc == 0 and "pong from" in out and "/sim" in out


# ---- basal --------------------------------------------------------------------------------------
def test_basal_set_then_show_round_trips(sim, capsys):
    rc, out, _ = run(capsys, sim.console_url, "basal", "set", "00:00=0.8", "06:30=1.25", "22:00=0.05")
    assert rc == 0 and "06:30" in out and "1.250" in out
    shown = run_json(capsys, sim.console_url, "basal", "show")
    assert shown["segments"] == [[0, 800], [390, 1250], [1320, 50]]
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
    assert rc == 2 and "range" in err  # above max_basal_mUh (3 U/h)
    assert run_json(capsys, sim.console_url, "basal", "show")["segments"] == [[0, 0]]


# ---- bolus --------------------------------------------------------------------------------------
def test_bolus_then_cancel_reports_what_the_plant_delivered(sim, capsys):
    start_delivery(capsys, sim.console_url)
    started = run_json(capsys, sim.console_url, "bolus", "2.5")
    assert started["phase"] == "started"
    assert started["requested_mU"] == 2500 and started["requested_steps"] == 500
    sim.run_until(3500)  # three whole trains and part of a fourth
    rc, out, err = run(capsys, sim.console_url, "status")
    assert rc == 0, err
    # Trains of ticks 1 and 2 are counted; the one in flight since tick 3 is counted at the next tick.
    assert "Running bolus" in out and "#1 0.050 of 2.500 U delivered (10 of 500 steps)" in out
    rc, out, err = run(capsys, sim.console_url, "cancel")
    assert rc == 0, err
    steps = sim.plant.net_steps()  # no basal programmed: every step is bolus
    assert 0 < steps < 500
    assert f"delivered {fmt_u(steps * MU_PER_STEP)} U of 2.500 U requested ({steps} of 500 steps)" in out
    st = run_json(capsys, sim.console_url, "status")
    assert st["bolus"] is None
    assert st["bolus_delivered_mU"] == steps * MU_PER_STEP and st["delivered_steps"] == steps
    assert st["reservoir_steps"] == 20000 - steps
    # Nothing left to cancel.
    rc, _, err = run(capsys, sim.console_url, "cancel")
    assert rc == 2 and "state" in err and "no bolus" in err


def test_over_limit_bolus_is_refused_with_the_limit_named(sim, capsys):
    start_delivery(capsys, sim.console_url)
    rc, out, err = run(capsys, sim.console_url, "bolus", "10.01")
    assert rc == 2
    assert "limit" in err and "max_bolus_mU" in err
    assert out == ""
    rc, out, err = run(capsys, sim.console_url, "--json", "bolus", "12")
    assert rc == 2 and "max_bolus_mU" in err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["err"] == "limit" and "max_bolus_mU" in doc["msg"]
    sim.run_until(2000)
    assert sim.plant.net_steps() == 0


def test_state_refusals_and_repeated_commands_are_not_replayed(sim, capsys):
    rc, _, err = run(capsys, sim.console_url, "bolus", "1")
    assert rc == 2 and "state" in err and "suspended" in err
    rc, _, err = run(capsys, sim.console_url, "resume")
    assert rc == 2 and "reservoir" in err
    start_delivery(capsys, sim.console_url)
    # A second identical command must be executed (and refused), not answered from the
    # pump's retransmission cache.
    rc, _, err = run(capsys, sim.console_url, "resume")
    assert rc == 2 and "already running" in err
    rc, _, err = run(capsys, sim.console_url, "reservoir", "load", "300")
    assert rc == 2 and "suspend before" in err
    assert run_json(capsys, sim.console_url, "suspend")["state"] == "suspended"
    rc, _, err = run(capsys, sim.console_url, "suspend")
    assert rc == 2 and "already suspended" in err


# ---- limits -------------------------------------------------------------------------------------
def test_limits_set_and_show(sim, capsys):
    new = run_json(capsys, sim.console_url, "limits", "set", "max_bolus=5", "max_basal=2.5",
                   "bolus_speed=3", "bolus_increment=0.05")
    assert new == {"max_bolus_mU": 5000, "max_basal_mUh": 2500, "bolus_speed_mU_min": 3000,
                   "bolus_increment_mU": 50}
    assert run_json(capsys, sim.console_url, "limits", "show") == new
    rc, out, _ = run(capsys, sim.console_url, "limits", "show")
    assert rc == 0 and "5.000 U" in out and "2.500 U/h" in out and "3.000 U/min" in out and "0.050 U" in out
    rc, _, err = run(capsys, sim.console_url, "limits", "set", "max_bolus_mU=40000")  # raw key, above ceiling
    assert rc == 2 and "range" in err
    start_delivery(capsys, sim.console_url)
    rc, _, err = run(capsys, sim.console_url, "bolus", "1.01")  # not a multiple of the new 0.05 U increment
    assert rc == 2 and "multiple of 50 mU" in err


# ---- refused before sending, transport ----------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["bolus", "2.5001"], ["bolus", "abc"], ["bolus", "-1"], ["bolus", "inf"],
    ["reservoir", "load", "1e-4"],
    ["basal", "set", "00:00"], ["basal", "set", "6:75=1"], ["basal", "set", "00:00=0.0005"],
    ["limits", "set", "max_bolus=ten"], ["limits", "set", "max_bolus"], ["limits", "set", "speed=1"],
    ["limits", "set", "max_bolus_mU=1.5"],
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
    start_delivery(capsys, sim.console_url)
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


def test_events_show_state_changes_and_completion(sim, capsys):
    start_delivery(capsys, sim.console_url)
    run_json(capsys, sim.console_url, "bolus", "0.1")  # 20 steps: done within 4 s
    rc, out = follow(sim, capsys, ["--json", "events", "--count", "1"], step_ms=1000)
    assert rc == 0
    ev = json.loads(out)
    assert ev["ev"] == "bolus" and ev["data"]["phase"] == "complete"
    assert ev["data"]["delivered_steps"] == 20 == sim.plant.net_steps()
