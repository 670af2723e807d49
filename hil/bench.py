"""make bench: the figures the issues ask for, measured on this machine and printed.

- wall time of a simulated 24 h (lockstep, 64 KB heap), median of 3 runs
- heap: live heap at boot and after a busy day; free heap once every command overlay has run (the
  steady state the 64 KB budget must hold); interned names at boot and at steady state (the qstr
  pools); what each resident module and each overlay costs; the smallest heap the worst case
  (hil.bench.WORST_CASE: the largest settings, every command) passes in
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

from hil.build import NAMES, build
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


# ---- memory --------------------------------------------------------------------------------
# What stays loaded after boot (main.py imports the board, its HAL and basalt.boot, and drops the board and boot; boot runs the
# settings and recover overlays), in import order, so a module shared by later ones counts once.
RESIDENT = ["basalt.lib", "basalt.lib.filestore", "basalt.core", "basalt.core.history",
            "basalt.core.occlusion", "basalt.core.pump",
            "basalt.proto", "basalt.proto.server", "basalt.hal.sim"]
BOOT_OVERLAYS = ["settings", "recover"]
# A board with a radio: the CGM link's resident part (core.cgm), then the client's modules, which
# are loaded per radio event and dropped (connect only while connecting, rx per reading).
RADIO = ["basalt.core.cgm", "basalt.cgm.rx", "basalt.cgm.client", "basalt.cgm.connect"]
# MicroPython's qstr pools hold 20, 40, 80, 160, 320, 640, ... names: a pool is allocated, whole and
# for good, when the names interned so far fill the ones before it (docs/memory.md).
POOL_LIMITS = (20, 60, 140, 300, 620, 1260, 2540)


def overlays() -> list[str]:
    """Every command overlay module (basalt/cmd/<name>.py; helpers start with _)."""
    tree = build("sim")
    return sorted(p.stem for p in (tree / "basalt" / "cmd").glob("*.mpy") if not p.stem.startswith("_"))


def helpers() -> list[str]:
    """The overlays' helper modules (basalt/cmd/_*.py): run by the overlays, their names interned too."""
    tree = build("sim")
    return sorted(p.stem for p in (tree / "basalt" / "cmd").glob("_*.mpy"))


def _mpy(script: str, heap: str = "256K") -> str:
    tree = build("sim")
    return subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", "-c", script], capture_output=True,
                          text=True, env=dict(os.environ, MICROPYPATH="."), cwd=tree, check=True).stdout


def interned_names() -> dict:
    """Names the firmware can intern (qstrs): the build's names.txt (hil/build.py write_names).
    MicroPython allocates a qstr pool, whole and for good, when the names so far fill the ones
    before it; one allocated while a command runs needs that much contiguous heap there and then
    (7.2 KB for the 640-name pool), which a fragmented 64 KB heap does not have. Counted in a fresh
    micropython: after interning names.txt ("boot"), then after importing every module of the pump
    on top ("steady": equal when the list covers them all)."""
    tree = build("sim")
    mods = [line[:-1] for line in (tree / NAMES).open() if line.startswith("basalt.") or line in (
        "board\n", "bluetooth\n")]
    out = _mpy(
        "import micropython\n"
        "f = open('names.txt')\n"
        "for line in f:\n"
        "    getattr(micropython, line[:-1], None)\n"
        "f.close()\n"
        "micropython.qstr_info()\n"
        f"for m in {mods!r}:\n"
        "    try:\n"
        "        __import__(m)\n"
        "    except ImportError:\n"
        "        pass\n"
        "micropython.qstr_info(1)\n")
    counts = [(int(line.split("n_pool=")[1].split(",")[0]), int(line.split("n_qstr=")[1].split(",")[0]),
               int(line.split("n_total_bytes=")[1].split(",")[0]))
              for line in out.splitlines() if line.startswith("qstr pool:")]
    names = [line[2:-1] for line in out.splitlines() if line.startswith("Q(")]
    return {"boot": counts[0][1], "boot_pools": counts[0][0], "boot_bytes": counts[0][2],
            "steady": counts[1][1], "steady_pools": counts[1][0], "steady_bytes": counts[1][2],
            "next_pool_at": next(n for n in POOL_LIMITS if n > counts[1][1]), "names": names}


def module_costs() -> tuple[dict[str, int], dict[str, int]]:
    """Live heap each resident module adds when imported (in order, so shared imports count once),
    and what each overlay costs while loaded (with its helpers). Every name the firmware interns is
    interned first, so these are the modules' own bytes; interned_names() has the names' share."""
    out = _mpy(
        "import gc, micropython\n"
        "for line in open('names.txt'):\n"
        "    getattr(micropython, line[:-1], None)\n"  # interns the name, as main.py does at boot
        "def cost(n):\n"
        "    gc.collect(); a = gc.mem_alloc()\n"
        "    __import__(n)\n"
        "    gc.collect(); print(n, gc.mem_alloc() - a)\n"
        f"for n in {RESIDENT!r}:\n"
        "    cost(n)\n"
        f"for n in {RADIO!r}:\n"
        "    cost(n)\n"
        "import basalt.lib as overlay\n"
        f"for m in {overlays()!r}:\n"
        "    gc.collect(); a = gc.mem_alloc()\n"
        "    __import__('basalt.cmd.' + m)\n"
        "    gc.collect(); print('overlay:' + m, gc.mem_alloc() - a)\n"
        "    overlay.drop()\n")
    resident, overlay_heap = {}, {}
    for line in out.splitlines():
        name, n = line.split()
        if name.startswith("overlay:"):
            overlay_heap[name[8:]] = int(n)
        else:
            resident[name] = int(n)
    return resident, overlay_heap


# The largest settings and every command at them, twice: the second round runs with every
# overlay's names already interned. tests/e2e/test_heap.py runs it at 64 KB; bench finds the
# smallest heap it passes in. Commands the pump refuses are fine; a "storage" or "internal"
# refusal is what running out of memory looks like.
_SEG = [x for i in range(48) for x in (i * 30, 400 + 20 * i)]
_SCHED = [x for i in range(24) for x in (i * 60, 100 + i)]  # calculator schedules: at most 24 entries
WORST_CASE = [("profile_set", {"name": f"profile{i}", "segments": _SEG}) for i in range(5)] + [
    ("calc_set", {"cr": _SCHED, "isf": _SCHED[:10], "target": [0, 100, 140]}), ("calc_set", {"isf": _SCHED}),
    ("calc_set", {"target": [x for i in range(24) for x in (i * 60, 100, 140)]}),
    ("bolus_calc", {"carbs_g": 40, "bg_mgdl": 180}), ("bolus", {"mU": 1000, "ext_mU": 1000, "minutes": 60}),
    ("temp_basal", {"percent": 80, "minutes": 60}), ("status", {}), ("history", {"limit": 32}),
    ("history", {"limit": 32, "type": 5}), ("alarms", {}), ("alarm_set", {"reservoir_low_mU": 25000}),
    ("alarm_ack", {}), ("ping", {}),
    ("profile_list", {}), ("profile_get", {"name": "profile3"}), ("profile_select", {"name": "profile2"}),
    ("limits_set", {"max_bolus_mU": 9000}), ("limits_set", {"max_hour_mU": 14000}), ("time_set", {"local_s": 86400 * 365}),
    ("time_get", {}), ("limits_get", {}), ("basal_get", {}), ("calc_get", {}), ("calc_get", {"schedule": "target"}),
    ("temp_basal_cancel", {}), ("bolus_cancel", {"kind": "all"}), ("basal_set", {"segments": _SEG}),
    ("profile_delete", {"name": "profile4"}), ("profile_set", {"name": "profile4", "segments": _SEG}),
    ("suspend", {}), ("resume", {}),
    # without a radio these are refused ("state"); with one they run (test_heap's CGM case)
    ("cgm", {}), ("cgm_history", {}), ("cgm_set", {"low_mgdl": 75}), ("cgm_scan", {}), ("cgm_pair", {"address": "C0:98:E5:49:00:01"}),
]
WORST_PREPARE = [[i * 30, 500 + 10 * i] for i in range(48)]  # Dut.prepare runs the reservoir workflow too


def worst_case(dut: Dut) -> list[tuple[str, dict]]:
    """Run WORST_CASE twice on a prepared pump; return the (command, reply) pairs that failed the
    way running out of memory fails."""
    bad = []
    dut.prepare(segments=WORST_PREPARE)
    for _ in range(2):
        for cmd, args in WORST_CASE:
            doc = dut.client.request_doc(cmd, **args)
            if not doc["ok"] and doc["err"] in ("storage", "internal"):
                bad.append((cmd, doc))
        dut.wait(60_000)
    return bad


def smallest_heap(start_k: int = 80, stop_k: int = 48, step_k: int = 2) -> int | None:
    """The smallest -X heapsize (KB, in step_k steps down from start_k) the worst case passes in."""
    best = None
    for k in range(start_k, stop_k - 1, -step_k):
        d = Dut.simulated(heap=f"{k}K")
        try:
            ok = not worst_case(d) and d.sim.proc.poll() is None
        except Exception:  # noqa: BLE001 - it failed at this size: that is the figure
            ok = False
        finally:
            d.close()
        if not ok:
            break
        best = k
    return best


def steady_state() -> dict:
    """Heap once every command overlay has run: what every command must fit into."""
    d = Dut.simulated()
    try:
        d.prepare()
        for cmd, args in (("status", {}), ("profile_list", {}), ("profile_select", {"name": "default"}),
                          ("history", {}), ("bolus", {"mU": 100}), ("temp_basal", {"percent": 50, "minutes": 30}),
                          ("calc_set", {"cr": [0, 100], "isf": [0, 50], "target": [0, 100, 120]}),
                          ("bolus_calc", {"carbs_g": 1}), ("time_get", {}), ("limits_set", {"max_bolus_mU": 9000}),
                          ("alarms", {})):
            d.client.request(cmd, **args)
        return d.sim.heap()
    finally:
        d.close()


def boot_heap() -> dict:
    """Heap right after boot (a new pump)."""
    with SimPump() as sim:
        return sim.heap()


def radio_heap() -> dict:
    """The CGM client's heap: a paired pump receiving readings for 30 min over the simulated radio,
    against the same pump without a radio; and the `bluetooth` stand-in's own share (a board's is C)."""
    from hil.ble.bridge import BleBridge

    out = {}
    for radio in (False, True):
        bridge = BleBridge()
        bridge.firmware_radio = radio
        bridge.add_sensor("C0:98:E5:49:00:01", profile=lambda t: 120, noise=False)
        sim = SimPump()
        bridge.attach(sim)
        try:
            sim.start()
            if radio:
                from host.client import PumpClient

                with PumpClient(sim.console_url) as c:
                    c.request("cgm_pair", address="C0:98:E5:49:00:01")
                    sim.advance(30 * 60_000)
                    out["readings"] = c.request("cgm")["counts"][0]
            else:
                sim.advance(30 * 60_000)
            out["radio" if radio else "no_radio"] = sim.heap()["alloc"]
            out["process_heap" if radio else "heap"] = sim.process_heap()
        finally:
            sim.stop()
            bridge.close()
    shim = _mpy("import gc\ngc.collect()\na = gc.mem_alloc()\nimport bluetooth\ngc.collect()\n"
                "print(gc.mem_alloc() - a)")
    out["shim"] = int(shim.split()[-1])
    out["client"] = out["radio"] - out["no_radio"] - out["shim"]
    return out


def _try(f):
    """A figure, or why it could not be had (a firmware that does not fit fails here, visibly)."""
    try:
        return f()
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"}


def main() -> None:
    con = Console()
    results: dict = {}
    with Progress(console=con, transient=True) as prog:
        task = prog.add_task("simulated days", total=3)
        days = []
        for _ in range(3):
            days.append(_try(sim_day))
            prog.advance(task)
        if all(type(d) is tuple for d in days):
            results["sim_day_wall_s"] = statistics.median(d[0] for d in days)
            results["sim_day_runs_s"] = [round(d[0], 3) for d in days]
            results["sim_day_steps"] = days[0][2]
            results["heap_after_day"] = days[0][1]
        else:
            results["heap_after_day"] = next(d for d in days if type(d) is dict)
        task = prog.add_task("round trips", total=2)
        results["rtt_realtime"] = _try(lambda: rtt("realtime"))
        prog.advance(task)
        results["rtt_lockstep_paused"] = _try(lambda: rtt("lockstep"))
        prog.advance(task)
        task = prog.add_task("heap", total=5)
        results["boot_heap"] = _try(boot_heap)
        prog.advance(task)
        results["steady_state_heap"] = _try(steady_state)
        prog.advance(task)
        names = interned_names()
        results["interned_names"] = {k: v for k, v in names.items() if k != "names"}
        prog.advance(task)
        results["module_heap"], results["overlay_heap"] = module_costs()
        prog.advance(task)
        results["worst_case_smallest_heap_k"] = smallest_heap()
        prog.advance(task)
        results["radio_heap"] = _try(radio_heap)

    def heap_row(label, h, key):
        t.add_row(label, f"{h[key]} B" if key in h else f"[red]{h['error']}[/]")

    t = Table(title="Basalt benchmarks (this machine)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    if "sim_day_wall_s" in results:
        t.add_row("simulated 24 h, wall time (median of 3)", f"{results['sim_day_wall_s']:.2f} s")
    t.add_row("heap limit (-X heapsize)", "64 KB = 65536 B")
    heap_row("live heap at boot", results["boot_heap"], "alloc")
    heap_row("live heap after a busy day", results["heap_after_day"], "alloc")
    heap_row("peak live heap (sampled after collects)", results["heap_after_day"], "peak")
    heap_row("free heap after a busy day", results["heap_after_day"], "free")
    heap_row("free heap, every overlay used once (steady state)", results["steady_state_heap"], "free")
    n = results["interned_names"]
    t.add_row("interned names at boot / every overlay used once",
              f"{n['boot']} / {n['steady']} ({n['steady_bytes']} B; the next qstr pool, ~{n['next_pool_at'] * 11 // 1000 + 1}"
              f" KB at once, comes at {n['next_pool_at']})")
    w = results["worst_case_smallest_heap_k"]
    t.add_row("worst case (hil.bench.WORST_CASE): smallest heap it passes in",
              f"{w} KB" if w else "[red]fails even at 80 KB[/]")
    r = results["radio_heap"]
    if "client" in r:
        t.add_row("CGM client: live heap with readings flowing / without a radio",
                  f"{r['radio']} / {r['no_radio']} B: the client {r['client']} B, the bluetooth stand-in "
                  f"{r['shim']} B (process heap {r['process_heap']})")
    else:
        t.add_row("CGM client", f"[red]{r['error']}[/]")
    for mode in ("realtime", "lockstep_paused"):
        r = results[f"rtt_{mode}"]
        t.add_row(f"ping round trip, socket://, {mode}",
                  f"median {r['median_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms" if "median_ms" in r else r["error"])
    con.print(t)
    m = Table(title="Heap cost of each resident firmware module, names excluded (Unix port, 64-bit, .mpy)")
    m.add_column("module")
    m.add_column("bytes", justify="right")
    for k, v in results["module_heap"].items():
        if k not in RADIO:
            m.add_row(k, str(v))
    m.add_row("[bold]resident total[/]", f"[bold]{sum(v for k, v in results['module_heap'].items() if k not in RADIO)}[/]")
    m.add_row("[bold]interned names at boot (qstr pools and text)[/]", f"[bold]{n['boot_bytes']}[/]")
    for k in RADIO:
        m.add_row(f"[dim]{k} (with a radio: {'resident' if k == RADIO[0] else 'per radio event'})[/]",
                  str(results["module_heap"][k]))
    con.print(m)
    o = Table(title="Heap held by each command overlay while it runs (with the helpers it imports)")
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
