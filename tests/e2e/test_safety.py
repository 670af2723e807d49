"""End to end: the hazards of docs/hazards.md, each injected into the simulated hardware around the
real firmware, and the firmware's control observed from outside (plant step log, events,
annunciations, status). Test names starting `test_hazard_` are the ones the hazard table cites."""
import pytest

from host.client import PumpClient, PumpError

MIN = 60_000
HOUR = 3_600_000


def events(c):
    """Every event the pump has sent so far: a request's reply comes after them on the wire."""
    c.request("status")
    return c.drain_events()


def alarms_of(events, name=None, state=None):
    return [e.data for e in events if e.name == "alarm" and (name is None or e.data["alarm"] == name)
            and (state is None or e.data["state"] == state)]


def sounded(sim, t_from, what="buzzer"):
    return [(t, p) for t, kind, p in sim.annunciations if kind == what and t >= t_from and p != "off"]


# ---- the alarm system ---------------------------------------------------------------------------

def test_alarm_latches_repeats_escalates_and_acknowledges(sim_dut):
    """reservoir_empty (high): one event and one record however long it lasts; the buzzer repeats
    every 15 s, escalates to the siren with vibration after 5 min; an acknowledge silences it but
    it stays active (its condition lasts) until a new reservoir is ready."""
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(reservoir_mu=1000, segments=[[0, 0]])
    c.request("bolus", mU=1000)  # the whole reservoir: 200 steps at 5 steps/s
    c.drain_events()
    sim.advance(45_000)
    st = c.request("status")
    assert st["state"] == "suspended" and st["reason"] == "reservoir_empty"
    assert st["reservoir_steps"] == 0 and sim.plant.net_steps() == 200  # every step, none more
    t_alarm = next(t for t, p in sounded(sim, 0) if p == "alarm")
    sim.advance(6 * MIN)
    ev = alarms_of(events(c), "reservoir_empty")
    assert len(ev) == 1 and ev[0]["priority"] == "high" and ev[0]["state"] == "active"
    assert ev[0]["stopped"]["delivered_mU"] == 1000  # what was delivered before the stop
    beeps = sounded(sim, t_alarm)
    gaps = {b[0] - a[0] for a, b in zip(beeps, beeps[1:], strict=False)}
    assert gaps == {15_000}, gaps  # repeats every 15 s
    assert [p for t, p in beeps if t < t_alarm + 300_000] == ["alarm"] * 20
    assert {p for t, p in beeps if t >= t_alarm + 300_000} == {"siren"}  # escalated after 5 min
    assert sounded(sim, t_alarm + 300_000, "vibration")
    assert c.request("alarm_ack", alarm="reservoir_empty") == {"acknowledged": 1}
    t_ack = sim.now_ms
    sim.advance(20 * MIN)
    assert [p for t, p in sounded(sim, t_ack + 1)] == ["chirp"]  # one reminder in 15 min, no more
    lst = c.request("alarms")["alarms"]
    assert [(a["alarm"], a["state"]) for a in lst] == [("reservoir_empty", "acknowledged")]
    with pytest.raises(PumpError, match="empty"):
        c.request("resume")
    sim_dut.change_reservoir()
    assert c.request("alarms")["alarms"] == []
    alarm_recs = c.request("history", type=13, limit=32)["records"]  # ALARM: [seq, t, type, code, priority]
    clear_recs = c.request("history", type=17, limit=32)["records"]  # ALARM_CLEAR: code, 1 ack / 2 cleared
    assert [(r[3], r[4]) for r in alarm_recs] == [(1, 3)]  # reservoir_empty, high, raised once
    assert [(r[3], r[4]) for r in clear_recs] == [(1, 1), (1, 2)]  # acknowledged, then cleared


def test_several_alarms_ordered_by_priority(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    hw = sim.hardware
    sim_dut.prepare(reservoir_mu=20_000, segments=[[0, 1000]])
    sim.advance(2 * MIN)  # the low-reservoir check runs once a minute: 20 U is below the default
    hw.battery_soc(0.12)  # low battery (medium)
    sim.advance(2 * MIN)
    hw.remove_reservoir()  # reservoir pulled out while delivering (high)
    sim.advance(MIN)
    lst = c.request("alarms")["alarms"]
    got = {a["alarm"]: a["priority"] for a in lst}
    assert got == {"reservoir_low": "low", "battery_low": "medium", "reservoir_removed": "high"}
    t = sim.now_ms
    sim.advance(30_000)
    assert {p for _, p in sounded(sim, t)} == {"alarm"}  # the high one decides the sound
    c.request("alarm_ack", alarm="reservoir_removed")
    t = sim.now_ms
    sim.advance(2 * MIN)
    assert {p for _, p in sounded(sim, t)} == {"alert"}  # now the medium one, every 60 s


def test_acknowledge_and_configure_reject_bad_input(sim_dut):
    c = sim_dut.client
    before = c.request("alarms")
    for args in ({"alarm": "no_such"}, {"alarm": 3}, {"other": 1}):
        with pytest.raises(PumpError):
            c.request("alarm_ack", **args)
    for args in ({"reservoir_low_mU": -1}, {"reservoir_low_h": 73}, {"auto_off_h": 25},
                 {"reservoir_low_mU": 0, "reservoir_low_h": 0}, {"auto_off_h": "12"}, {"x": 1}):
        with pytest.raises(PumpError):
            c.request("alarm_set", **args)
    assert c.request("alarms") == before  # nothing changed


def test_alarm_settings_survive_a_restart(sim_dut):
    c = sim_dut.client
    c.request("alarm_set", reservoir_low_h=6, auto_off_h=12)
    sim_dut.sim.stop()
    sim_dut.sim.start()
    c2 = type(c)(sim_dut.sim.console_url)
    try:
        got = c2.request("alarms")
    finally:
        c2.close()
    assert (got["reservoir_low_h"], got["auto_off_h"], got["reservoir_low_mU"]) == (6, 12, 20_000)


# ---- reservoir --------------------------------------------------------------------------------

def test_hazard_low_reservoir_alerts_by_hours_at_the_current_rate(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(reservoir_mu=10_000, segments=[[0, 2000]])  # 10 U at 2 U/h: 5 h left
    c.request("alarm_set", reservoir_low_h=4)
    c.drain_events()
    sim.advance(50 * MIN)
    assert alarms_of(events(c), "reservoir_low") == []  # 8.33 U = 4.2 h left
    sim.advance(20 * MIN)
    ev = alarms_of(events(c), "reservoir_low")
    assert len(ev) == 1 and ev[0]["priority"] == "low"
    assert c.request("status")["state"] == "running"  # an alert, not a stop


def test_hazard_empty_reservoir_bolus_that_does_not_fit_is_refused(sim_dut):
    sim_dut.prepare(reservoir_mu=2000, segments=[[0, 0]])
    with pytest.raises(PumpError, match="does not fit"):
        sim_dut.request("bolus", mU=2500)
    sim_dut.sim.advance(10_000)
    assert sim_dut.sim.plant.net_steps() == 0


def test_hazard_reservoir_removed_during_delivery_stops_it(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[0, 1000]])
    c.request("bolus", mU=5000)
    sim.advance(20_000)
    c.drain_events()
    sim.hardware.remove_reservoir()
    t = sim.now_ms
    sim.advance(5_000)
    assert sim.plant.steps_between(t + 1001, t + 5000) == 0  # nothing after the next tick
    ev = alarms_of(events(c), "reservoir_removed")
    assert ev and ev[0]["stopped"]["bolus_cancelled"]["phase"] == "cancelled"
    st = c.request("status")
    assert st["state"] == "suspended" and st["reservoir_state"] == "none"
    c.request("alarm_ack")
    with pytest.raises(PumpError):
        c.request("resume")  # a full reservoir change first


# ---- battery ----------------------------------------------------------------------------------

def test_hazard_battery_low_then_depleted_safe_stop(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    hw = sim.hardware
    sim_dut.prepare(segments=[[0, 1000]])
    c.drain_events()
    hw.battery_soc(0.12)
    sim.advance(3 * MIN)
    assert [a["alarm"] for a in alarms_of(events(c))] == ["battery_low"]
    assert c.request("status")["state"] == "running"
    hw.battery_soc(0.02)
    sim.advance(3 * MIN)
    ev = alarms_of(events(c), "battery_depleted")
    assert ev and ev[0]["priority"] == "high"
    st = c.request("status")
    assert st["state"] == "suspended" and st["reason"] == "battery_depleted"
    n = sim.plant.net_steps()
    c.request("alarm_ack")
    with pytest.raises(PumpError, match="battery"):
        c.request("resume")
    sim.advance(10 * MIN)
    assert sim.plant.net_steps() == n
    hw.replace_battery()
    sim.advance(2 * MIN)
    assert c.request("alarms")["alarms"] == []
    c.request("resume")


def test_hazard_battery_swap_keeps_the_therapy_state(sim_dut):
    """Swapping the depleted cell cuts the power: the pump comes back from flash with its
    settings, reservoir, totals and history, still suspended (docs/persistence.md)."""
    d, sim, c = sim_dut, sim_dut.sim, sim_dut.client
    hw = sim.hardware
    d.prepare(segments=[[0, 1000]])
    c.request("alarm_set", reservoir_low_mU=30000)
    sim.advance(20 * MIN)
    hw.battery_soc(0.02)
    sim.advance(3 * MIN)
    before = c.request("status")
    assert before["state"] == "suspended" and before["reason"] == "battery_depleted"
    n = sim.plant.net_steps()
    sim.kill()  # the old cell comes out
    hw.replace_battery()
    sim.restart()
    d.client.close()
    d.client = c = PumpClient(sim.console_url)
    st = c.request("status")
    for k in ("state", "reason", "reservoir_steps", "plunger_steps", "basal_delivered_mU", "profile", "delivered_steps"):
        assert st[k] == before[k], k
    assert st["history_seq"] > before["history_seq"]  # the boot record follows what was there
    assert c.request("alarms")["reservoir_low_mU"] == 30000
    sim.advance(2 * MIN)
    assert "battery_depleted" not in c.request("status")["alarms"]  # the new cell clears it
    assert sim.plant.net_steps() == n  # nothing moved through the swap
    c.request("alarm_ack")
    c.request("resume")
    sim.advance(10 * MIN)
    assert sim.plant.net_steps() > n


# ---- motor and delivery faults ----------------------------------------------------------------

def test_hazard_over_delivery_runaway_stopped_within_one_train(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    hw = sim.hardware
    sim_dut.prepare(segments=[[0, 1000]])
    sim.advance(30_000)
    t = sim.now_ms
    hw.run_away(hz=200)  # the motor turns on its own at 1 U/min
    sim.advance(10_000)
    moved = hw.moved_steps_between(t, sim.now_ms) - sim.plant.steps_between(t, sim.now_ms)
    assert 0 < moved <= 200  # stopped within one tick's worth of motion (one train)
    ev = alarms_of(events(c), "motor_fault")
    assert ev and ev[0]["priority"] == "high" and "runaway" in ev[0]["detail"]
    assert not hw.enabled  # the driver is disabled
    assert c.request("status")["state"] == "suspended"


@pytest.mark.parametrize(("fault", "detail"), [("stall", "stall"), ("missed", "missed_steps")])
def test_hazard_under_delivery_motor_fault_detected(sim_dut, fault, detail):
    sim, c = sim_dut.sim, sim_dut.client
    hw = sim.hardware
    sim_dut.prepare(segments=[[0, 0]])
    c.request("bolus", mU=5000)  # 5 steps a tick
    sim.advance(10_000)
    c.drain_events()
    t = sim.now_ms + 999  # from the next train on (the one in flight ends at t - 199)
    hw.stall(at_ms=t) if fault == "stall" else hw.missed_steps(0.5, at_ms=t)
    sim.advance(10_000)
    ev = alarms_of(events(c), "motor_fault")
    assert ev and detail in ev[0]["detail"], ev
    assert ev[0]["stopped"]["bolus_cancelled"]["delivered_steps"] > 0
    assert sim.plant.steps_between(t + 3000, sim.now_ms) == 0  # stopped within a few ticks
    short = sim.plant.steps_between(t, sim.now_ms) - hw.moved_steps_between(t, sim.now_ms)
    assert 0 < short <= 10  # under-delivery bounded to a couple of trains


def test_hazard_encoder_mismatch_detected(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[0, 1000]])
    sim.advance(10_000)
    c.drain_events()
    sim.hardware.encoder_fault(offset=5)
    sim.advance(3_000)
    ev = alarms_of(events(c), "motor_fault")
    assert ev and "+5" in ev[0]["detail"]
    c.request("alarm_ack")
    sim.hardware.encoder_ok()
    sim.advance(2_000)
    c.request("resume")  # re-enables the driver and re-baselines the encoder check
    sim.advance(60_000)
    assert alarms_of(events(c), "motor_fault", "active") == []
    assert c.request("status")["state"] == "running"


# ---- auto-off ---------------------------------------------------------------------------------

def test_hazard_auto_off_alarms_then_suspends(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[0, 1000]])
    c.request("alarm_set", auto_off_h=1)
    t = sim.now_ms
    c.drain_events()
    sim.advance(59 * MIN)
    c.request("status")  # reading is not interaction
    sim.advance(2 * MIN)
    ev = alarms_of(events(c), "auto_off")
    assert ev and ev[0]["priority"] == "high"
    assert c.request("status")["state"] == "running"  # a warning first ...
    sim.advance(2 * MIN)
    st = c.request("status")
    assert st["state"] == "suspended" and st["reason"] == "auto_off"  # ... then the stop
    assert t + HOUR <= sim.now_ms


def test_auto_off_is_reset_by_user_action(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[0, 1000]])
    c.request("alarm_set", auto_off_h=1)
    for _ in range(3):
        sim.advance(40 * MIN)
        c.request("temp_basal", percent=100, minutes=30)  # a user action
    assert alarms_of(events(c), "auto_off") == []
    assert c.request("status")["state"] == "running"
