"""End to end: the firmware in the Unix port, driven over its console, measured by the plant."""
import pytest

from host.client import PumpError

HOUR = 3_600_000
DAY = 24 * HOUR
TICK = 1000


def test_basal_day_is_exact_to_the_step(sim_dut):
    t0 = sim_dut.prepare(reservoir_mu=300_000, segments=[[0, 1000]])  # 1.0 U/h
    sim_dut.sim.run_until(t0 + DAY + TICK)  # one more tick settles the last train
    plant = sim_dut.sim.plant
    assert plant.steps_between(t0, t0 + DAY + 1) == 4800  # 24.000 U at 200 steps/U
    assert plant.steps_between(t0 + DAY + 1, t0 + DAY + TICK + 1) == 0
    st = sim_dut.request("status")
    assert st["basal_delivered_mU"] == 24_000
    assert st["reservoir_mU"] == 300_000 - 24_000
    assert st["reservoir_steps"] == 60_000 - plant.net_steps()
    # spread evenly at the mechanism's resolution: one step every 18 s, no hourly lumps
    assert plant.max_gap_ms(t0, t0 + DAY) == 18_000


def test_bolus_at_configured_speed_beside_basal(sim_dut):
    start = sim_dut.prepare(segments=[[0, 1000]])
    sim, c = sim_dut.sim, sim_dut.client
    sim.run_until(start + HOUR)
    c.drain_events()
    t0 = sim.now_ms
    c.request("bolus", mU=2500)
    sim.run_until(t0 + 200_000)
    done = c.expect_event("bolus", lambda d: d["phase"] == "complete", timeout=1)
    assert done.data["delivered_mU"] == 2500
    times = [t for t in sim.plant.step_times_us() if t > t0 * 1000]  # a basal step falls exactly on t0
    # 2.5 U at 1.5 U/min = 500 steps over 100 s, plus 1.0 U/h basal (one step per 18 s)
    bolus_window = [t for t in times if t < (t0 + 101_000) * 1000]
    assert len(bolus_window) == 500 + 101_000 // 18_000
    duration_s = (bolus_window[-1] - bolus_window[0]) / 1e6
    speed_u_min = 2.5 / (duration_s / 60)
    assert 1.45 <= speed_u_min <= 1.55, speed_u_min
    st = c.request("status")
    assert st["bolus_delivered_mU"] == 2500
    assert st["delivered_steps"] == sim.plant.net_steps() - sim.plant.steps_between(sim.now_ms - TICK + 1, sim.now_ms + 1)


# 1.5 U/min = 5 steps/s: a train of 5 steps per 1 s tick from t=1 s, steps 200 ms apart.
@pytest.mark.parametrize(("cancel_after_ms", "steps"), [(999, 0), (1_001, 1), (37_300, 182), (60_000, 296)])
def test_cancel_mid_bolus_reports_exactly(sim_dut, cancel_after_ms, steps):
    sim_dut.prepare(segments=[[0, 0]])  # no basal: every plant step is bolus
    sim, c = sim_dut.sim, sim_dut.client
    c.request("bolus", mU=5000)
    sim.advance(cancel_after_ms)
    r = c.request("bolus_cancel")
    sim.advance(10_000)
    assert r["delivered_steps"] == sim.plant.net_steps()
    assert r["delivered_mU"] == sim.plant.net_steps() * 5
    assert r["delivered_steps"] == steps
    assert c.request("status")["bolus"] is None


def test_suspend_stops_delivery_within_one_control_period(sim_dut):
    sim_dut.prepare(segments=[[0, 3000]])
    sim, c = sim_dut.sim, sim_dut.client
    c.request("bolus", mU=5000)
    sim.advance(20_500)
    t_suspend = sim.now_ms
    r = c.request("suspend")
    assert r["bolus_cancelled"]["phase"] == "cancelled"
    sim.advance(HOUR)
    assert sim.plant.steps_between(t_suspend + TICK, sim.now_ms + 1) == 0
    st = c.request("status")
    assert st["state"] == "suspended" and st["basal_mUh"] == 0
    assert st["delivered_steps"] == sim.plant.net_steps()
    c.request("resume")
    sim.advance(HOUR)
    assert sim.plant.steps_between(t_suspend + TICK, sim.now_ms + 1) == 600  # 3 U/h resumed


def test_over_limit_bolus_refused_with_reason(sim_dut):
    t0 = sim_dut.prepare()
    sim, c = sim_dut.sim, sim_dut.client
    limit = c.request("limits_get")["max_bolus_mU"]
    before = c.request("status")
    with pytest.raises(PumpError) as e:
        c.request("bolus", mU=limit + 10)
    assert e.value.code == "limit" and "max_bolus" in e.value.msg
    after = c.request("status")
    assert {k: v for k, v in after.items() if k != "history_seq"} == {k: v for k, v in before.items() if k != "history_seq"}
    assert c.request("history", since=before["history_seq"])["records"][0][2] == 8  # the refusal is logged
    sim.advance(60_000)
    assert sim.plant.steps_between(t0, sim.now_ms + 1) == 60 * 1000 // 18_000  # basal only


def test_lockstep_runs_are_identical(tmp_path):
    from hil.dut import Dut

    logs = []
    for i in range(2):
        d = Dut.simulated(storage_dir=tmp_path / str(i))
        try:
            d.prepare(segments=[[0, 800], [360, 1350], [1080, 650]])
            d.sim.run_until(2 * HOUR + 123)
            d.request("bolus", mU=3210)
            d.sim.advance(41_700)
            d.request("bolus_cancel")
            d.sim.run_until(8 * HOUR)
            logs.append([(t.t0_ms, t.n, t.hz, t.emitted) for t in d.sim.plant.trains])
        finally:
            d.close()
    assert logs[0] == logs[1] and len(logs[0]) > 100


def test_annunciator_shows_state_and_sounds_alarms(sim_dut):
    """The core reaches the buzzer and LED only through the annunciator HAL; the simulator's
    board records every pattern with its virtual time."""
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(reservoir_mu=1000, segments=[[0, 3000]])  # 1 U at 3 U/h runs dry in 20 min
    seen = [(kind, pattern) for _, kind, pattern in sim.annunciations]
    assert ("led", "ok") in seen and ("buzzer", "chirp") in seen  # resumed
    sim.advance(3600_000)
    alarm_t = [t for t, kind, pattern in sim.annunciations if kind == "buzzer" and pattern == "alarm"]
    assert alarm_t, sim.annunciations
    assert c.request("status")["reason"] == "reservoir_empty"
    assert ("led", "warn") in [(k, p) for _, k, p in sim.annunciations]
