"""Real-time mode: the same firmware on the wall clock, as people and latency measurements use it."""
import time

from hil.dut import Dut
from hil.sim.firmware import SimPump
from host.client import PumpClient


def test_realtime_delivers_and_accounts_exactly():
    with SimPump(mode="realtime") as sim, PumpClient(sim.console_url) as c:
        Dut(c, sim).prepare(reservoir_mu=10_000, segments=[[0, 0]])
        c.request("bolus", mU=1000)
        time.sleep(2.5)  # two or three 1 s ticks of 5 steps at 1.5 U/min
        r = c.request("suspend")
        time.sleep(1.5)  # a train cut short must not keep stepping
        assert 5 <= r["bolus_cancelled"]["delivered_steps"] < 200
        assert r["bolus_cancelled"]["delivered_steps"] == sim.plant.net_steps()
        st = c.request("status")
        assert st["reservoir_steps"] == 2000 - sim.plant.net_steps()


def test_realtime_clock_follows_the_wall():
    with SimPump(mode="realtime") as sim, PumpClient(sim.console_url) as c:
        a = c.request("ping")["uptime_s"]
        time.sleep(2.2)
        b = c.request("ping")["uptime_s"]
        assert 1 <= b - a <= 4
