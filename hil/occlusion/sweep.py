"""The detector's trade-off, swept offline over recorded sensor traces (hil/occlusion/traces.py).

Occlusion traces: each case of the issue (0.1 and 1.0 U/h basal, a 5 U bolus) on many seeded
units, the line blocked at a random time, recorded well past the goal. Normal traces: 30 days at
several basal rates with three boluses a day and reservoir changes, no occlusion. For each
threshold the firmware's own detector (basalt.core.occlusion with its `_LIMIT_MN` patched - the
CPython copy of the same file) runs over every trace: units missed at its alarm, time to alarm,
false alarms. Traces are cached under build/occlusion/traces (they depend only on the models).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from pathlib import Path

import basalt.core
import basalt.core.occlusion as occlusion
import numpy as np

from hil.occlusion import traces
from hil.occlusion.inloop import CASES, H, daily_boluses
from hil.occlusion.traces import DAY, NL, Plan, alarms, build
from hil.paths import BUILD_DIR
from hil.sim import pressure
from hil.sim.hardware import IDLE_PUSH_MS, tick_sample_ms
from hil.sim.pressure import PressureParams

CACHE = BUILD_DIR / "occlusion" / "traces"
GAIN = 150  # boards/sim PRESSURE_COUNTS_PER_N
CHOSEN_MN = occlusion._LIMIT_MN


def detector(limit_mn: int):
    """A factory of the firmware's detector with the threshold set to limit_mn."""
    def make():
        occlusion._LIMIT_MN = limit_mn
        try:
            return occlusion.Occlusion(512, GAIN)
        finally:
            occlusion._LIMIT_MN = CHOSEN_MN
    return make


@functools.cache
def _version() -> str:
    """Traces depend on the models, the delivery engine and SimHardware's sampling rule only."""
    src = "".join(Path(m.__file__).read_text() for m in (pressure, traces, basalt.core))
    rule = (IDLE_PUSH_MS, tick_sample_ms(1000))
    return hashlib.sha1((repr(rule) + src).encode()).hexdigest()[:16]


def prune() -> None:
    """Drop cached traces of older model versions."""
    v = _version()
    for f in CACHE.glob("*.npz"):
        if not f.stem.endswith(v):
            f.unlink(missing_ok=True)


def _cached(name: str, make) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"{name}-{_version()}.npz"
    if f.exists():
        try:
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # a run killed while writing: build it again
    d = make()
    tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **d)
    os.replace(tmp, f)  # whole or not at all, whichever process gets there first
    return d


def occlusion_case(case: str, seed: int) -> dict:
    """A unit's trace with the line blocked at a random 2-10 h (in a 5 U bolus for bolus_5)."""
    def make():
        _, rate, bolus = CASES[case]
        rng = np.random.default_rng([seed, 41, list(CASES).index(case)])
        t_on = int(rng.uniform(2 * H, 10 * H))
        if bolus:
            t_b = t_on - int(rng.uniform(0, bolus * 60 / 1500 - 10)) * 1000 - int(rng.uniform(0, 1000))
            plan = Plan(rate, boluses=[(t_b // 1000, bolus)])
            t_end = t_on + 30 * 60_000
        else:
            plan = Plan(rate)
            t_end = t_on + 300 * 5 * H // rate  # 300 steps: 3x the goal
        tr = build(plan, seed, t_end, occlude=(t_on, None))
        sel = tr.t >= t_on
        miss = np.full(len(tr.t), np.nan)
        miss[sel] = tr.missed_steps(t_on, tr.t[sel])
        res = tr.model._state(t_on)[9]
        cps = GAIN * PressureParams().area_mm2 / 1000 * NL / res.compliance(0, PressureParams().travel_steps)
        return {"t": tr.t, "raw": tr.raw, "steps": tr.steps, "resets": np.array(tr.resets, dtype=np.int64),
                "t_on": np.int64(t_on), "miss": miss, "cps": np.float64(cps)}
    return _cached(f"occ-{case}-{seed}", make)


def normal_case(rate_muh: int, seed: int, days: int) -> dict:
    """`days` of normal delivery at a basal rate with three boluses a day (inloop.daily_boluses)."""
    def make():
        bol = [(t // 1000, mu) for t, mu in daily_boluses(seed, days)]
        tr = build(Plan(rate_muh, boluses=bol), seed, days * DAY)
        return {"t": tr.t, "raw": tr.raw, "steps": tr.steps, "resets": np.array(tr.resets, dtype=np.int64)}
    return _cached(f"fa-{rate_muh}-{seed}-{days}", make)


def _build(job):
    kind, a, b, *rest = job
    if kind == "occ":
        occlusion_case(a, b)
    else:
        normal_case(a, b, rest[0])
    return job


def build_all(cases, seeds: int, rates, fa_seeds: int, days: int, pool=None, progress=None) -> None:
    if CACHE.exists():
        prune()
    jobs = [("occ", c, s) for c in cases for s in range(seeds)]
    jobs += [("fa", r, s, days) for r in rates for s in range(fa_seeds)]
    jobs.sort(key=lambda j: j[0] == "occ")  # the long 30-day traces first
    it = pool.imap_unordered(_build, jobs) if pool else map(_build, jobs)
    for _ in it:
        if progress:
            progress()


def evaluate(limit_mn: int, cases, seeds: int, rates, fa_seeds: int, days: int) -> dict:
    """Missed steps and time to alarm per case, false alarms per rate, at one threshold."""
    make = detector(limit_mn)
    out: dict = {"limit_mN": limit_mn, "limit_counts": limit_mn * GAIN // 1000, "cases": {}, "false_alarms": {}}
    for case in cases:
        missed, tta, early = [], [], 0
        for s in range(seeds):
            d = occlusion_case(case, s)
            t_on = int(d["t_on"])
            hit = [i for i in alarms(d["t"], d["raw"], d["steps"], d["resets"], make) if d["t"][i] >= t_on]
            early += sum(1 for i in alarms(d["t"], d["raw"], d["steps"], d["resets"], make) if d["t"][i] < t_on)
            if hit:
                missed.append(float(d["miss"][hit[0]]))
                tta.append((int(d["t"][hit[0]]) - t_on) / 1000)
            else:
                missed.append(float("inf"))
                tta.append(float("inf"))
        out["cases"][case] = {"missed_steps": missed, "time_to_alarm_s": tta, "alarms_before_occlusion": early}
    for r in rates:
        n = 0
        for s in range(fa_seeds):
            d = normal_case(r, s, days)
            n += len(alarms(d["t"], d["raw"], d["steps"], d["resets"], make))
        out["false_alarms"][str(r)] = {"alarms": n, "pump_days": fa_seeds * days}
    return out


def _evaluate(args):
    return evaluate(*args)


def sweep(limits_mn, cases, seeds, rates, fa_seeds, days, pool=None) -> list[dict]:
    jobs = [(lim, cases, seeds, rates, fa_seeds, days) for lim in limits_mn]
    res = list(pool.imap(_evaluate, jobs)) if pool else [evaluate(*j) for j in jobs]
    return sorted(res, key=lambda r: r["limit_mN"])


def summary(r: dict) -> dict:
    """Per case: median / p95 / max missed (U) and time to alarm; false alarms per 30 pump-days."""
    out = {"limit_mN": r["limit_mN"]}
    for case, c in r["cases"].items():
        m = np.array(c["missed_steps"]) * NL / 10_000
        out[case] = {"missed_U": [float(np.median(m)), float(np.percentile(m, 95)), float(m.max())],
                     "alarms_before_occlusion": c["alarms_before_occlusion"]}
    fa = sum(v["alarms"] for v in r["false_alarms"].values())
    days = sum(v["pump_days"] for v in r["false_alarms"].values())
    out["false_alarms_per_30_days"] = fa * 30 / days if days else None
    out["false_alarms"] = fa
    out["pump_days"] = days
    return out


def dump(results: list[dict], path: Path) -> None:
    path.write_text(json.dumps(results))
