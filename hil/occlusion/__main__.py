"""python -m hil.occlusion (make occlusion): the occlusion figures of issue 4, measured.

    python -m hil.occlusion [--seeds 30] [--days 30] [--fa-seeds 1] [--sweep-seeds 200]
                            [--sweep-fa-seeds 4] [--quick] [--out build/occlusion]

1. Firmware in the loop (hil/occlusion/inloop.py): for each case (basal 0.1 and 1.0 U/h, a 5 U
   bolus) `--seeds` units with randomized plant parameters, the line blocked at a random time:
   units missed and time to the alarm, the back-off, the insulin released when the line clears
   1 min, 10 min and 1 h after the alarm. Then `--days` of normal delivery at 0.1, 1 and 5 U/h
   with three boluses a day on `--fa-seeds` units each: false occlusion alarms.
2. The trade-off, offline (hil/occlusion/sweep.py): the firmware's detector at thresholds from
   0.4 to 1.4 N over `--sweep-seeds` recorded traces per case and `--sweep-fa-seeds` x 30 days per
   rate: missed units against false alarms, with the chosen operating point.

Prints a table with each figure beside its commercial anchor (shared/reference.md section 4) and
writes <out>/report.json and <out>/occlusion.png. Both cores are used (multiprocessing).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hil.occlusion import inloop, sweep

U_PER_STEP = 0.005
GOAL_MISSED_U = 0.5
GOAL_RELEASE_U = 0.1
SWEEP_MN = (400, 500, 600, 700, 800, 900, 1000, 1200, 1400)
RATES = (100, 1000, 5000)

# Commercial anchors (shared/reference.md section 4): time to alarm min / typical / max.
ANCHOR_MISSED = "Medtronic 511: up to 3 U; Omnipod 5: 3-5 U"
ANCHOR_TIME = {
    "basal_0.1": "Medtronic 511: 5 / 12.5 / 30 h; 10 systems (JDST 2018): medians 4 to >40 h",
    "basal_1": "Medtronic 511: 30 / 75 / 180 min; Omnipod 5: 3.0 h typ, 5.5 h max; JDST 2018: all < 5 h",
    "bolus_5": "Medtronic 511: 10 s / 25 s / 2 min; Omnipod 5 (5 U): 33 min typ, 35 max",
}
ANCHOR_RELEASE = "Omnipod 5: no more than was programmed"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m hil.occlusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=30, help="units per case, firmware in the loop")
    ap.add_argument("--days", type=int, default=30, help="days of normal delivery per false-alarm run")
    ap.add_argument("--fa-seeds", type=int, default=1, help="units per rate for the false-alarm runs")
    ap.add_argument("--sweep-seeds", type=int, default=200, help="recorded traces per case for the sweep")
    ap.add_argument("--sweep-fa-seeds", type=int, default=4, help="30-day traces per rate for the sweep")
    ap.add_argument("--quick", action="store_true", help="a few units and days (a smoke run)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("build/occlusion"))
    ap.add_argument("--micropython", default=None, help="micropython binary (default: the venv's)")
    ap.add_argument("--heap", default=None, help="firmware heap (default: its 64K budget) - for diagnosis only")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.days, a.fa_seeds, a.sweep_seeds, a.sweep_fa_seeds = 4, 2, 1, 20, 1
    return a


def _occ(job):
    case, seed, mp_bin = job
    try:
        return inloop.occlusion_run(case, seed, micropython=mp_bin).to_dict()
    except Exception as e:  # noqa: BLE001 - one unit's failure is reported, the others still run
        return {"case": case, "seed": seed, "error": repr(e)}


def _normal(job):
    seed, rate, days, mp_bin = job
    try:
        return inloop.normal_run(seed, rate, days, micropython=mp_bin).to_dict()
    except Exception as e:  # noqa: BLE001
        return {"seed": seed, "basal_muh": rate, "days": days, "error": repr(e)}


def stats(xs) -> dict:
    a = np.array([x for x in xs if x is not None], dtype=float)
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "max": float(a.max())}


def run(args) -> dict:
    con = Console()
    doc: dict = {"tool": "hil.occlusion", "args": {k: str(v) for k, v in vars(args).items()},
                 "detector": {"limit_mN": sweep.CHOSEN_MN, "limit_counts": sweep.CHOSEN_MN * sweep.GAIN // 1000}}
    t_start = time.perf_counter()
    with mp.Pool(args.jobs) as pool, Progress(console=con, transient=True) as prog:
        jobs = [(c, s, args.micropython) for c in inloop.CASES for s in range(args.seeds)]
        task = prog.add_task("occlusions, firmware in the loop", total=len(jobs))
        runs = []
        for r in pool.imap_unordered(_occ, jobs):
            runs.append(r)
            prog.advance(task)
        doc["occlusion_runs"] = sorted(runs, key=lambda r: (r["case"], r["seed"]))
        jobs2 = [(s, r, args.days, args.micropython) for r in RATES for s in range(args.fa_seeds)]
        task = prog.add_task(f"{args.days} days of normal delivery, firmware in the loop", total=len(jobs2))
        normal = []
        for r in pool.imap_unordered(_normal, jobs2):
            normal.append(r)
            prog.advance(task)
        doc["normal_runs"] = sorted(normal, key=lambda r: (r["basal_muh"], r["seed"]))
        n_traces = len(inloop.CASES) * args.sweep_seeds + len(RATES) * args.sweep_fa_seeds
        task = prog.add_task("recorded traces (cached in build/occlusion/traces)", total=n_traces)
        sweep.build_all(tuple(inloop.CASES), args.sweep_seeds, RATES, args.sweep_fa_seeds, 30, pool=pool,
                        progress=lambda: prog.advance(task))
        task = prog.add_task("threshold sweep", total=1)
        res = sweep.sweep(SWEEP_MN, tuple(inloop.CASES), args.sweep_seeds, RATES, args.sweep_fa_seeds, 30,
                          pool=pool)
        prog.advance(task)
    doc["sweep"] = [sweep.summary(r) for r in res]
    doc["sweep_raw"] = res
    doc["figures"] = figures(doc)
    doc["wall_s"] = time.perf_counter() - t_start
    return doc


def figures(doc: dict) -> dict:
    out: dict = {"errors": [r for r in doc["occlusion_runs"] + doc["normal_runs"] if "error" in r]}
    for case in inloop.CASES:
        rs = [r for r in doc["occlusion_runs"] if r["case"] == case and "error" not in r]
        missed = [r["missed_steps"] * U_PER_STEP if r["missed_steps"] is not None else None for r in rs]
        out[case] = {"runs": len(rs), "alarmed": sum(1 for r in rs if r["t_alarm_ms"] is not None),
                     "missed_U": stats(missed), "time_to_alarm_s": stats(r["time_to_alarm_s"] for r in rs),
                     "backoff_steps": stats(r["backoff_steps"] for r in rs if r["t_alarm_ms"] is not None)}
        for d in inloop.CLEAR_DELAYS_MS:
            out[case][f"released_U_clear_{d // 60_000}min"] = stats(
                r["released_steps"][str(d)] * U_PER_STEP for r in rs if r["t_alarm_ms"] is not None)
    fa = {}
    for r in doc["normal_runs"]:
        if "error" in r:
            continue
        f = fa.setdefault(str(r["basal_muh"]), {"false_alarms": 0, "pump_days": 0, "other_alarms": []})
        f["false_alarms"] += len(r["occlusion_alarms"])
        f["pump_days"] += r["days"]
        f["other_alarms"] += r["other_alarms"]
    out["false_alarms"] = fa
    chosen = next(s for s in doc["sweep"] if s["limit_mN"] == sweep.CHOSEN_MN)
    out["sweep_at_chosen"] = chosen
    return out


def _fmt(s: dict, scale: float = 1.0, unit: str = "", digits: int = 2) -> str:
    if not s.get("n"):
        return "no alarm"
    return (f"{s['median'] * scale:.{digits}f} / {s['p95'] * scale:.{digits}f} / {s['max'] * scale:.{digits}f}"
            f"{unit}  (n={s['n']})")


def _time(s: dict) -> str:
    if not s.get("n"):
        return "no alarm"
    m = s["max"]
    if m < 600:
        return _fmt(s, 1, " s", 0)
    if m < 3 * 3600:
        return _fmt(s, 1 / 60, " min", 1)
    return _fmt(s, 1 / 3600, " h", 2)


def print_tables(doc: dict, con: Console) -> None:
    f = doc["figures"]
    t = Table(title=f"Occlusion: firmware in the loop, randomized units (median / p95 / max); threshold "
                    f"{doc['detector']['limit_mN'] / 1000:.1f} N above the learnt baseline")
    t.add_column("figure")
    t.add_column("Basalt", justify="right")
    t.add_column("goal", justify="right")
    t.add_column("commercial anchor")
    labels = {c: v[0] for c, v in inloop.CASES.items()}
    for case in inloop.CASES:
        c = f[case]
        ok = c["missed_U"].get("max", 1e9) <= GOAL_MISSED_U and c["alarmed"] == c["runs"]
        t.add_row(f"units missed before the alarm, {labels[case]}", _fmt(c["missed_U"], 1, " U"),
                  f"[{'green' if ok else 'red'}]<= {GOAL_MISSED_U} U[/]", ANCHOR_MISSED)
        t.add_row(f"time to alarm, {labels[case]}", _time(c["time_to_alarm_s"]), "", ANCHOR_TIME[case])
    rel = {}
    for case in inloop.CASES:
        for k, v in f[case].items():
            if k.startswith("released_U_clear_") and v.get("n"):
                rel.setdefault(k, []).append(v)
    for k, vs in rel.items():
        mx = max(v["max"] for v in vs)
        med = float(np.median([v["median"] for v in vs]))
        mn = min(v["min"] for v in vs)
        t.add_row(f"released when the line clears {k.split('_')[-1].replace('min', ' min')} after the alarm "
                  "(negative: drawn back)", f"{mn:+.3f} .. {mx:+.3f} U, median {med:+.3f}",
                  f"[{'green' if mx <= GOAL_RELEASE_U else 'red'}]<= {GOAL_RELEASE_U} U[/]", ANCHOR_RELEASE)
    bo = [f[c]["backoff_steps"] for c in inloop.CASES if f[c]["backoff_steps"].get("n")]
    if bo:
        t.add_row("back-off (steps retracted)", f"{min(b['min'] for b in bo):.0f} .. {max(b['max'] for b in bo):.0f}",
                  "<= 400", "")
    for rate, v in f["false_alarms"].items():
        t.add_row(f"false alarms, {int(rate) / 1000:g} U/h + 3 boluses a day", f"{v['false_alarms']} in "
                  f"{v['pump_days']} pump-days", f"[{'green' if v['false_alarms'] == 0 else 'red'}]0 in 30 days[/]",
                  "")
    s = f["sweep_at_chosen"]
    t.add_row("false alarms offline (recorded traces, all rates)", f"{s['false_alarms']} in {s['pump_days']} "
              f"pump-days", "0 in 30 days", "")
    con.print(t)
    for e in f["errors"]:
        con.print(f"[red]run failed[/]: {e}")
    w = Table(title="Trade-off (offline sweep of the firmware's detector over recorded traces): "
                    "units missed median / p95 / max, false alarms")
    w.add_column("threshold")
    for case in inloop.CASES:
        w.add_column(labels[case], justify="right")
    w.add_column("false alarms / 30 days", justify="right")
    for s in doc["sweep"]:
        mark = " (chosen)" if s["limit_mN"] == doc["detector"]["limit_mN"] else ""
        row = [f"{s['limit_mN'] / 1000:.1f} N{mark}"]
        for case in inloop.CASES:
            m = s[case]["missed_U"]
            row.append(f"{m[0]:.2f} / {m[1]:.2f} / {m[2]:.2f} U")
        row.append(f"{s['false_alarms_per_30_days']:.2f} ({s['false_alarms']} in {s['pump_days']} d)")
        w.add_row(*row, style="bold" if mark else None)
    con.print(w)


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {c: v[0] for c, v in inloop.CASES.items()}
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2))
    # 1. units missed: in the loop (dots) over the offline distribution at the chosen threshold (box)
    chosen = next(r for r in doc["sweep_raw"] if r["limit_mN"] == doc["detector"]["limit_mN"])
    for i, case in enumerate(inloop.CASES):
        off = np.array(chosen["cases"][case]["missed_steps"]) * U_PER_STEP
        ax[0].boxplot([off[np.isfinite(off)]], positions=[i], widths=0.5, showfliers=True)
        il = [r["missed_steps"] * U_PER_STEP for r in doc["occlusion_runs"] if r["case"] == case and r.get("missed_steps")]
        ax[0].plot(i + 0.3 + 0.05 * np.random.default_rng(0).standard_normal(len(il)), il, ".", color="C1", alpha=0.7)
    ax[0].axhline(GOAL_MISSED_U, color="C3", ls="--", label="goal 0.5 U")
    ax[0].set_xticks(range(len(inloop.CASES)), [labels[c] for c in inloop.CASES], fontsize=8)
    ax[0].set_ylabel("units missed before the alarm (U)")
    ax[0].set_title("Missed before the alarm\n(box: offline traces; dots: firmware in the loop)\n"
                    "Medtronic 511: up to 3 U; Omnipod 5: 3-5 U", fontsize=9)
    ax[0].legend(fontsize=8)
    # 2. trade-off
    lim = [s["limit_mN"] / 1000 for s in doc["sweep"]]
    for case in inloop.CASES:
        ax[1].plot(lim, [s[case]["missed_U"][2] for s in doc["sweep"]], "o-", label=f"max missed, {labels[case]}")
    ax[1].axhline(GOAL_MISSED_U, color="C3", ls="--")
    ax[1].axvline(doc["detector"]["limit_mN"] / 1000, color="k", ls=":", label="chosen")
    ax[1].set_xlabel("threshold above the baseline (N)")
    ax[1].set_ylabel("units missed, worst unit (U)")
    ax2 = ax[1].twinx()
    ax2.plot(lim, [s["false_alarms_per_30_days"] for s in doc["sweep"]], "s--", color="C7",
             label="false alarms / 30 days")
    ax2.set_ylabel("false alarms per 30 pump-days")
    h1, l1 = ax[1].get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax[1].legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
    ax[1].set_title("Trade-off: threshold vs missed units vs false alarms", fontsize=9)
    # 3. time to alarm against the anchors
    typical = {"basal_0.1": 12.5 * 3600, "basal_1": 75 * 60, "bolus_5": 25}
    for i, case in enumerate(inloop.CASES):
        tt = [r["time_to_alarm_s"] for r in doc["occlusion_runs"] if r["case"] == case and r.get("time_to_alarm_s")]
        ax[2].plot(tt, [i] * len(tt), "|", markersize=14, color="C0")
        ax[2].plot([typical[case]], [i], "v", color="C3", markersize=9)
    ax[2].plot([], [], "v", color="C3", label="Medtronic 511 typical")
    ax[2].plot([], [], "|", color="C0", label="Basalt (firmware in the loop)")
    ax[2].set_xscale("log")
    ax[2].set_yticks(range(len(inloop.CASES)), [labels[c] for c in inloop.CASES], fontsize=8)
    ax[2].set_xlabel("time from the occlusion to the alarm (s)")
    ax[2].set_title("Time to alarm", fontsize=9)
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.heap:
        inloop.HEAP = args.heap  # before the pool forks
    con = Console()
    doc = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(doc, indent=1))
    plot(doc, args.out / "occlusion.png")
    print_tables(doc, con)
    con.print(f"written {args.out / 'report.json'} and {args.out / 'occlusion.png'} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
