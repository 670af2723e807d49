"""End to end: the occlusion hazards of docs/hazards.md with the real firmware on the simulated
hardware (hil/sim/hardware.py). The line is blocked in the fluid model; the firmware sees only its
force sensor. docs/occlusion.md has the detector and the full figures (make occlusion)."""
import pytest

from hil.occlusion import inloop
from host.client import PumpError

MIN = 60_000
HOUR = 3_600_000
GOAL_MISSED_STEPS = 100  # 0.5 U
GOAL_RELEASE_STEPS = 20  # 0.1 U


def events(c):
    c.request("status")  # every event sent before the reply is in
    return c.drain_events()


def occlusion_alarms(evs):
    return [e.data for e in evs if e.name == "alarm" and e.data.get("alarm") == "occlusion"
            and e.data.get("state") == "active"]


@pytest.mark.parametrize("rate_muh, bolus_mu", [(1000, 0), (1000, 5000)], ids=["basal_1U_h", "bolus_5U"])
def test_hazard_occlusion_detected_at_basal_and_bolus(sim_dut, rate_muh, bolus_mu):
    """A blocked line stops delivery with the high-priority alarm before 0.5 U is missed; resuming
    needs the user, and a resumed pump whose line is clear delivers again without a false alarm."""
    sim, c, hw = sim_dut.sim, sim_dut.client, sim_dut.sim.hardware
    sim_dut.prepare(segments=[[0, rate_muh]])
    sim.advance(2 * HOUR)
    if bolus_mu:
        c.request("bolus", mU=bolus_mu)
        sim.advance(30_000)
    c.drain_events()
    t_on = sim.now_ms + 400
    hw.occlude(at_ms=t_on)
    sim.advance(2 * MIN if bolus_mu else HOUR)
    ev = occlusion_alarms(events(c))
    assert len(ev) == 1 and ev[0]["priority"] == "high", ev
    if bolus_mu:
        assert ev[0]["stopped"]["bolus_cancelled"]["phase"] == "cancelled"
    t_alarm = inloop.alarm_tick(sim, t_on)
    assert t_alarm is not None
    missed = hw.position_at(t_alarm - 1) - hw.position_at(t_on - 1) - hw.delivered_nl_between(t_on, t_alarm - 1) / 50
    assert 0 < missed <= GOAL_MISSED_STEPS
    st = c.request("status")
    assert st["state"] == "suspended" and st["reason"] == "occlusion"
    n = len(sim.plant.trains)
    sim.advance(10 * MIN)
    assert all(tr.direction < 0 for tr in sim.plant.trains[n:])  # nothing forward: it waits for the user
    with pytest.raises(PumpError, match="acknowledge"):
        c.request("resume")
    hw.clear_occlusion()
    c.request("alarm_ack", alarm="occlusion")
    c.request("resume")
    sim.advance(2 * HOUR)
    assert occlusion_alarms(events(c)) == []
    assert c.request("status")["state"] == "running"


@pytest.mark.parametrize("case, seed", [("basal_0.1", 3), ("basal_1", 5), ("bolus_5", 7)])
def test_hazard_occlusion_backoff_limits_release(case, seed):
    """After the alarm the plunger takes back what went into the blocked line: when the line
    clears (1 min, 10 min, 1 h later) at most 0.1 U comes out (hil/occlusion/inloop.py: missed
    units from the fluid model, the release what-if checked against a real clearing)."""
    r = inloop.occlusion_run(case, seed)
    assert r.t_alarm_ms is not None, "no occlusion alarm"
    assert 0 < r.missed_steps <= GOAL_MISSED_STEPS, r
    assert 0 < r.backoff_steps <= 400, r
    for delay, released in r.released_steps.items():
        assert released <= GOAL_RELEASE_STEPS, (delay, r)
    _, what_if, real = r.release_check
    assert real == pytest.approx(what_if, abs=0.01)
