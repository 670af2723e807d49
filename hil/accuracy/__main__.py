"""python -m hil.accuracy: IEC 60601-2-24 trumpet curves of the real firmware's basal delivery.

    python -m hil.accuracy [--rates 0.1 1.0 5.0] [--out build/accuracy] [--seed N] [--ideal]

For each rate: run the firmware in the simulator for 2 virtual hours, pass the plant's step log
through the syringe model, read a virtual balance every 30 s and analyse the second hour. Writes
<out>/trumpet.json and <out>/trumpet.png and prints the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hil.accuracy import (
    ANALYSIS_END_MIN,
    ANALYSIS_START_MIN,
    DEFAULT_RATES_UH,
    SAMPLE_INTERVAL_S,
    WINDOWS_MIN,
    RateReport,
    SyringeParams,
    measure,
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m hil.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=list(DEFAULT_RATES_UH), metavar="U_H",
                    help="basal rates in U/h (default: 0.1 1.0 5.0)")
    ap.add_argument("--out", type=Path, default=Path("build/accuracy"), help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the mechanism's random variation")
    ap.add_argument("--ideal", action="store_true", help="turn every mechanical imperfection off")
    ap.add_argument("--micropython", default=None, help="micropython binary (default: the venv's)")
    return ap.parse_args(argv)


def report_doc(reports: list[RateReport], params: SyringeParams, seed: int) -> dict:
    return {
        "standard": "IEC 60601-2-24 flow-rate accuracy (trumpet curve)",
        "sample_interval_s": SAMPLE_INTERVAL_S,
        "run_min": ANALYSIS_END_MIN,
        "analysis_min": [ANALYSIS_START_MIN, ANALYSIS_END_MIN],
        "windows_min": list(WINDOWS_MIN),
        "seed": seed,
        "syringe_model": params.to_dict(),
        "rates": [r.to_dict() for r in reports],
    }


def plot(reports: list[RateReport], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4.6 * len(reports), 4.2), squeeze=False)
    for ax, rep in zip(axes[0], reports, strict=True):
        res, ideal = rep.result, rep.ideal
        p = [w.window_min for w in res.points]
        ax.plot(p, [w.max_pct for w in res.points], "o-", color="tab:red", label="Ep(max)")
        ax.plot(p, [w.min_pct for w in res.points], "o-", color="tab:blue", label="Ep(min)")
        ax.plot(p, [w.max_pct for w in ideal.points], ":", color="tab:red", alpha=0.6,
                label="ideal mechanism")
        ax.plot(p, [w.min_pct for w in ideal.points], ":", color="tab:blue", alpha=0.6)
        ax.axhline(res.overall_pct, color="k", ls="--", lw=1, label=f"overall A = {res.overall_pct:+.2f} %")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"basal {rep.rate_uh:g} U/h ({rep.steps} steps in 2 h)")
        ax.set_xlabel("observation window P (min)")
        ax.set_xticks(p)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("flow-rate error (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(reports: list[RateReport]) -> Table:
    t = Table(title="IEC 60601-2-24 trumpet, 2nd hour: flow-rate error %")
    t.add_column("U/h", justify="right")
    t.add_column("P =", justify="left")
    for w in WINDOWS_MIN:
        t.add_column(f"{w} min", justify="right", no_wrap=True)
    t.add_column("A", justify="right", no_wrap=True)
    for rep in reports:
        pts = rep.result.points
        t.add_row(f"{rep.rate_uh:g}", "Ep(max)", *[f"{p.max_pct:+.1f}" for p in pts],
                  f"{rep.result.overall_pct:+.2f}")
        t.add_row("", "Ep(min)", *[f"{p.min_pct:+.1f}" for p in pts], "", end_section=True)
    return t


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Console()
    params = SyringeParams.ideal() if a.ideal else SyringeParams()
    reports = []
    for rate in a.rates:
        with out.status(f"running the firmware at {rate:g} U/h for 2 virtual hours"):
            reports.append(measure(rate, params, seed=a.seed, micropython=a.micropython))
    a.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = a.out / "trumpet.json", a.out / "trumpet.png"
    json_path.write_text(json.dumps(report_doc(reports, params, a.seed), indent=1) + "\n")
    what = "ideal mechanism" if a.ideal else f"syringe model defaults, seed {a.seed}"
    plot(reports, png_path, f"Basalt basal delivery, IEC 60601-2-24 trumpet curves ({what})")
    out.print(table(reports))
    out.print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
