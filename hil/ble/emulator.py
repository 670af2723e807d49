"""Host side of the CGM emulator (firmware/cgm_emulator): set its readings over the serial line,
and deploy it to a second dev board.

    python -m hil.ble.emulator --port /dev/ttyUSB1 status
    python -m hil.ble.emulator --port /dev/ttyUSB1 reading 15 142          # offset 15 min, 142 mg/dL
    python -m hil.ble.emulator --port /dev/ttyUSB1 reading 20 nan          # a not-a-number SFLOAT
    python -m hil.ble.emulator --port /dev/ttyUSB1 raw "x crc 1"           # any protocol line
    python -m hil.ble.emulator --port /dev/ttyUSB1 trace glucose.csv       # a CSV trace, one line per reading
    python -m hil.ble.emulator deploy --board esp32 --port /dev/ttyUSB1 [--dry-run]

`--port` is any pyserial URL: a board's /dev/ttyUSB*, or the simulator's socket://127.0.0.1:PORT
(hil.ble.node.MpyNode(...).console_url), where the same firmware runs in the Unix port. The line
protocol is in docs/ble.md ("CGM emulator").
"""
from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hil.build import build
from hil.paths import BUILD_DIR

# What an emulator board needs from the build tree: the shared codec and the emulator (packages
# whose __init__ only documents them ship no module: MicroPython imports the folders as namespace
# packages, hil/build.py).
DEPLOY_MODULES = ["basalt/cgm/cgms.mpy", "basalt/cgm/sfloat.mpy", "basalt/cgm/rx.mpy", "basalt/cgm/conn.mpy",
                  "basalt/lib/__init__.mpy", "cgm_emulator/emulator.mpy", "cgm_emulator/board_main.mpy"]
MAIN = "import cgm_emulator.board_main  # the CGM emulator (hil/ble/emulator.py deploy)\n"


class EmulatorError(RuntimeError):
    """The emulator refused a command ("err ...") or did not answer."""


class Emulator:
    """One emulator on a serial URL; each method is one protocol line and returns its reply."""

    def __init__(self, url: str, timeout: float = 3.0):
        import serial

        self.ser = serial.serial_for_url(url, baudrate=115200, timeout=timeout)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def command(self, line: str) -> str:
        """Send one line; the reply ("ok ..."), or EmulatorError for "err ..." or silence. Lines
        that are neither (a board's boot banner) are skipped."""
        self.ser.write(line.encode() + b"\n")
        while True:
            raw = self.ser.readline()
            if not raw.endswith(b"\n"):
                raise EmulatorError(f"no reply to {line!r}")
            reply = raw.decode(errors="replace").strip()
            if reply.startswith("ok"):
                return reply
            if reply.startswith("err"):
                raise EmulatorError(f"{line!r}: {reply}")

    def reading(self, offset: int, glucose: int | str, status: int = 0) -> str:
        """A reading at time offset (minutes since session start): mg/dL 0..2045 or one of
        nan / nres / +inf / -inf; status = the 24 annunciation bits."""
        return self.command(f"r {int(offset)} {glucose} {status:x}")

    def session(self, running: bool) -> str:
        return self.command("s start" if running else "s stop")

    def features(self, bits: int) -> str:
        return self.command(f"f {bits:x}")

    def fault(self, kind: str, n: int = 1) -> str:
        """drop / crc / dup on the next n live readings."""
        return self.command(f"x {kind} {n}")

    def advertise(self, on: bool) -> str:
        """off: stop advertising and drop every link (the sensor out of range)."""
        return self.command("a on" if on else "a off")

    def name(self, name: str) -> str:
        return self.command(f"n {name}")

    def status(self) -> dict:
        f = self.command("?").split()[1:]
        return {"advertising": f[0] == "1", "connections": int(f[1]), "records": int(f[2]),
                "last_offset": int(f[3]), "features": int(f[4], 16), "session": f[5] == "1"}


def trace_rows(path: str | Path) -> list[tuple[int, int]]:
    """A CSV trace (minutes, mg/dL; header and '#' lines skipped) as (offset, mg/dL) readings."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                rows.append((int(float(row[0])), int(round(float(row[1])))))
            except (ValueError, IndexError):
                if rows:
                    raise ValueError(f"{path}: bad row {row!r}") from None
    return rows


# ---- deploy --------------------------------------------------------------------------------------
def stage() -> Path:
    """The files an emulator board gets, under build/deploy/cgm_emulator."""
    tree = build("sim")  # the firmware's bytecode; the emulator needs no board-specific module
    dst = BUILD_DIR / "deploy" / "cgm_emulator"
    if dst.exists():
        shutil.rmtree(dst)
    for rel in DEPLOY_MODULES:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / rel, dst / rel)
    (dst / "main.py").write_text(MAIN)
    return dst


def deploy_commands(out: Path, port: str, mpremote: str = "mpremote") -> list[list[str]]:
    conn = [mpremote, "connect", port]
    return [conn + ["fs", "cp", "-r", str(out / "basalt"), str(out / "cgm_emulator"), str(out / "main.py"), ":"],
            conn + ["reset"]]


def deploy(port: str, dry_run: bool = False) -> int:
    from hil.rig.deploy import mpremote_binary

    out = stage()
    for argv in deploy_commands(out, port, mpremote_binary()):
        print(shlex.join(argv), flush=True)
        if not dry_run and subprocess.run(argv).returncode:
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.ble.emulator", description=__doc__.splitlines()[0])
    p.add_argument("--port", help="the emulator's pyserial URL (/dev/ttyUSB1, socket://host:port)")
    sp = p.add_subparsers(dest="cmd", required=True)
    sp.add_parser("status")
    r = sp.add_parser("reading")
    r.add_argument("offset", type=int)
    r.add_argument("glucose")
    r.add_argument("--status", type=lambda s: int(s, 0), default=0)
    sp.add_parser("raw").add_argument("line")
    sp.add_parser("trace").add_argument("csv")
    d = sp.add_parser("deploy")
    d.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    if not a.port:
        p.error("--port is required")
    if a.cmd == "deploy":
        return deploy(a.port, a.dry_run)
    try:
        with Emulator(a.port) as emu:
            if a.cmd == "status":
                print(emu.status())
            elif a.cmd == "reading":
                print(emu.reading(a.offset, a.glucose, a.status))
            elif a.cmd == "raw":
                print(emu.command(a.line))
            else:
                for off, g in trace_rows(a.csv):
                    print(emu.reading(off, g))
    except EmulatorError as e:
        print(e, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
