"""The simulated board's radio: MicroPython programs under the Unix port, through the `bluetooth`
shim (boards/sim/bluetooth.py) and the bumble bridge (hil/ble/bridge.py), talk to simulated CGMS
sensors with real ATT/GATT PDUs, in virtual time.

- the shim's API semantics (errors, UUIDs, event tuples, the virtual time of every event);
- a day with the test central (tests/ble/central_probe.py): scan finds 0x181F and the unpaired
  sensor, connect, discover, read CGM Feature, notifications, 24 h of readings, three link losses
  backfilled through RACP; the same run twice is the same;
- injected faults reach the central exactly as injected;
- the shim's heap and interned-name cost.

Figures (printed): wall time of the simulated day, reconnect time after a link loss (virtual and
wall), the shim's heap cost.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("bumble")

from basalt.cgm import cgms, sfloat  # noqa: E402

from hil.ble import sensor as S  # noqa: E402
from hil.ble.bridge import BleBridge  # noqa: E402
from hil.ble.node import MpyNode  # noqa: E402
from hil.build import build  # noqa: E402
from hil.paths import micropython_binary  # noqa: E402
from hil.sim.firmware import RADIO_SHIM_HEAP_K  # noqa: E402

HERE = Path(__file__).parent / "ble"
PAIRED = "C0:98:E5:49:00:01"
OTHER = "C0:98:E5:49:00:02"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
LOSSES = [(4 * HOUR + 30_000, 20 * MIN), (10 * HOUR + 90_000, 45 * MIN), (17 * HOUR + 10_000, 8 * MIN)]


def hexaddr(a: str) -> str:
    return a.replace(":", "").lower()


class Run:
    """A MicroPython program on the sim board with a bridge and sensors; reports with wall times."""

    def __init__(self, program: str, *args: str):
        self.bridge = BleBridge()
        self.node = MpyNode(HERE / program, *args)
        self.wall: list[tuple[float, str, list[str]]] = []
        self.node.listeners.append(lambda k, f: self.wall.append((time.perf_counter(), k, f)))
        self.bridge.attach(self.node)

    def start(self) -> Run:
        self.node.start()
        return self

    def reports(self, what: str | None = None) -> list[list[str]]:
        return [f for f in self.node.reports() if what is None or f[0] == what]

    def close(self) -> None:
        self.node.close()
        self.bridge.close()


def day_run() -> tuple[Run, float]:
    bg = S.synthetic_bg(1, seed=7)
    profile = S.points_profile([5.0 * i for i in range(len(bg))], bg)
    r = Run("central_probe.py", "--pair", hexaddr(PAIRED))
    sensor = r.bridge.add_sensor(PAIRED, profile=profile, seed=7)
    r.bridge.schedule(HOUR, lambda: r.bridge.add_sensor(OTHER, name="Other CGM", profile=lambda t: 180, seed=9))
    for at, length in LOSSES:
        r.bridge.schedule(at, lambda n=length: r.bridge.link_loss(n, PAIRED))
    r.start()
    t0 = time.perf_counter()
    r.node.run_until(DAY + 1000, timeout=120)
    wall = time.perf_counter() - t0
    r.sensor = sensor
    return r, wall


@pytest.fixture(scope="module")
def day():
    r, wall = day_run()
    yield r, wall
    r.close()


# ---- the shim's API ------------------------------------------------------------------------------
def test_shim_api_semantics():
    r = Run("api_probe.py")
    try:
        r.bridge.add_sensor(PAIRED, profile=lambda t: 120)
        r.start()
        r.node.run_until(30_000, timeout=30)
        got = r.reports()
    finally:
        r.close()
    sensor, zeros = hexaddr(PAIRED), "0" * 12
    assert got[:10] == [
        ["notactive", "0", "19"],  # ENODEV before active(True)
        ["singleton", "0", "True"],
        ["uuid", "0", "True", "True", "1", "a72a", "UUID(0x2aa7)", "16", "110", "ValueError"],
        ["uuid2", "0", "True", "ValueError", "a72a", "True", "True"],  # 16-bit numbers only; a buffer
        ["active", "0", "True", "True"],
        ["config", "0", "100", "1", hexaddr("F4:BA:5A:17:00:01")],
        ["config2", "0", "True", "None"],  # keyword arguments; an unknown key reads None
        ["read", "0", "107"],  # ENOTCONN: no such connection
        ["disc", "0", "False"],  # gap_disconnect of an unknown handle
        ["cancel", "0", "114"],  # EALREADY: no connection attempt to cancel
    ]
    ev = [f[1:] for f in got[10:]]
    assert ev[:2] == [["5000", "ok"], ["7000", "8", "65535", "255", zeros]]  # absent peer: fails at +2000 ms
    # A 1.5 s scan started by the program's tick ends at +1500 ms exactly, mid-grant (the shim holds
    # the grant there); it reports the advertiser with its real advertising payload.
    assert ev[2][0] == "10000" and ev[3][:6] == ["10000", "5", "1", sensor, "0", "-60"]
    flags, uuids = bytes.fromhex(ev[3][6])[:3], bytes.fromhex(ev[3][6])[3:7]
    assert flags == b"\x02\x01\x06" and uuids == b"\x03\x03\x1f\x18"
    assert ev[4] == ["11500", "6"]
    assert ev[5:8] == [["15000", "ok"], ["16000", "ok"], ["16000", "8", "65535", "255", zeros]]  # cancelled
    assert ev[8:10] == [["20000", "ok"], ["20000", "7", "1", "1", sensor]]
    assert ev[10:12] == [["21000", "ok"], ["21000", "21", "1", "100"]]  # MTU exchanged at ours (100)
    # RACP: write + indicate properties; end handle = the service's last; status 0 on done
    assert ev[12][0] == "22000" and ev[13][:2] == ["22000", "11"] and ev[13][5:] == ["40", "UUID(0x2a52)"]
    assert ev[14] == ["22000", "12", "1", "0"]
    racp = ev[13][4]
    # RACP without indications enabled: the sensor refuses with ATT error 0xFD -> status 0x1FD
    assert ev[15:17] == [["23000", "ok"], ["23000", "17", "1", racp, str(0x1FD)]]
    assert ev[17] == ["24000", "ok"]  # write without response: no event
    assert ev[18:20] == [["25000", "ok"], ["25000", "16", "1", str(0xFFF0), str(0x101)]]  # invalid handle
    assert ev[20:22] == [["26000", "True"], ["26000", "8", "1", "1", sensor]]
    assert ev[22:] == [["27000", "False", "19"], ["28000", "True"]]  # radio off: ENODEV again


# ---- a day with the test central ---------------------------------------------------------------------
def test_scan_finds_cgms_and_the_unpaired_sensor_is_visible_never_connected(day):
    r, _ = day
    advs = {(f[2], " ".join(f[4:])) for f in r.reports("adv")}
    assert (hexaddr(PAIRED), "Basalt SimCGM") in advs
    assert (hexaddr(OTHER), "Other CGM") in advs  # seen in the scans after each link loss
    connected = {h[2] for h in r.bridge.history if h[1] == "connect"}
    assert connected == {PAIRED}
    assert r.reports("err") == [] and r.bridge.errors == []


def test_connect_discover_and_read_feature(day):
    r, _ = day
    first = r.reports()
    kinds = [f[0] for f in first[:8]]
    assert kinds[:1] == ["heap"] and "conn" in kinds and "feature" in kinds and "up" in kinds
    feature = int(next(f for f in first if f[0] == "feature")[2])
    assert feature == r.sensor.core.features and feature & cgms.F_E2E_CRC
    assert int(next(f for f in first if f[0] == "up")[1]) == 1000  # scan + connect + GATT at the first tick


def test_a_day_of_readings_arrives_complete_and_exact(day):
    r, wall = day
    recs = r.reports("rec")
    assert all(f[4] == "0" for f in recs), "no CRC or framing error on a clean link"
    offsets = [int(f[2]) for f in recs]
    assert sorted(offsets) == list(range(0, DAY // MIN + 1, 5)), "every reading exactly once"
    stored = {x.time_offset: x for x in r.sensor.core.records}
    for f in recs:
        x = stored[int(f[2])]
        assert int(f[3]) == sfloat.scaled(x.glucose_raw) and int(f[5]) == x.status
    # Live readings reach the central at the virtual time the sensor made them.
    live = [f for f in recs if int(f[1]) == int(f[2]) * MIN]
    assert len(live) >= len(recs) - 24
    print(f"\n[ble] simulated CGM day over the bridge: {wall:.2f} s wall, {len(recs)} readings, "
          f"{r.bridge.stats}")


def test_link_losses_are_seen_and_backfilled_through_racp(day):
    r, _ = day
    reps = r.reports()
    downs = [int(f[1]) for f in reps if f[0] == "down"]
    assert downs == [at for at, _ in LOSSES], "a link loss is seen when it happens (supervision timeout)"
    backs = [(h[0], h[3]) for h in r.bridge.history if h[1] == "back"]
    assert [t for t, _ in backs] == [at + n for at, n in LOSSES]
    ups = [int(f[1]) for f in reps if f[0] == "up"]
    racps = [f for f in reps if f[0] == "racp"]
    assert len(ups) == len(racps) == 4  # first connection + one per link loss
    assert all(f[2:] == ["6", "1", "1"] for f in racps), "RACP report stored records: success"
    virt, wall = [], []
    for (back_t, back_wall), (at, _n) in zip(backs, LOSSES, strict=True):
        up = next(t for t in ups if t >= back_t)
        virt.append(up - back_t)
        wall.append(next(w for w, k, f in r.wall if k == "P" and f[0] == "up" and int(f[1]) == up) - back_wall)
        # Nothing arrived while the link was down; the readings made meanwhile came by RACP at `up`.
        missed = [o for o in range(0, DAY // MIN + 1, 5) if at < o * MIN < back_t]
        got = [int(f[2]) for f in reps if f[0] == "rec" and int(f[1]) == up]
        assert missed and set(missed) <= set(got)
    assert all(0 <= v <= 20_000 for v in virt)  # the probe's retry: scan every <= 16 s + 3 s scan
    print(f"\n[ble] reconnect after a link loss: virtual {virt} ms (the central's backoff), "
          f"wall {[round(w * 1000, 1) for w in wall]} ms; median wall {statistics.median(wall) * 1000:.1f} ms")


def test_the_shim_heap_cost_in_the_run(day):
    r, _ = day
    (heap,) = [int(f[2]) for f in r.reports("heap")]
    print(f"\n[ble] shim heap cost in the 64 KB sim (import + BLE() + active(True)): {heap} bytes")
    assert 0 < heap <= RADIO_SHIM_HEAP_K * 1024


def test_same_run_same_result():
    def short():
        r = Run("central_probe.py", "--pair", hexaddr(PAIRED))
        try:
            r.bridge.add_sensor(PAIRED, profile=lambda t: 100 + t / 3, seed=3)
            r.bridge.schedule(30 * MIN, lambda: r.bridge.add_sensor(OTHER, profile=lambda t: 90))
            r.bridge.schedule(50 * MIN + 7000, lambda: r.bridge.link_loss(13 * MIN, PAIRED))
            r.start()
            r.node.run_until(2 * HOUR + 1000, timeout=60)
            return r.reports(), [h[:3] for h in r.bridge.history]
        finally:
            r.close()
    a, b = short(), short()
    assert a == b
    assert any(f[0] == "racp" for f in a[0][5:])


# ---- injected faults --------------------------------------------------------------------------------
def test_injected_faults_reach_the_central_as_injected():
    r = Run("central_probe.py", "--pair", hexaddr(PAIRED))
    try:
        s = r.bridge.add_sensor(PAIRED, profile=lambda t: 150, noise=False)
        at = {}

        def inject(name, fn):
            at[name] = r.bridge.now_ms
            fn()
        # each fault on the reading after the injection time (readings every 5 min)
        r.bridge.schedule(12 * MIN, lambda: inject("drop", lambda: setattr(s, "drop", 1)))
        r.bridge.schedule(17 * MIN, lambda: inject("corrupt", lambda: setattr(s, "corrupt", 1)))
        r.bridge.schedule(22 * MIN, lambda: inject("dup", lambda: setattr(s, "duplicate", 1)))
        r.bridge.schedule(27 * MIN, lambda: inject("high", lambda: s.core.force(500)))
        r.bridge.schedule(32 * MIN, lambda: inject("nan", lambda: s.core.force(raw=0x07FF)))
        r.bridge.schedule(37 * MIN, lambda: inject("bad", lambda: s.core.force(status=S.A_SENSOR_MALFUNCTION)))
        r.bridge.schedule(42 * MIN, lambda: inject("end", s.core.stop_session))
        r.start()
        r.node.run_until(HOUR + 1000, timeout=60)
        recs = [(int(f[2]), f[3], int(f[4]), int(f[5])) for f in r.reports("rec")]
    finally:
        r.close()
    by = {}
    for o, g, err, st in recs:
        by.setdefault(o, []).append((g, err, st))
    assert 15 not in by  # dropped on the air (stored: RACP would fetch it)
    assert [e for _g, e, _st in by[20]] == [cgms.E_CRC]  # arrives once, its CRC fails
    assert by[25] == [("1500", 0, 0), ("1500", 0, 0)]  # twice
    assert by[30] == [("5000", 0, 0)]  # 500 mg/dL, unclamped
    assert by[35] == [("-", 0, 0)]  # NaN: no value
    assert by[40] == [("1500", 0, S.A_SENSOR_MALFUNCTION)]
    assert max(by) == 40, "no readings after the session ended"
    assert sorted(by) == [0, 5, 10, 20, 25, 30, 35, 40]


# ---- heap and names ------------------------------------------------------------------------------------
SHIM_COST = r'''
import gc, micropython, sys
import basalt.hal.sim as H
class Bus:
    granted = 0
    ble = None
    def now_ms(self): return 0
    def request(self, line, prefix): return b"b= 0 T"
    def send(self, line): pass
H.BUS = Bus()
def handler(e, d): pass
for n in %r:
    getattr(micropython, n, None)  # interns the name
gc.collect(); gc.collect()
micropython.qstr_info(1)
gc.collect(); a0 = gc.mem_alloc()
import bluetooth
b = bluetooth.BLE()
b.active(True)
b.irq(handler)
gc.collect()
cost = gc.mem_alloc() - a0
print("@@shim-cost", cost, "bluetooth_p" in sys.modules)
micropython.qstr_info(1)
'''


def shim_cost(names: list[str]) -> tuple[int, bool, list[str]]:
    """(live bytes after import + BLE() + active(True) + irq(handler), whether the peripheral part
    was loaded, the names it interned), with `names` interned first."""
    tree = build("sim")
    out = subprocess.run([micropython_binary(), "-X", "heapsize=256K", "-c", SHIM_COST % (names,)],
                         capture_output=True, text=True, cwd=tree, env={"MICROPYPATH": "."}, check=True).stdout
    before, after = out.split("\n@@shim-cost ")
    cost, loaded = after.split()[:2]
    new = set(re.findall(r"^Q\((.*)\)$", after, re.M)) - set(re.findall(r"^Q\((.*)\)$", before, re.M))
    return int(cost), loaded == "True", sorted(new)


def test_shim_cost_bench():
    """What the central side of the shim costs the heap, with the sim HAL loaded (a board pays
    nothing: its `bluetooth` is C): its own bytes (every name interned first, as hil.bench's
    module_costs() measures modules) and with its names (the firmware's interned first). A budget,
    not a timing: it fails when it grows."""
    from hil.bench import interned_names

    firmware = interned_names()["names"]
    with_names, loaded, names = shim_cost(firmware)
    own, _, left = shim_cost(firmware + names)
    size = (build("sim") / "bluetooth.mpy").stat().st_size
    print(f"\n[ble] shim (import + BLE() + active(True) + irq()): {own} bytes of heap, {with_names} with its "
          f"{len(names)} interned names (.mpy {size} B)")
    assert not loaded, "a central must not load the peripheral part (bluetooth_p)"
    assert not left
    assert with_names <= RADIO_SHIM_HEAP_K * 1024 and len(names) <= 4  # (bytes constants: few names)
