"""Therapy end to end: the firmware in the Unix port, driven over its console, its delivery
measured by the plant and compared, to the step, with an independent model of the documented
rules (therapy_model.py).

Commands are issued at checkpoints 999 ms after a tick, when the tick's step train has finished
(the plant's last step of any train falls within 998 ms), so no train is ever cut short and the
model needs no knowledge of the motor's timing.
"""
import random

import pytest

from host.client import PumpError
from host.units import flat

from .therapy_model import TherapyModel

TICK = 1000
HOUR_S = 3600
STEP_MU = 5


class Run:
    """The pump and the model side by side."""

    def __init__(self, dut, segments, limits=None, reservoir_mu=300_000):
        self.dut, self.sim, self.c = dut, dut.sim, dut.client
        self.t0 = dut.prepare(reservoir_mu=reservoir_mu, segments=segments, limits=limits)
        self.accepted: list[str] = []
        self.refused: list[str] = []
        u = self.c.request("status")["uptime_s"]
        self.model = TherapyModel(running=True, u=u)
        self.model.profile_set("default", segments)
        self.goto(u)

    @property
    def uptime(self):
        return self.model.u

    def goto(self, u):
        """Advance pump and model to the checkpoint 999 ms after the tick that ends second u-1."""
        self.sim.run_until(u * TICK + 999)
        self.model.run_to(u)

    def advance(self, seconds):
        self.goto(self.uptime + seconds)

    def plant_steps(self):
        return self.sim.plant.steps_between(self.t0, self.sim.now_ms + 1)

    def check(self):
        assert self.plant_steps() == self.model.steps, f"at uptime {self.uptime}: plant vs model"

    def do(self, cmd, **args):
        """Send a command. Accepted: return the reply. Refused: assert nothing changed, return None."""
        before = self._state()
        if "segments" in args:
            args = dict(args, segments=flat(args["segments"]))
        try:
            reply = self.c.request(cmd, **args)
        except PumpError as e:
            assert self._state() == before, f"refused {cmd} {args} ({e}) changed the pump"
            self.refused.append(f"{cmd}:{e.code}")
            return None
        self.accepted.append(cmd)
        return reply

    def _state(self):
        st = self.c.request("status")
        st.pop("history_seq")
        return st, self.c.request("profile_list"), self.c.request("limits_get")


def test_three_days_with_profile_switches(sim_dut):
    r = Run(sim_dut, [[0, 800], [360, 1200], [720, 950], [1320, 600]])
    weekend = [[0, 700], [480, 1000], [1380, 500]]
    assert r.do("profile_set", name="weekend", segments=weekend)
    r.model.profile_set("weekend", weekend)
    for day in range(3):
        r.advance(8 * HOUR_S + 17)
        name = "weekend" if day % 2 == 0 else "default"
        assert r.do("profile_select", name=name)
        r.model.active = name
        r.advance(16 * HOUR_S - 17)
        r.check()
    st = r.c.request("status")
    assert st["basal_delivered_mU"] <= r.model.steps * STEP_MU  # the newest train settles next tick
    assert r.model.steps > 3 * 15 * 200  # a real amount of insulin went through


def test_temp_basals_follow_segments_and_end(sim_dut):
    r = Run(sim_dut, [[0, 1000], [60, 2000], [120, 400]])
    r.do("time_set", local_s=30 * 60)
    r.model.offset_s = 30 * 60 - r.uptime
    assert r.do("temp_basal", percent=150, minutes=60)  # crosses the 01:00 boundary
    r.model.temp_basal(150, 0, 60)
    r.advance(45 * 60)
    r.check()
    assert r.c.request("status")["basal_mUh"] == 3000
    r.advance(30 * 60)  # it ended by itself at 01:30
    r.check()
    assert r.c.request("status")["temp_basal"] is None
    assert r.do("temp_basal", rate_mUh=0, minutes=120)
    r.model.temp_basal(-1, 0, 120)
    r.advance(40 * 60)
    info = r.do("temp_basal_cancel")
    assert info["phase"] == "cancelled" and info["delivered_steps"] == 0
    r.model.temp = None
    r.advance(3 * HOUR_S)
    r.check()


def test_extended_overlapping_normal_and_cancel_mid_extended(sim_dut):
    r = Run(sim_dut, [[0, 900]])
    assert r.do("bolus", ext_mU=4000, minutes=120)
    r.model.bolus(0, 800, 120)
    r.advance(30 * 60)
    assert r.do("bolus", mU=2500)  # a normal bolus on top of the running extended one
    r.model.bolus(500)
    r.advance(20 * 60)
    r.check()
    info = r.do("bolus_cancel", kind="extended")
    assert info["kind"] == "extended" and info["delivered_steps"] == r.model.ext[1]
    r.model.cancel("extended")
    r.advance(HOUR_S)
    r.check()
    assert r.do("bolus", mU=1000, ext_mU=1500, minutes=30)  # combo
    r.model.bolus(200, 300, 30)
    r.advance(HOUR_S)
    r.check()
    hist = r.c.request("history", since=0, limit=32)["records"]
    cancels = [h for h in hist if h[2] == 7]
    assert cancels and cancels[-1][3] == info["delivered_steps"] and cancels[-1][4] == -800


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_commands_against_the_model(sim_dut, seed):
    """Property test: random commands (valid and not) and time steps. Delivery equals what the
    schedule and accepted boluses owe, to the step; refused commands change nothing; no 60-minute
    or 24-hour window of the plant's log passes the limits."""
    rng = random.Random(seed)
    limits = {"max_hour_mU": 6000, "max_day_mU": 80000, "max_bolus_mU": 4000}
    r = Run(sim_dut, [[0, 600], [420, 1100], [1200, 800]], limits=limits)
    m = r.model
    for _ in range(40):
        k = rng.randrange(12)
        if k <= 2:
            now = rng.randrange(0, 400) * 10
            ext = rng.choice([0, 0, rng.randrange(10, 300) * 10])
            minutes = rng.choice([30, 45, 60, 120, 240]) if ext else 0
            args = {"mU": now} if not ext else {"mU": now, "ext_mU": ext, "minutes": minutes}
            if r.do("bolus", **args):
                m.bolus(now // STEP_MU, ext // STEP_MU, minutes)
        elif k == 3:
            kind = rng.choice(["normal", "extended", "all"])
            if r.do("bolus_cancel", kind=kind):
                m.cancel(kind)
        elif k == 4:
            minutes = rng.randrange(1, 17) * 15
            if rng.random() < 0.5:
                pct = rng.randrange(0, 26) * 10
                if r.do("temp_basal", percent=pct, minutes=minutes):
                    m.temp_basal(pct, 0, minutes)
            else:
                rate = rng.randrange(0, 36) * 100
                if r.do("temp_basal", rate_mUh=rate, minutes=minutes):
                    m.temp_basal(-1, rate, minutes)
        elif k == 5:
            segs = [[0, rng.randrange(0, 31) * 100]]
            for start in sorted(rng.sample(range(1, 48), rng.randrange(0, 4))):
                segs.append([start * 30, rng.randrange(0, 31) * 100])
            name = rng.choice(["default", "alt"])
            if r.do("profile_set", name=name, segments=segs):
                m.profile_set(name, segs)
        elif k == 6:
            name = rng.choice(["default", "alt"])
            if r.do("profile_select", name=name):
                m.active = name
        elif k == 7:
            local = rng.randrange(0, 10 * 86400)
            if r.do("time_set", local_s=local):
                m.offset_s = local - m.u
        elif k == 8:
            if r.do("suspend"):
                m.suspend()
        elif k == 9:
            if r.do("resume"):
                m.running = True
        elif k == 10:  # commands that must be refused, and change nothing
            bad = rng.choice([("bolus", {"mU": 4010}), ("bolus", {"mU": 15}), ("temp_basal", {"percent": 300, "minutes": 30}),
                              ("basal_set", {"segments": [0, 3100]}), ("bolus", {"ext_mU": 100, "minutes": 20}),
                              ("limits_set", {"max_hour_mU": 100}), ("profile_select", {"name": "nope"})])
            assert r.do(bad[0], **bad[1]) is None, bad
        r.advance(rng.randrange(1, 120) * 60 + rng.randrange(0, 60))
        r.check()
    # no window of the plant's log passes the limits
    times = r.sim.plant.step_times_us()
    for window_s, cap_mu in ((3600, limits["max_hour_mU"]), (86400, limits["max_day_mU"])):
        j = 0
        worst = 0
        for i, t in enumerate(times):
            while times[j] <= t - window_s * 1_000_000:
                j += 1
            worst = max(worst, i - j + 1)
        assert worst * STEP_MU <= cap_mu, (window_s, worst)
    assert r.c.request("status")["limit_hold"] is False
    # the run really exercised both sides: boluses delivered, and refusals including the limit guard
    assert r.accepted.count("bolus") >= 3 and len(r.refused) >= 5, (r.accepted, r.refused)
    assert any(x.endswith(":limit") for x in r.refused), r.refused
    print(f"seed {seed}: accepted {len(r.accepted)}, refused {sorted(set(r.refused))}")
