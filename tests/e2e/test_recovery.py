"""Recovery after power cuts and resets, end to end: the real firmware restarted on the same
storage by SimPump (harness time goes on; the firmware's clock starts again at 0), checked
through the protocol and against the plant. The random campaign is tests/e2e/test_power_cut.py;
the rules are in docs/persistence.md."""
from __future__ import annotations

import pytest

from hil.power import flash
from host.client import PumpClient

HOUR = 3_600_000


def reconnect(d) -> PumpClient:
    d.client.close()
    d.client = PumpClient(d.sim.console_url)
    return d.client


def new_records(d, since: int) -> list[list[int]]:
    out = []
    while True:
        r = d.request("history", since=since, limit=32)
        out += r["records"]
        if r["next"] >= r["newest"]:
            return out
        since = r["next"]


def test_a_bolus_cut_mid_train_is_interrupted_never_resumed(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    d.request("bolus", mU=3000)
    sim.advance(20_500)  # mid-train: the tick at 20 s started one, half of it is out
    before = d.request("status")
    seq = before["history_seq"]
    tr = sim.plant.trains[-1]
    sim.kill()
    assert 0 < tr.emitted < tr.n  # the power cut stopped the motor mid-train
    t_cut = sim.now_ms
    sim.restart()
    reconnect(d)
    assert sim.resets == [(t_cut, "power")] and sim.now_ms == (t_cut // 1000 + 1) * 1000  # on a whole second
    st = d.request("status")
    assert st["state"] == "running" and st["bolus"] is None
    assert {"unexpected_restart", "bolus_interrupted"} <= set(st["alarms"])
    recs = new_records(d, seq)
    assert [r[2] for r in recs][:2] == [flash.H["BOOT"], flash.H["BOLUS_INTERRUPTED"]]
    boot, intr = recs[0], recs[1]
    assert boot[3:] == [1, 0]  # power; the last shutdown was not clean
    plant_bolus = sum(t.emitted for t in sim.plant.trains if t.direction > 0) - before["basal_delivered_mU"] // 5
    assert intr[4] == 600 and plant_bolus - flash.CKPT <= intr[3] <= plant_bolus  # delivered, within the bound
    assert st["uptime_s"] <= before["uptime_s"] and st["uptime_s"] >= before["uptime_s"] - 3  # pump time goes on
    # harness time goes on: the plant's next train is after the cut, and only basal comes
    n = len(sim.plant.trains)
    sim.advance(10 * 60_000)
    later = sim.plant.trains[n:]
    assert later and later[0].t0_ms > t_cut and all(t.n == 1 for t in later)
    assert d.request("status")["bolus_delivered_mU"] == st["bolus_delivered_mU"]


def test_suspended_stays_suspended_and_a_temp_basal_goes_on(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    d.request("temp_basal", percent=200, minutes=60)
    sim.advance(10 * 60_000 + 300)
    t = d.request("status")["temp_basal"]
    sim.kill()
    sim.restart()
    reconnect(d)
    st = d.request("status")
    assert st["state"] == "running" and st["basal_mUh"] == 2000
    assert st["temp_basal"]["percent"] == 200 and abs(st["temp_basal"]["remaining_s"] - t["remaining_s"]) <= 60
    d.request("suspend")
    sim.advance(30_000)
    sim.kill()
    sim.restart()
    reconnect(d)
    st = d.request("status")
    assert st["state"] == "suspended" and st["reason"] == "user"
    n = len(sim.plant.trains)
    sim.advance(5 * 60_000)
    assert len(sim.plant.trains) == n  # nothing moves while suspended


def test_a_clean_shutdown_restarts_without_an_alarm(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    sim.advance(HOUR)
    seq = d.request("status")["history_seq"]
    sim.stop()  # Q: the orderly shutdown marks the journal clean
    sim.restart("power")
    reconnect(d)
    st = d.request("status")
    assert st["state"] == "running" and "unexpected_restart" not in st["alarms"]
    assert [r[2:] for r in new_records(d, seq)] == [[flash.H["BOOT"], 1, 1]]


def test_a_torn_settings_write_keeps_the_old_settings(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    d.request("profile_set", name="night", segments=[0, 500])
    sim.cut_storage(40)  # inside settings.json.new: the profile_select never completes
    with pytest.raises((TimeoutError, OSError)):  # no reply: the power went
        d.client.request("profile_select", name="night", timeout=0.5)
    sim.proc.wait(timeout=5)
    assert sim.proc.returncode == 4  # the cut's exit status
    assert (sim.storage_dir / "settings.json.new").stat().st_size == 40
    sim.restart()
    reconnect(d)
    st = d.request("status")
    assert st["profile"] == "default" and "settings_lost" not in st["alarms"]
    assert "unexpected_restart" in st["alarms"]


def test_a_torn_history_record_is_dropped_and_reported(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    seq = d.request("status")["history_seq"]
    sim.cut_storage(7)  # the bolus request record: 7 of its 20 bytes reach flash
    with pytest.raises((TimeoutError, OSError)):  # no reply: the power went
        d.client.request("bolus", mU=1000, timeout=0.5)
    sim.proc.wait(timeout=5)
    assert (sim.storage_dir / "h0").stat().st_size == seq * flash.REC + 7
    sim.restart()
    reconnect(d)
    recs = new_records(d, seq)
    assert recs[0][2:] == [flash.H["BOOT"], 1, 0] and recs[1][2:] == [flash.H["REPAIR"], seq + 1, 1]
    assert d.request("status")["bolus"] is None  # never acknowledged, never delivered
    assert (sim.storage_dir / "h0").stat().st_size % flash.REC == 0


def test_a_hang_ends_in_a_watchdog_reset(sim_dut):
    d, sim = sim_dut, sim_dut.sim
    d.prepare(segments=[[0, 1000]])
    sim.advance(60_000)
    assert sim.wdt_ms > 0
    t = sim.now_ms
    sim.hang()
    assert sim.resets == [(t + sim.wdt_ms, "wdt")] and sim.now_ms == t + sim.wdt_ms
    reconnect(d)
    st = d.request("status")
    assert "unexpected_restart" in st["alarms"] and st["state"] == "running"
    seq = st["history_seq"]
    boot = [r for r in new_records(d, seq - 3) if r[2] == flash.H["BOOT"]]
    assert boot[-1][3:] == [2, 0]  # reset cause: the watchdog
    # a hang the harness did not announce: a grant left unanswered is taken for one
    sim.hang_timeout = 1.0
    sim.send_line("H")
    sim.advance(10_000)
    assert len(sim.resets) == 2 and sim.resets[1][1] == "wdt"
    reconnect(d)
    assert d.request("status")["state"] == "running"
