"""basalt-scenario: run YAML pump scenarios (docs/scenarios.md) and report pass/fail.

    basalt-scenario scenarios/default.yaml                      # simulator, lockstep virtual time
    basalt-scenario scenarios/*.yaml --report build/report.json
    basalt-scenario scenarios/bolus_cancel.yaml --port /dev/ttyUSB0   # a real board, wall-clock time

Exit codes: 0 every expectation passed; 1 an expectation failed; 2 a file is invalid (nothing
was run) or the command line is wrong; 3 a run was aborted (firmware died, pump stopped answering,
setup refused).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hil.scenario.model import ScenarioError, fmt_time, load
from hil.scenario.runner import FAIL, NOT_RUN, PASS, SKIP, BoardTarget, SimTarget, run_scenario

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_ABORTED = 0, 1, 2, 3
DEFAULT_REPORT = "build/scenario-report.json"
REPORT_FORMAT = 1

_MARK = {PASS: "[green]PASS[/]", FAIL: "[bold red]FAIL[/]", SKIP: "[yellow]SKIP[/]", NOT_RUN: "[dim]not run[/]"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="basalt-scenario", description="Run Basalt pump scenarios (docs/scenarios.md).")
    p.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files")
    p.add_argument("--report", default=DEFAULT_REPORT, metavar="PATH",
                   help=f"JSON report path (default {DEFAULT_REPORT})")
    p.add_argument("--port", default=None, metavar="URL",
                   help="pyserial URL of a real pump board; runs in wall-clock time (default: the simulator)")
    p.add_argument("--micropython", default=None, metavar="BIN", help="micropython binary for the simulator")
    p.add_argument("--heap", default=None, metavar="SIZE",
                   help="simulator heap, e.g. 64K (default: the firmware's budget); for diagnosis only")
    return p


def _write_report(path: str, doc: dict, out: Console) -> None:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    except OSError as e:
        out.print(f"[red]could not write the report {escape(path)}: {escape(str(e))}[/]")


def _print_scenario(res: dict, out: Console) -> None:
    tbl = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    tbl.add_column("#", justify="right", style="dim")
    tbl.add_column("time", style="cyan", no_wrap=True)
    tbl.add_column("step")
    tbl.add_column("checks", justify="right", no_wrap=True)
    tbl.add_column("result", no_wrap=True)
    for s in res["steps"]:
        cs = s["checks"]
        n_pass = sum(1 for c in cs if c["result"] == PASS)
        n_real = sum(1 for c in cs if c["result"] != SKIP)
        label = s["label"] or ""
        text = escape(label)
        act = s["action"]
        if act and not act["ok"]:
            text += f" [dim]→ refused: {escape(str(act.get('error')))}[/]"
        checks = "; ".join(c["what"] for c in cs if c["check"] not in ("action", "expect_refused", "unchanged"))
        if checks:
            text = (text + "\n" if text else "") + f"[dim]expect {escape(checks)}[/]"
        tbl.add_row(str(s["index"]), s["time"], text, f"{n_pass}/{n_real}" if cs else "", _MARK[s["result"]])
    out.print(tbl)
    for s in res["steps"]:
        for c in s["checks"]:
            if c["result"] == FAIL:
                where = f"step {s['index']} at {s['time']}" + (f" (line {s['line']})" if s.get("line") else "")
                out.print(f"  [red]✗[/] {escape(where)}: [bold]{escape(c['what'])}[/]\n"
                          f"      expected {escape(c['expected'])}\n      actual   {escape(c['actual'])}")
    if res["error"]:
        err = res["error"]
        out.print(f"  [bold red]aborted:[/] {escape(err if len(err) < 2000 else err[:2000] + ' ...')}")
    pump, plant = res.get("pump"), res.get("plant")
    bits = []
    if pump and "error" not in pump:
        bits.append(f"pump delivered {pump['delivered_total_U']:.3f} U (basal {pump['delivered_basal_U']:.3f}, "
                    f"bolus {pump['delivered_bolus_U']:.3f}), reservoir {pump['reservoir_U']:.3f} U")
    if plant:
        bits.append(f"plant {plant['delivered_U']:.3f} U in {plant['steps']} steps")
    if bits:
        out.print("  [dim]" + escape("; ".join(bits)) + "[/]")
    if res.get("cgm"):
        out.print("  [dim]" + escape(cgm_summary(res["cgm"])) + "[/]")
    c = res["counts"]
    skip = f", {c[SKIP]} skipped" if c[SKIP] else ""
    verdict = "[green]PASSED[/]" if res["result"] == PASS else "[bold red]FAILED[/]"
    out.print(f"  {verdict}  {c[PASS]} passed, {c[FAIL]} failed{skip}; {res['virtual_time']} virtual "
              f"in {res['wall_s']:.1f} s wall\n")


def cgm_summary(c: dict) -> str:
    """One line on the CGM: readings, the last glucose and trend, rejections, link losses."""
    if c.get("error"):
        return f"cgm: the pump refused `cgm`: {c['error']}"
    g = c.get("glucose_mgdl")
    trend = c.get("trend")
    last = "no glucose yet" if g is None else f"last {g} mg/dL" + (
        f" ({trend / 10:+.1f} mg/dL/min, {c['age_s']} s old)" if trend is not None else f" ({c['age_s']} s old)")
    rej = c.get("rejected") or {}
    radio = c.get("radio") or {}
    parts = [f"cgm {c.get('paired') or c.get('sensor') or 'unpaired'} link {c.get('link')}",
             f"{c.get('readings')} readings accepted, {c.get('logged')} logged ({c.get('backfilled')} backfilled)",
             last,
             "rejected " + (", ".join(f"{k} {n}" for k, n in rej.items()) if rej else "none"),
             f"link lost {radio.get('link_losses', c.get('link_downs'))}x (pump saw {c.get('link_downs')} down), "
             f"reconnected {c.get('reconnects')}x"]
    if c.get("alarms"):
        parts.append("alarms " + ", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in c["alarms"].items()))
    if radio.get("errors"):
        parts.append(f"radio errors: {len(radio['errors'])}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report: dict = {"tool": "basalt-scenario", "format": REPORT_FORMAT, "started": started,
                    "target": args.port or "simulator", "files": args.files, "invalid": [], "scenarios": []}

    # Validate every file before any pump starts.
    scenarios, invalid = [], []
    for f in args.files:
        try:
            scenarios.append(load(f))
        except ScenarioError as e:
            invalid.append({"file": f, "error": str(e), "line": e.line, "step": e.step, "field": e.field})
    if invalid:
        for bad in invalid:
            out.print(f"[bold red]invalid scenario[/] {escape(bad['error'])}")
        out.print(f"[bold red]{len(invalid)} of {len(args.files)} file(s) invalid; nothing was run.[/]")
        report.update(invalid=invalid, ok=False, exit_code=EXIT_INVALID)
        _write_report(args.report, report, out)
        return EXIT_INVALID

    if args.port:
        def make_target(scn):
            return BoardTarget(args.port)
    else:
        def make_target(scn):  # a CGM scenario: the pump gets a radio and a simulated sensor
            return SimTarget(micropython=args.micropython, heap=args.heap, cgm=scn.cgm)

    wall0 = time.monotonic()
    for scn in scenarios:
        where = "wall-clock on " + args.port if args.port else "simulated"
        out.print(f"[bold]▶ {escape(scn.name)}[/]  [dim]{escape(scn.path)} · {len(scn.steps)} steps · "
                  f"{fmt_time(scn.end_ms)} {where}[/]")
        res = run_scenario(scn, lambda scn=scn: make_target(scn))
        report["scenarios"].append(res)
        _print_scenario(res, out)
    wall = time.monotonic() - wall0

    results = report["scenarios"]
    aborted = sum(1 for r in results if r["error"])
    failed = sum(1 for r in results if r["result"] == FAIL)
    counts = {k: sum(r["counts"][k] for r in results) for k in (PASS, FAIL, SKIP)}
    virtual_ms = sum(r["virtual_ms"] for r in results)
    code = EXIT_ABORTED if aborted else EXIT_FAILED if failed else EXIT_OK
    report.update(ok=code == EXIT_OK, exit_code=code, totals={
        "scenarios": len(results), "scenarios_passed": len(results) - failed, "scenarios_failed": failed,
        "scenarios_aborted": aborted, "checks_passed": counts[PASS], "checks_failed": counts[FAIL],
        "checks_skipped": counts[SKIP], "virtual_ms": virtual_ms, "virtual_time": fmt_time(virtual_ms),
        "wall_s": round(wall, 3)})
    _write_report(args.report, report, out)

    speed = f" ({virtual_ms / 1000 / wall:,.0f}x real time)" if wall > 0 and virtual_ms and not args.port else ""
    skip = f", {counts[SKIP]} skipped" if counts[SKIP] else ""
    style = "bold green" if code == EXIT_OK else "bold red"
    verdict = "all passed" if code == EXIT_OK else f"{failed} failed" + (f" ({aborted} aborted)" if aborted else "")
    out.print(f"[{style}]{len(results)} scenario(s): {verdict}[/] · checks {counts[PASS]} passed, "
              f"{counts[FAIL]} failed{skip} · {fmt_time(virtual_ms)} virtual time in {wall:.1f} s wall{speed}")
    out.print(f"[dim]report: {escape(args.report)}[/]")
    return code


if __name__ == "__main__":
    sys.exit(main())
