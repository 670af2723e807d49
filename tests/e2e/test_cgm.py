"""The pump's CGM client end to end: the real firmware's bluetooth code (core/cgm.py, cgm/client.py)
talking through the sim board's `bluetooth` module and bumble (hil/ble/bridge.py) to simulated
CGMS sensors, in virtual time. Pairing, a day of readings through link losses with RACP backfill,
an unpaired sensor ignored, every injected fault rejected or alerted, and the host's view."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("bumble")

from hil.ble import sensor as S  # noqa: E402
from hil.ble.bridge import BleBridge  # noqa: E402
from hil.power import flash  # noqa: E402
from hil.sim.firmware import SimPump  # noqa: E402
from host.client import PumpClient, PumpError  # noqa: E402

PAIRED = "C0:98:E5:49:00:01"
OTHER = "C0:98:E5:49:00:02"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
CGM = flash.H["CGM"]
REJECTED = flash.H["CGM_REJECTED"]


class Rig:
    """The pump on the sim board with a radio, and simulated sensors around it."""

    def __init__(self, **sim_kw):
        self.bridge = BleBridge()
        self.sim = SimPump(**sim_kw)
        self.bridge.attach(self.sim)
        self.c: PumpClient | None = None

    def start(self, pair: str | None = PAIRED) -> Rig:
        self.sim.start()
        self.c = PumpClient(self.sim.console_url)
        if pair:
            self.c.request("cgm_pair", address=pair)
        return self

    def reconnect(self) -> PumpClient:
        self.c.close()
        self.c = PumpClient(self.sim.console_url)
        return self.c

    def records(self, kind: int | None = None) -> list[list[int]]:
        out, since = [], 0
        while True:
            r = self.c.request("history", since=since, limit=32, **({"type": kind} if kind else {}))
            out += r["records"]
            if r["next"] >= r["newest"] or not r["records"]:
                return out
            since = r["next"]

    def close(self) -> None:
        if self.c:
            self.c.close()
        self.sim.stop()
        self.bridge.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def alarms(c: PumpClient) -> set[str]:
    return set(c.request("status")["alarms"])


def test_unpaired_the_pump_keeps_the_radio_quiet_and_refuses_bad_pairings(rig):
    rig.bridge.add_sensor(PAIRED, profile=lambda t: 120)
    c = rig.start(pair=None).c
    rig.sim.advance(10 * MIN)
    st = c.request("cgm")
    assert st["paired"] is None and st["link"] == "idle" and st["glucose_mgdl"] is None
    assert not [h for h in rig.bridge.history if h[1] == "connect"]
    for bad in ("C0:98:E5:49:00", "zz:98:E5:49:00:01", 42, "C0-98-E5-49-00-01"):
        with pytest.raises(PumpError) as e:
            c.request("cgm_pair", address=bad)
        assert e.value.code == "bad_arg"
    for bad in ({"low_mgdl": 30}, {"high_mgdl": 60}, {"low_mgdl": 130, "high_mgdl": 125}, {"loss_min": 5},
                {"low_mgdl": "70"}, {"colour": 1}):
        with pytest.raises(PumpError):
            c.request("cgm_set", **bad)
    assert c.request("cgm") == st  # nothing changed


def test_a_day_of_readings_through_three_link_losses_with_backfill_and_an_unpaired_sensor_ignored(rig):
    bg = S.synthetic_bg(1, seed=7)
    profile = S.points_profile([5.0 * i for i in range(len(bg))], bg)
    sensor = rig.bridge.add_sensor(PAIRED, profile=profile, seed=7)
    rig.bridge.schedule(HOUR, lambda: rig.bridge.add_sensor(OTHER, name="Other CGM", profile=lambda t: 300, seed=9))
    losses = [(4 * HOUR + 30_000, 20 * MIN), (10 * HOUR + 90_000, 45 * MIN), (17 * HOUR + 10_000, 8 * MIN)]
    for at, n in losses:
        rig.bridge.schedule(at, lambda n=n: rig.bridge.link_loss(n, PAIRED))
    c = rig.start().c
    t0 = time.perf_counter()
    rig.sim.advance(DAY + MIN)
    wall = time.perf_counter() - t0
    connected = {h[2] for h in rig.bridge.history if h[1] == "connect"}
    assert connected == {PAIRED}  # the other sensor advertised all day; the pump never connected to it
    got = {r[4]: r[3] for r in rig.records(CGM)}  # time offset -> mg/dL
    made = {x.time_offset: x.mgdl for x in sensor.core.records}
    # every reading after the first notification, the ones made while the link was down included
    first = min(got)
    assert first <= 5 and set(got) == {o for o in made if o >= first}, sorted(set(made) - set(got))
    assert all(got[o] == made[o] for o in got)  # exact, and never the other sensor's 300 mg/dL
    st = c.request("cgm")
    assert st["link"] == "up" and st["counts"][0] >= len(got) - 3 * 9 - 1 and st["events_lost"] == 0
    assert st["glucose_mgdl"] == made[max(made)] and st["age_s"] < 300
    # a reconnect after each loss: the link came back within the scan backoff
    backs = [h[0] for h in rig.bridge.history if h[1] == "back"]
    ups = [e.t * 1000 for e in c.drain_events() if e.name == "cgm" and e.data.get("link") == "up"]
    delays = [min(u for u in ups if u >= b) - b for b in backs]
    assert len(backs) == 3 and all(0 <= d <= 70_000 for d in delays), (backs, ups)
    print(f"\n[cgm] a simulated CGM day with the pump's client: {wall:.2f} s wall, {len(got)} readings; "
          f"reconnect after the link losses {[d / 1000 for d in delays]} s virtual")


def test_signal_loss_alerts_after_20_min_and_clears_with_the_next_reading(rig):
    rig.bridge.add_sensor(PAIRED, profile=lambda t: 120, noise=False)
    rig.bridge.schedule(30 * MIN + 30_000, lambda: rig.bridge.link_loss(40 * MIN, PAIRED))
    c = rig.start().c
    rig.sim.advance(45 * MIN)
    assert "cgm_signal_loss" not in alarms(c)  # 15 min without a reading so far
    rig.sim.advance(10 * MIN)
    assert "cgm_signal_loss" in alarms(c)
    rig.sim.advance(25 * MIN)
    assert "cgm_signal_loss" not in alarms(c) and c.request("cgm")["link"] == "up"


@pytest.mark.parametrize("fault, reason, alarm", [
    ("corrupt", 2, None),  # bad E2E-CRC
    ("high", 5, None),  # 500 mg/dL: out of range
    ("nan", 3, None),  # SFLOAT NaN
    ("malfunction", 7, "cgm_sensor_error"),
    ("calibration", 8, "cgm_sensor_error"),
    ("session_stopped", 6, "cgm_session_ended"),
    ("duplicate", 13, None),
])
def test_each_injected_fault_is_rejected_counted_logged_and_alerted(rig, fault, reason, alarm):
    sensor = rig.bridge.add_sensor(PAIRED, profile=lambda t: 150, noise=False)
    c = rig.start().c
    rig.sim.advance(12 * MIN)
    base = c.request("cgm")
    assert base["glucose_mgdl"] == 150 and base["counts"][reason] == 0
    core = sensor.core
    if fault == "corrupt":
        sensor.corrupt = 1
    elif fault == "duplicate":
        sensor.duplicate = 1
    elif fault == "high":
        core.force(500)
    elif fault == "nan":
        core.force(raw=0x07FF)
    else:
        core.force(status={"malfunction": S.A_SENSOR_MALFUNCTION, "calibration": S.A_CAL_REQUIRED,
                           "session_stopped": S.A_SESSION_STOPPED}[fault])
    rig.sim.advance(5 * MIN)
    st = c.request("cgm")
    assert st["counts"][reason] == 1, st["counts"]
    rejected = [r for r in rig.records(REJECTED)]
    assert [r[3] for r in rejected] == [reason]
    if fault != "duplicate":
        assert st["glucose_mgdl"] == 150 and st["age_s"] >= 300  # the bad reading was not used
    if alarm:
        assert alarm in alarms(c)
    rig.sim.advance(5 * MIN)  # the next good reading
    if alarm:
        assert alarm not in alarms(c)
    assert c.request("cgm")["age_s"] < 300


def test_low_and_high_glucose_alerts_with_their_thresholds(rig):
    profile = S.points_profile([0, 30, 60, 90, 120, 150], [120, 100, 62, 90, 260, 180])
    rig.bridge.add_sensor(PAIRED, profile=profile, noise=False)
    c = rig.start().c
    c.request("cgm_set", high_mgdl=250)
    seen = []
    for _ in range(36):
        rig.sim.advance(5 * MIN)
        seen.append((c.request("cgm")["glucose_mgdl"], frozenset(alarms(c) & {"glucose_low", "glucose_high"})))
    low = [g for g, a in seen if "glucose_low" in a]
    high = [g for g, a in seen if "glucose_high" in a]
    assert low and all(g <= 70 for g in low) and all("glucose_low" in a for g, a in seen if g is not None and g <= 70)
    assert high and all(g >= 250 for g in high)
    assert not seen[-1][1]  # both cleared once glucose came back


def test_pairing_and_alert_settings_survive_a_restart_and_the_trend_follows_glucose(rig):
    rig.bridge.add_sensor(PAIRED, profile=lambda t: 100 + t, noise=False)  # +1 mg/dL/min
    c = rig.start().c
    c.request("cgm_set", low_mgdl=80, loss_min=30)
    rig.sim.advance(30 * MIN)
    st = c.request("cgm")
    assert st["trend"] == 10  # tenths of mg/dL per minute
    hist = c.request("cgm_history")["readings"]  # [pump time, mg/dL, ...], a reading every 5 min
    mg, t = hist[1::2], hist[0::2]
    assert len(mg) >= 5 and mg[-1] == st["glucose_mgdl"]
    assert all(b - a == 5 for a, b in zip(mg, mg[1:], strict=False)) and all(b - a == 300 for a, b in zip(t, t[1:], strict=False))
    rig.sim.kill()
    rig.sim.restart()
    c = rig.reconnect()
    st2 = c.request("cgm")
    assert st2["paired"] == PAIRED and st2["low_mgdl"] == 80 and st2["loss_min"] == 30
    rig.sim.advance(10 * MIN)
    assert c.request("cgm")["link"] == "up" and c.request("cgm")["glucose_mgdl"] >= 130


def test_an_unpaired_pump_searches_for_cgm_sensors_and_pairs_with_the_one_chosen(rig):
    """cgm_scan: the pump scans for the CGM service (0x181F) and lists the sensors in range; it
    connects to none of them until the user pairs one."""
    rig.bridge.add_sensor(PAIRED, profile=lambda t: 120, noise=False)
    rig.bridge.add_sensor(OTHER, name="Other CGM", profile=lambda t: 150, noise=False)
    c = rig.start(pair=None).c
    rig.sim.advance(MIN)
    assert not [h for h in rig.bridge.history if h[1] == "scan"]  # unpaired and not asked: radio quiet
    for bad, code in (({"seconds": 3}, "range"), ({"seconds": "10"}, "bad_arg"), ({"colour": 1}, "bad_arg")):
        with pytest.raises(PumpError) as e:
            c.request("cgm_scan", **bad)
        assert e.value.code == code
    assert c.request("cgm_scan", seconds=10) == {"link": "searching", "seconds": 10}
    assert c.request("cgm")["link"] == "searching"
    with pytest.raises(PumpError) as e:
        c.request("cgm_scan")
    assert e.value.code == "busy"
    rig.sim.advance(15_000)
    st = c.request("cgm")
    assert st["link"] == "idle" and sorted(st["found"]) == sorted([PAIRED, OTHER]) and st["paired"] is None
    assert not [h for h in rig.bridge.history if h[1] == "connect"]  # found, never connected
    c.request("cgm_pair", address=OTHER)
    rig.sim.advance(6 * MIN)
    st = c.request("cgm")
    assert st["link"] == "up" and st["glucose_mgdl"] == 150
    assert {h[2] for h in rig.bridge.history if h[1] == "connect"} == {OTHER}
    with pytest.raises(PumpError) as e:
        c.request("cgm_scan")  # paired: it talks to its own sensor only
    assert e.value.code == "state"
