"""The firmware lives in a 64 KB heap (micropython -X heapsize=64K, the simulator's default) for a
busy simulated day, and its live heap does not grow once its fixed-size caches are full; every
command works at the largest settings; and the names it interns never make MicroPython allocate
a qstr pool after boot (docs/memory.md)."""
from basalt.proto.req import TABLE

from hil.bench import WORST_CASE, interned_names, worst_case

HOUR = 3_600_000


def test_busy_day_in_64k_without_growth(sim_dut):
    sim, c = sim_dut.sim, sim_dut.client
    assert sim.heap_size == "64K"
    sim_dut.prepare(segments=[[0, 800], [360, 1200], [1320, 600]])
    for _ in range(10):  # fill the reply cache and the event buffer paths
        c.request("bolus", mU=100)
        sim.advance(30_000)
    sim.run_until(2 * HOUR)
    warm = sim.heap()
    for h in range(3, 25):
        c.request("bolus", mU=500 + 10 * h)
        c.request("status")
        if h % 5 == 0:
            c.request("suspend")
            sim.advance(60_000)
            c.request("resume")
        sim.run_until(h * HOUR)
    end = sim.heap()
    assert sim.proc.poll() is None, sim.log_tail()
    assert end["free"] > 0
    assert end["alloc"] <= warm["alloc"] + 256, (warm, end)  # no growth over the day
    print(f"live heap after warm-up {warm['alloc']} B, after 24 h {end['alloc']} B, peak live {end['peak']} B")


def test_every_command_works_at_the_largest_settings(sim_dut):
    """Worst case for the 64 KB heap (hil.bench.WORST_CASE): six profiles of 48 segments, full
    (24-entry) calculator schedules, every command twice - and every one still works: no
    'storage' or 'internal' refusal, which is what running out of memory looks like."""
    sim = sim_dut.sim
    assert sim.heap_size == "64K"
    bad = worst_case(sim_dut)
    end = sim.heap()
    assert sim.proc.poll() is None, sim.log_tail()
    assert not bad, bad[:3]
    print(f"largest settings: live heap {end['alloc']} B, free {end['free']} B, peak live {end['peak']} B")


def test_the_worst_case_runs_every_command():
    """A new command joins the worst case (or the reservoir workflow Dut.prepare runs)."""
    prepare = {"suspend", "rewind", "reservoir_insert", "prime_start", "prime_stop", "cannula_fill", "resume"}
    table = {w.rstrip("*") for w in TABLE.split() if not w.startswith("|")}
    assert table - prepare - {cmd for cmd, _ in WORST_CASE} == set()


def test_every_name_the_pump_can_intern_fits_the_pools_boot_allocates():
    """MicroPython interns names in pools of 20, 40, 80, ... 640 entries, each allocated whole, for
    good, when the ones before it are full. A pool allocated when an overlay first runs needs that
    much contiguous heap (7.2 KB for the 640-name pool) in the middle of a command - and fails
    there. The build lists every name the pump's modules can intern (names.txt, hil/build.py
    write_names): the list must cover them all, and with the few a running pump builds at run
    time (its command line; measured: 7) stay inside the pools boot's own names already need."""
    n = interned_names()
    print(f"interned names: {n['boot']} at boot ({n['boot_bytes']} B); next pool at {n['next_pool_at']}")
    assert n["steady"] == n["boot"], "names.txt misses names the pump's modules intern"
    assert n["boot"] + _BUILT_AT_RUN_TIME < n["next_pool_at"], n["boot"]


_BUILT_AT_RUN_TIME = 15


def test_every_command_works_at_the_largest_settings_with_a_cgm():
    from hil.ble.bridge import BleBridge
    from hil.dut import Dut
    from hil.sim.firmware import SimPump
    from host.client import PumpClient

    bridge = BleBridge()
    bridge.add_sensor("C0:98:E5:49:00:01", profile=lambda t: 120, noise=False)
    sim = SimPump()
    bridge.attach(sim)
    try:
        sim.start()
        with PumpClient(sim.console_url) as c:
            c.request("cgm_pair", address="C0:98:E5:49:00:01")
            sim.advance(12 * 60_000)
            bad = worst_case(Dut(c, sim))
            assert sim.proc.poll() is None, sim.log_tail()
            assert not bad, bad[:3]
            sim.advance(60_000)  # (the worst case ends with a cgm_pair: the link starts over)
            assert c.request("cgm")["link"] == "up"
    finally:
        sim.stop()
        bridge.close()
