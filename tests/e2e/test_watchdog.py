"""The watchdog: a hung driver never gets the loop round to feed it, the board resets, and the
firmware boots into its safe state with an `unexpected_restart` alarm (docs/alarms.md,
docs/persistence.md)."""
from host.client import PumpClient


def test_hazard_hang_resets_and_boots_safe(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[0, 1000]])
    c.request("bolus", mU=3000)
    sim.advance(20_000)
    emitted = sim.plant.net_steps()
    t_hang = sim.now_ms
    sim.hang()  # the driver never returns: only the watchdog gets the board out
    assert sim.resets[-1] == (t_hang + sim.wdt_ms, "wdt")
    assert sim.plant.steps_between(t_hang + 1000, t_hang + sim.wdt_ms) == 0  # nothing moved while hung
    assert sim.plant.net_steps() <= emitted + 5  # at most the train in flight when it hung
    c2 = PumpClient(sim.console_url)
    try:
        sim.advance(5_000)
        st = c2.request("status")
        assert "unexpected_restart" in st["alarms"]
        assert st["bolus"] is None  # a bolus is never resumed after a reset
        alarms = {a["alarm"]: a for a in c2.request("alarms")["alarms"]}
        assert alarms["unexpected_restart"]["priority"] == "medium"
        c2.request("alarm_ack", alarm="unexpected_restart")
        assert "unexpected_restart" not in c2.request("status")["alarms"]
    finally:
        c2.close()


def test_watchdog_is_started_and_fed_on_every_healthy_tick(sim_dut):
    """A day of delivery: the HAL's watchdog (virtual time, 4 s) never fires."""
    sim = sim_dut.sim
    sim_dut.prepare(segments=[[0, 1000]])
    sim.advance(24 * 3_600_000)
    assert sim.wdt_ms == 4000
    assert sim.resets == []
