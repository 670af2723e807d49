"""basalt-sim: run the simulated pump for people and tools to drive by hand.

    basalt-sim                      # real time: the firmware's clock is the wall clock
    basalt-sim --speed 60           # virtual time paced at 60x (a minute per second), lockstep
    basalt-sim --storage ./pumpdata # keep settings between runs

It prints the console URL (socket://127.0.0.1:PORT) for pumpctl, the client library or a
terminal, then reports what the plant delivers until Ctrl-C.
"""
from __future__ import annotations

import argparse
import threading
import time

from rich.console import Console

from hil.sim.firmware import SimPump


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="basalt-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", type=float, default=1.0,
                    help="1 = real time (default); N > 1 = lockstep virtual time paced at N x real time")
    ap.add_argument("--storage", default=None, help="pump storage directory (default: a temporary one)")
    ap.add_argument("--micropython", default=None, help="micropython binary (default: the venv's; or $BASALT_MICROPYTHON)")
    ap.add_argument("--heap", default="64K", help="MicroPython heap size (default 64K)")
    ap.add_argument("--for", dest="duration", type=float, default=None, help="stop after this many wall seconds")
    a = ap.parse_args(argv)
    out = Console()
    realtime = a.speed == 1.0
    sim = SimPump(storage_dir=a.storage, mode="realtime" if realtime else "lockstep",
                  heap=a.heap, micropython=a.micropython)
    sim.start()
    out.print(f"[bold]Basalt simulated pump[/] ({'real time' if realtime else f'{a.speed:g}x virtual time'})")
    out.print(f"console: [cyan]{sim.console_url}[/]   e.g.  pumpctl --port {sim.console_url} status", soft_wrap=True)
    stop = threading.Event()
    if not realtime:
        def pace():
            step = 0.1
            while not stop.wait(step):
                sim.advance(int(step * 1000 * a.speed))
        threading.Thread(target=pace, daemon=True).start()
    t_end = time.monotonic() + a.duration if a.duration else None
    last = 0
    try:
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.5)
            if sim.proc.poll() is not None:
                out.print(f"[red]firmware exited[/]\n{sim.log_tail()}")
                return 1
            steps = sim.plant.net_steps()
            if steps != last:
                out.print(f"plant: {steps} steps = {steps / sim.plant.steps_per_unit:.3f} U delivered")
                last = steps
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
