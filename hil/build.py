"""Compile the firmware with mpy-cross, the way it ships to a board.

build/mpy/<board>/ mirrors firmware/ as .mpy files plus that board's board.mpy. The simulator
runs this tree: loading bytecode avoids the compiler's RAM peak, which a 64 KB heap cannot
afford, and it is the same bytecode a board gets. Rebuilds only what changed.

    python -m hil.build [board]      # default: sim
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hil.paths import BOARDS_DIR, BUILD_DIR, FIRMWARE_DIR, mpy_cross_binary


class CompileError(RuntimeError):
    pass


def sources(board: str = "sim") -> list[tuple[Path, Path]]:
    """(source .py, path of its .mpy relative to the build tree) for firmware + board."""
    out = [(p, p.relative_to(FIRMWARE_DIR).with_suffix(".mpy")) for p in sorted(FIRMWARE_DIR.rglob("*.py"))]
    out.append((BOARDS_DIR / board / "board.py", Path("board.mpy")))
    return out


def compile_one(src: Path, dst: Path, name: str | None = None) -> None:
    """Compile src to dst. `name` is the source name recorded for tracebacks. The firmware
    interns it for good, so the build records exactly the module's own __file__ as the simulator
    and boards load it ("basalt/core/pump.mpy"): one interned name per module instead of two
    (docs/memory.md - each name counts toward the qstr-pool cliff)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [mpy_cross_binary(), "-o", str(dst)]
    if name:
        cmd += ["-s", name]
    r = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
    if r.returncode:
        raise CompileError(f"mpy-cross failed on {src}:\n{r.stderr}")


def build(board: str = "sim") -> Path:
    out = BUILD_DIR / "mpy" / board
    wanted = set()
    for src, rel in sources(board):
        dst = out / rel
        wanted.add(dst)
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            compile_one(src, dst, rel.as_posix())
    for stale in out.rglob("*.mpy"):  # a deleted source must not linger as bytecode
        if stale not in wanted:
            stale.unlink()
    return out


def main() -> None:
    board = sys.argv[1] if len(sys.argv) > 1 else "sim"
    out = build(board)
    total = sum(p.stat().st_size for p in out.rglob("*.mpy"))
    print(f"{out}: {len(list(out.rglob('*.mpy')))} modules, {total} bytes of bytecode")


if __name__ == "__main__":
    main()
