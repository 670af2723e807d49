"""The firmware lives in a 64 KB heap (micropython -X heapsize=64K, the simulator's default) for a
busy simulated day, and its live heap does not grow once its fixed-size caches are full."""
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
