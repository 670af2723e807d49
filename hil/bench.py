"""make bench: the figures the issues ask for, measured on this machine and printed.

- wall time of a simulated 24 h (lockstep, 64 KB heap), median of 3 runs
- heap: live heap after a busy day; free heap once every command overlay has run (the steady
  state the 64 KB budget must hold); what each resident module and each overlay costs
- console round trip over socket:// (ping), in real-time mode and in paused lockstep

Numbers go to the terminal as a table and to build/bench.json. Nothing here asserts a
timing: a busy machine makes slow numbers, not failures.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hil.build import build
from hil.dut import Dut
from hil.paths import BUILD_DIR, micropython_binary
from hil.sim.firmware import SimPump
from host.client import PumpClient

HOUR = 3_600_000


def sim_day() -> tuple[float, dict, int]:
    d = Dut.simulated()
    try:
        d.prepare(segments=[[0, 800], [360, 1200], [1080, 1000]])
        t0 = time.perf_counter()
        for h in range(1, 25):
            if h % 4 == 0:
                d.request("bolus", mU=2500)
            d.sim.run_until(h * HOUR)
        wall = time.perf_counter() - t0
        return wall, d.sim.heap(), d.sim.plant.net_steps()
    finally:
        d.close()


def rtt(mode: str, n: int = 1000) -> dict:
    with SimPump(mode=mode) as sim, PumpClient(sim.console_url) as c:
        for _ in range(20):
            c.request("ping")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            c.request("ping")
            samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p95_ms": samples[int(0.95 * n)], "max_ms": samples[-1], "n": n}


RESIDENT = ["basalt.lib.crc16", "basalt.lib.filestore", "basalt.core.errors", "basalt.core.mechanics",
            "basalt.core.profiles", "basalt.core.window", "basalt.core.history", "basalt.core.limits",
            "basalt.core.delivery", "basalt.lib.overlay", "basalt.core.pump", "basalt.proto.frame",
            "basalt.proto.commands", "basalt.proto.server", "basalt.app", "basalt.hal.sim", "board"]
OVERLAYS = ["status", "system", "limits", "basal", "profile", "profile_sel", "temp", "bolus", "calc",
            "calc_cfg", "reservoir", "service", "settings"]
LATER = ["basalt.cgm.sfloat", "basalt.cgm.cgms", "basalt.cgm.validity"]  # not wired in yet (CGM issue)


def _mpy(script: str) -> str:
    tree = build("sim")
    return subprocess.run([micropython_binary(), "-X", "heapsize=256K", "-c", script], capture_output=True,
                          text=True, env=dict(os.environ, MICROPYPATH="."), cwd=tree, check=True).stdout


def module_costs() -> tuple[dict[str, int], dict[str, int]]:
    """Live heap each resident module adds when imported (in order, so shared imports count once),
    and what each overlay costs while loaded (with its helpers; names already interned)."""
    out = _mpy(
        "import gc, micropython\n"
        "def cost(n):\n"
        "    gc.collect(); a = gc.mem_alloc()\n"
        "    __import__(n)\n"
        "    gc.collect(); print(n, gc.mem_alloc() - a)\n"
        f"for n in {RESIDENT!r}:\n"
        "    cost(n)\n"
        "from basalt.lib import overlay\n"
        f"for m in {OVERLAYS!r}:\n"
        "    __import__('basalt.cmd.' + m); overlay.drop()\n"
        "micropython.qstr_info()\n"  # "qstr pool: n_pool=.., n_qstr=N, ..." once every overlay ran
        f"for n in {LATER!r}:\n"
        "    cost(n)\n"
        f"for m in {OVERLAYS!r}:\n"  # names interned now: the steady cost of each overlay
        "    gc.collect(); a = gc.mem_alloc()\n"
        "    __import__('basalt.cmd.' + m)\n"
        "    gc.collect(); print('overlay:' + m, gc.mem_alloc() - a)\n"
        "    overlay.drop()\n")
    resident, overlays = {}, {}
    for line in out.splitlines():
        if line.startswith("qstr pool:"):
            resident["__qstrs__"] = int(line.split("n_qstr=")[1].split(",")[0])
            continue
        name, n = line.split()
        if name.startswith("overlay:"):
            overlays[name[8:]] = int(n)
        else:
            resident[name] = int(n)
    return resident, overlays


def steady_state() -> dict:
    """Free heap after every command overlay has run once: what every command must fit into."""
    d = Dut.simulated()
    try:
        d.prepare()
        for cmd, args in (("status", {}), ("profile_list", {}), ("profile_select", {"name": "default"}),
                          ("history", {}), ("bolus", {"mU": 100}), ("temp_basal", {"percent": 50, "minutes": 30}),
                          ("calc_set", {"cr": [0, 100], "isf": [0, 50], "target": [0, 100, 120]}),
                          ("bolus_calc", {"carbs_g": 1}), ("time_get", {}), ("limits_set", {"max_bolus_mU": 9000})):
            d.client.request(cmd, **args)
        return d.sim.heap()
    finally:
        d.close()


def main() -> None:
    con = Console()
    results: dict = {}
    with Progress(console=con, transient=True) as prog:
        task = prog.add_task("simulated days", total=3)
        days = []
        for _ in range(3):
            days.append(sim_day())
            prog.advance(task)
        results["sim_day_wall_s"] = statistics.median(d[0] for d in days)
        results["sim_day_runs_s"] = [round(d[0], 3) for d in days]
        results["sim_day_steps"] = days[0][2]
        results["heap_after_day"] = days[0][1]
        task = prog.add_task("round trips", total=2)
        results["rtt_realtime"] = rtt("realtime")
        prog.advance(task)
        results["rtt_lockstep_paused"] = rtt("lockstep")
        prog.advance(task)
        results["module_heap"], results["overlay_heap"] = module_costs()
        results["steady_state_heap"] = steady_state()

    t = Table(title="Basalt benchmarks (this machine)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("simulated 24 h, wall time (median of 3)", f"{results['sim_day_wall_s']:.2f} s")
    h = results["heap_after_day"]
    t.add_row("heap limit (-X heapsize)", "64 KB = 65536 B")
    t.add_row("live heap after a busy day", f"{h['alloc']} B")
    t.add_row("peak live heap (sampled after collects)", f"{h['peak']} B")
    t.add_row("free heap after a busy day", f"{h['free']} B")
    ss = results["steady_state_heap"]
    t.add_row("free heap, every overlay used once (steady state)", f"{ss['free']} B")
    q = results["module_heap"].pop("__qstrs__")
    results["interned_names"] = q
    t.add_row("interned names, every overlay used once", f"{q} (the qstr pool grows by ~7.2 KB past ~620)")
    for mode in ("realtime", "lockstep_paused"):
        r = results[f"rtt_{mode}"]
        t.add_row(f"ping round trip, socket://, {mode}", f"median {r['median_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms")
    con.print(t)
    m = Table(title="Heap cost of each resident firmware module (Unix port, 64-bit, .mpy)")
    m.add_column("module")
    m.add_column("bytes", justify="right")
    for k, v in results["module_heap"].items():
        if k not in LATER:
            m.add_row(k, str(v))
    m.add_row("[bold]resident total[/]", f"[bold]{sum(v for k, v in results['module_heap'].items() if k not in LATER)}[/]")
    for k in LATER:
        m.add_row(f"[dim]{k} (CGM, not wired in yet)[/]", str(results["module_heap"][k]))
    con.print(m)
    o = Table(title="Heap held by each command overlay while it runs (with its helpers)")
    o.add_column("overlay (basalt/cmd/)")
    o.add_column("bytes", justify="right")
    for k, v in sorted(results["overlay_heap"].items(), key=lambda kv: -kv[1]):
        o.add_row(k, str(v))
    con.print(o)
    BUILD_DIR.mkdir(exist_ok=True)
    (BUILD_DIR / "bench.json").write_text(json.dumps(results, indent=2))
    con.print(f"written {BUILD_DIR / 'bench.json'}")


if __name__ == "__main__":
    main()
