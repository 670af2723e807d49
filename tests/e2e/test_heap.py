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


def test_every_command_works_at_the_largest_settings(sim_dut):
    """Worst case for the 64 KB heap: six profiles of 48 segments, full (24-entry) calculator schedules,
    every command overlay loaded at least once - and still every command works (no 'storage'
    or 'internal' refusal, which is what running out of memory looks like)."""
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(segments=[[i * 30, 500 + 10 * i] for i in range(48)])
    seg = [x for i in range(48) for x in (i * 30, 400 + 20 * i)]
    sched = [x for i in range(24) for x in (i * 60, 100 + i)]  # calculator schedules: at most 24 entries
    calls = [("profile_set", {"name": f"profile{i}", "segments": seg}) for i in range(5)]
    calls += [
        ("calc_set", {"cr": sched, "isf": sched[:10], "target": [0, 100, 140]}),
        ("calc_set", {"isf": sched}), ("calc_set", {"target": [x for i in range(24) for x in (i * 60, 100, 140)]}),
        ("bolus_calc", {"carbs_g": 40, "bg_mgdl": 180}), ("bolus", {"mU": 1000, "ext_mU": 1000, "minutes": 60}),
        ("temp_basal", {"percent": 80, "minutes": 60}), ("status", {}), ("history", {"limit": 32}),
        ("profile_list", {}), ("profile_get", {"name": "profile3"}), ("profile_select", {"name": "profile2"}),
        ("limits_set", {"max_bolus_mU": 9000}), ("time_set", {"local_s": 86400 * 365}), ("limits_get", {}),
        ("basal_get", {}), ("calc_get", {}), ("calc_get", {"schedule": "target"}), ("temp_basal_cancel", {}), ("bolus_cancel", {"kind": "all"}),
        ("basal_set", {"segments": seg}), ("suspend", {}), ("resume", {}),
    ]
    for _ in range(2):  # the second round runs with every overlay's names already interned
        for cmd, args in calls:
            doc = c.request_doc(cmd, **args)
            assert doc["ok"] or doc["err"] not in ("storage", "internal"), (cmd, doc)
        sim.advance(60_000)
    end = sim.heap()
    assert sim.proc.poll() is None
    print(f"largest settings: live heap {end['alloc']} B, free {end['free']} B, peak live {end['peak']} B")
