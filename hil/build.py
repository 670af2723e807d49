"""Compile the firmware with mpy-cross, the way it ships to a board.

build/mpy/<board>/ mirrors firmware/ as .mpy files plus that board's board.mpy. The simulator
runs this tree: loading bytecode avoids the compiler's RAM peak, which a 64 KB heap cannot
afford, and it is the same bytecode a board gets. Rebuilds only what changed.

    python -m hil.build [board]      # default: sim
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from hil.paths import BOARDS_DIR, BUILD_DIR, FIRMWARE_DIR, mpy_cross_binary


class CompileError(RuntimeError):
    pass


def sources(board: str = "sim") -> list[tuple[Path, Path]]:
    """(source .py, path of its .mpy relative to the build tree) for firmware + board + the
    board's extra modules."""
    out = [(p, p.relative_to(FIRMWARE_DIR).with_suffix(".mpy")) for p in sorted(FIRMWARE_DIR.rglob("*.py"))
           if not _no_code(p)]
    out.append((BOARDS_DIR / board / "board.py", Path("board.mpy")))
    # The board's own modules beside board.py (the simulator's `bluetooth` shim) are top-level
    # modules on the board, like the C modules they stand in for.
    for p in sorted((BOARDS_DIR / board).glob("*.py")):
        if p.name != "board.py":
            out.append((p, Path(p.stem + ".mpy")))
    return out


def _no_code(src: Path) -> bool:
    """A package __init__.py that only documents its package does not ship: MicroPython imports
    a directory without one as a namespace package, and an empty module would cost a module
    object and an interned path for nothing (docs/memory.md)."""
    return src.name == "__init__.py" and not ast.parse(src.read_text()).body


def compile_one(src: Path, dst: Path, name: str | None = None) -> None:
    """Compile src to dst. `name` is the source name recorded for tracebacks. The firmware
    interns it for good, so the build records exactly the module's own __file__ as the simulator
    and boards load it ("basalt/core/pump.mpy"): one interned name per module instead of two
    (docs/memory.md - each name counts toward the qstr-pool cliff)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [mpy_cross_binary(), "-O3", "-o", str(dst)]  # -O3: no line-number tables (~10 % less heap)
    if name:
        cmd += ["-s", name]
    r = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
    if r.returncode:
        raise CompileError(f"mpy-cross failed on {src}:\n{r.stderr}")


# Modules on the firmware tree that the pump never loads: the CGM codec's host and emulator side,
# CPython shims, the CGM emulator board's firmware, the radio stand-in's peripheral half.
_NOT_THE_PUMPS = ("basalt/cgm/cgms.mpy", "basalt/cgm/sfloat.mpy", "basalt/cgm/validity.mpy",
                  "basalt/cgm/conn.mpy", "basalt/lib/cpython.mpy", "cgm_emulator/", "bluetooth_p.mpy")
NAMES = "names.txt"


def _vuint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    while True:
        c = b[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i


def mpy_names(mpy: Path) -> list[str]:
    """The names (qstrs) a .mpy file interns when it loads: its qstr table (mpy v6: header, then
    the number of qstrs and of objects, then each qstr as len << 1 and its bytes, or as
    index << 1 | 1 for one of MicroPython's static names, which cost nothing)."""
    b = mpy.read_bytes()
    if b[:2] != b"M\x06":
        raise CompileError(f"{mpy}: not an mpy v6 file")
    n, i = _vuint(b, 4)
    _, i = _vuint(b, i)
    out = []
    for _ in range(n):
        v, i = _vuint(b, i)
        if not v & 1:
            out.append(b[i:i + (v >> 1)].decode())
            i += (v >> 1) + 1  # and its NUL
    return out


def write_names(out: Path, board: str) -> Path:
    """names.txt: every name the pump's modules can intern on this board - an upper bound of the
    names a running pump interns, but for the few it builds at run time (its command line).
    MicroPython allocates its qstr pools whole (the 640-name one is 7.2 KB), for good, when the
    names so far fill the ones before; tests/e2e/test_heap.py holds this count below the pool
    boot's names already need, so no pool is ever allocated in the middle of a command
    (docs/memory.md, "Names"). Module names are built at run time (basalt/lib/__init__.py), so
    each module's dotted name and last part are listed too."""
    hal = _board_hal(board).rsplit(".", 1)[-1]
    names: dict[str, None] = {}
    for mpy in sorted(out.rglob("*.mpy")):
        rel = mpy.relative_to(out).as_posix()
        if any(rel.startswith(x) for x in _NOT_THE_PUMPS):
            continue
        if rel.startswith("basalt/hal/") and not (mpy.stem.split("_")[0] == hal or (
                mpy.stem == "board_common" and hal != "sim")):
            continue  # another board's HAL
        dotted = rel[:-4].replace("/", ".").removesuffix(".__init__")  # a package's name is its folder's
        for name in [*mpy_names(mpy), dotted, dotted.rsplit(".", 1)[-1]]:
            names.setdefault(name)
    dst = out / NAMES
    text = "".join(n + "\n" for n in names)
    if not dst.exists() or dst.read_text() != text:
        tmp = out / f"{NAMES}.{os.getpid()}"  # parallel builds (the power-cut campaign): never a torn file
        tmp.write_text(text)
        os.replace(tmp, dst)
    return dst


def _board_hal(board: str) -> str:
    """board.py's HAL constant, read without importing it."""
    for node in ast.parse((BOARDS_DIR / board / "board.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HAL" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"boards/{board}/board.py has no HAL = '...'")


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
            stale.unlink(missing_ok=True)  # parallel builds (the power-cut campaign) race here
    write_names(out, board)
    return out


def main() -> None:
    board = sys.argv[1] if len(sys.argv) > 1 else "sim"
    out = build(board)
    total = sum(p.stat().st_size for p in out.rglob("*.mpy"))
    print(f"{out}: {len(list(out.rglob('*.mpy')))} modules, {total} bytes of bytecode")


if __name__ == "__main__":
    main()
