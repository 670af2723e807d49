"""Figures for persistence and power loss (docs/persistence.md), measured and printed:

- flash writes per day at typical use: a typical day of the firmware's own core (24-segment
  profile around 1 U/h, four boluses and a combo, a temp basal, a suspend, a settings change)
  under MicroPython on real littlefs (os.VfsLfs2 over a RAM flash chip that counts programs and
  erases per 4 KB block: hil/power/lfs_day.py), and what that means for 100k-cycle flash;
- history read speed over socket://: a pump with 2000 records in flash read back page by page;
- restart cost: from power-on to the first status reply, after a cut;
- the power-cut campaign's figures when given a Stats (cuts, worst unaccounted delivery).

    python -m hil.power.bench          (make bench runs it too)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

from hil.paths import FIRMWARE_DIR, micropython_binary
from hil.power import flash
from hil.sim.firmware import SimPump
from host.client import PumpClient

ENDURANCE_CYCLES = 100_000  # erase cycles of the NOR flash on ESP32/RP2040 modules (datasheet minimum)
FS_BLOCKS = 128  # the measured filesystem: 512 KB (the boards' are larger: ~2 MB ESP32, 848 KB Pico W)


def flash_day(days: int = 2, blocks: int = FS_BLOCKS) -> dict:
    """Run lfs_day.py under MicroPython: a typical day's storage traffic on littlefs."""
    env = dict(os.environ, MICROPYPATH=str(FIRMWARE_DIR))
    r = subprocess.run([micropython_binary(), "-X", "heapsize=4M", str(FIRMWARE_DIR.parent / "hil/power/lfs_day.py"),
                        str(blocks), str(days)], capture_output=True, text=True, env=env, check=True, timeout=900)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    per_day = {k: d[k] / days for k in ("records", "snapshots", "settings_writes", "programs", "program_bytes",
                                        "erases", "max_block_erases")}
    per_day["file_writes"] = per_day["records"] + per_day["snapshots"] + 3 * per_day["settings_writes"]
    per_day["years_hottest_block"] = ENDURANCE_CYCLES / max(per_day["max_block_erases"], 1e-9) / 365
    per_day["years_levelled"] = ENDURANCE_CYCLES * blocks / max(per_day["erases"], 1e-9) / 365
    per_day["blocks"] = blocks
    return per_day


def history_read_speed(records: int = 2000) -> dict:
    """Records per second reading the whole history over socket:// (lockstep, paused)."""
    with SimPump() as sim, PumpClient(sim.console_url) as c:
        while c.request("status")["history_seq"] < records:
            c.request("profile_select", name="default")  # one record each (and a settings write)
        t = time.perf_counter()
        n, since, pages = 0, 0, 0
        while True:
            d = c.request("history", since=since, limit=32)
            n += len(d["records"])
            pages += 1
            if d["next"] >= d["newest"]:
                break
            since = d["next"]
        wall = time.perf_counter() - t
    return {"records": n, "pages": pages, "s": wall, "records_per_s": n / wall}


def restart_cost(n: int = 20) -> dict:
    """Wall time from a power cut to the first status reply (recovery included)."""
    from hil.power.campaign import Console  # a raw socket: pyserial's close() sleeps 0.3 s

    with SimPump() as sim:
        c = Console(sim)
        c.req("profile_select", name="default")
        c.close()
        samples = []
        for _ in range(n):
            sim.advance(1000)
            t = time.perf_counter()
            sim.restart()
            c = Console(sim)
            c.req("status")
            samples.append(time.perf_counter() - t)
            c.close()
    return {"median_ms": statistics.median(samples) * 1000, "max_ms": max(samples) * 1000, "n": n}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    with con.status("a typical day on littlefs (MicroPython)..."):
        day = flash_day()
    with con.status("history read speed..."):
        rd = history_read_speed()
    with con.status("restart cost..."):
        rc = restart_cost()
    t = Table(title="Persistence (this machine)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("history records / day (typical use)", f"{day['records']:.0f}")
    t.add_row(f"journal snapshots / day (one per {flash.CKPT} steps at most, and per command)", f"{day['snapshots']:.0f}")
    t.add_row("flash file writes / day (appends + settings write-verify-rename)", f"{day['file_writes']:.0f}")
    t.add_row("littlefs: programs / day, bytes programmed / day",
              f"{day['programs']:.0f}, {day['program_bytes'] / 1024:.0f} KB")
    t.add_row(f"littlefs: 4 KB block erases / day ({day['blocks']}-block filesystem)", f"{day['erases']:.0f}")
    t.add_row("littlefs: erases / day of the most-erased block", f"{day['max_block_erases']:.1f}")
    t.add_row(f"years to {ENDURANCE_CYCLES // 1000}k cycles: hottest block / levelled over the filesystem",
              f"{day['years_hottest_block']:.0f} / {day['years_levelled']:.0f}")
    t.add_row("history read over socket:// (lockstep)", f"{rd['records_per_s']:.0f} records/s "
              f"({rd['records']} records, {rd['pages']} pages, {rd['s']:.2f} s)")
    t.add_row("restart after a cut, to the first status reply", f"median {rc['median_ms']:.0f} ms, max {rc['max_ms']:.0f} ms")
    con.print(t)
    out = {"flash_day": day, "history_read": rd, "restart": rc}
    path = FIRMWARE_DIR.parent / "build" / "persistence_bench.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    con.print(f"written {path}")


if __name__ == "__main__":
    main()
