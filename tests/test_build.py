"""Every firmware and board file compiles with mpy-cross (the .mpy a board and the simulator run)."""
import pytest

from hil.build import CompileError, build, compile_one, sources
from hil.paths import BOARDS_DIR, FIRMWARE_DIR

ALL = sorted(FIRMWARE_DIR.rglob("*.py")) + sorted(BOARDS_DIR.glob("*/board.py"))


@pytest.mark.parametrize("src", ALL, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_compiles_with_mpy_cross(src, tmp_path):
    out = tmp_path / "x.mpy"
    compile_one(src, out)
    assert out.read_bytes()[:2] == b"M\x06"  # .mpy version 6 header, as the Unix port loads


def test_build_tree_mirrors_sources():
    out = build("sim")
    for _src, rel in sources("sim"):
        assert (out / rel).exists(), rel


def test_compile_error_is_reported(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    with pytest.raises(CompileError, match="bad.py"):
        compile_one(bad, tmp_path / "bad.mpy")
