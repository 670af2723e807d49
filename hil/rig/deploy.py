"""Build the firmware for a board and copy it to the board with mpremote, then reset it.

    python -m hil.rig.deploy --board esp32 --port /dev/ttyUSB0
    python -m hil.rig.deploy --board pico_w --port /dev/ttyACM0 --dry-run   # print, do not run

hil.build compiles build/mpy/<board>/; deploy stages build/deploy/<board>/ from it with only that
board's HAL (the simulator's and the other boards' HAL modules stay behind) and main.py as
*source*: MicroPython runs main.py, never main.mpy, after boot, and main.py imports the rest.
On the board: /basalt/ (bytecode), /board.mpy, /main.py. The old /basalt tree is removed first so
no stale bytecode survives; /data (the pump's settings) is kept.
"""
from __future__ import annotations

import argparse
import ast
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hil.build import build
from hil.paths import BOARDS_DIR, BUILD_DIR, FIRMWARE_DIR

SHARED_HAL = {"board_common.mpy"}  # HAL modules every board needs


def mpremote_binary() -> str:
    venv = Path(sys.executable).parent / "mpremote"
    return str(venv) if venv.exists() else (shutil.which("mpremote") or "mpremote")


def board_names() -> list[str]:
    """Boards that can be deployed to: every boards/<name>/board.py except the simulator."""
    return sorted(p.parent.name for p in BOARDS_DIR.glob("*/board.py") if p.parent.name != "sim")


def board_hal(board: str) -> str:
    """The board's HAL module name (board.py's HAL constant), read without importing board.py."""
    tree = ast.parse((BOARDS_DIR / board / "board.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HAL" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"boards/{board}/board.py has no HAL = '...'")


def stage(board: str) -> Path:
    """Build the firmware and lay out exactly what goes on the board under build/deploy/<board>."""
    out = build(board)
    dst = BUILD_DIR / "deploy" / board
    if dst.exists():
        shutil.rmtree(dst)
    hal_dir = out / "basalt" / "hal"
    keep = SHARED_HAL | {board_hal(board).rsplit(".", 1)[-1] + ".mpy"}

    def ignore(directory: str, names: list[str]) -> list[str]:
        if Path(directory) == hal_dir:
            return [n for n in names if n not in keep]
        if Path(directory) == out:
            return ["main.mpy"]
        return []

    shutil.copytree(out, dst, ignore=ignore)
    shutil.copy2(FIRMWARE_DIR / "main.py", dst / "main.py")
    return dst


def commands(out: Path, port: str, reset: bool = True, mpremote: str | None = None) -> list[tuple[list[str], bool]]:
    """The mpremote invocations that deploy the staged tree `out`, each with whether it may fail
    (removing /basalt fails on a fresh board that has none)."""
    mp = mpremote or mpremote_binary()
    conn = [mp, "connect", port]
    cmds = [
        (conn + ["fs", "rm", "-r", ":basalt"], True),
        (conn + ["fs", "cp", "-r", str(out / "basalt"), str(out / "board.mpy"), str(out / "main.py"), ":"], False),
    ]
    if reset:
        cmds.append((conn + ["reset"], False))
    return cmds


def deploy(board: str, port: str, dry_run: bool = False, reset: bool = True) -> int:
    if board not in board_names():
        raise SystemExit(f"unknown board {board!r}; choose from {', '.join(board_names())}")
    out = stage(board)
    for argv, may_fail in commands(out, port, reset):
        print(shlex.join(argv), flush=True)
        if dry_run:
            continue
        r = subprocess.run(argv)
        if r.returncode and not may_fail:
            print(f"deploy: {argv[3:]} failed with exit status {r.returncode}", file=sys.stderr)
            return r.returncode
    if not dry_run:
        print(f"deployed {board} to {port}; talk to it with: pumpctl --port {port} ping")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.rig.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True, choices=board_names(), help="board folder under boards/")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0 or /dev/ttyACM0")
    p.add_argument("--dry-run", action="store_true", help="build, then print the mpremote commands without running them")
    p.add_argument("--no-reset", dest="reset", action="store_false", help="leave the board in the REPL after copying")
    a = p.parse_args(argv)
    return deploy(a.board, a.port, a.dry_run, a.reset)


if __name__ == "__main__":
    sys.exit(main())
