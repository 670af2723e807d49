"""The power-cut campaign from the command line (make powercut):

    python -m hil.power [--cuts N] [--workers W] [--seed S]

Prints the campaign's figures; exits 1 if any cut failed a check (the failure names its seed and
cut: `Campaign(seed).run(n)` replays it exactly).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from hil.power import campaign, flash


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.power", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        s = campaign.run(a.cuts, a.workers, a.seed)
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t
    print(f"{s.cuts} power cuts in {wall:.0f} s ({a.workers} workers, seed {a.seed})")
    print(f"  kills at random virtual times: {s.kills}")
    print(f"  torn storage writes: {s.storage_cuts} ({s.cuts_in_commands} inside commands, {s.cuts_in_ticks} inside ticks)")
    print(f"  torn records dropped at boot: {s.torn_records}; boluses interrupted: {s.bolus_interrupted}")
    print(f"  unaccounted delivery: worst {s.worst_unaccounted_steps} steps per cut "
          f"(bound: CKPT = {flash.CKPT} steps or one 1-s train), {s.unaccounted_steps} steps over all cuts")
    print(f"  restart to the first status reply: median {statistics.median(s.restart_s) * 1000:.0f} ms")
    print(f"  failures: {len(s.failures)}")
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
