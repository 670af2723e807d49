"""Shared pytest set-up.

- MicroPython unit tests: every tests/mpy/test_*.py runs under the real `micropython` binary
  (one process per file) and each of its test_* functions becomes a pytest item.
- `--port URL` points the `pump` fixture at a real board instead of the simulator.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

from hil.paths import FIRMWARE_DIR, micropython_binary

MPY_DIR = Path(__file__).parent / "mpy"
MPY_HEAP = os.environ.get("BASALT_TEST_HEAP", "256K")


def pytest_addoption(parser):
    parser.addoption("--port", default=None,
                     help="pyserial URL of a real pump board (e.g. /dev/ttyUSB0, socket://h:p); default: simulator")
    parser.addoption("--micropython", default=None, help="micropython binary for the simulator (default: venv's)")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    # tests/mpy/test_*.py are MicroPython modules: collect them for the micropython runner,
    # never import them into CPython.
    if module_path.parent == MPY_DIR:
        return MpyFile.from_parent(parent, path=module_path)
    return None


class MpyFile(pytest.File):
    _results = None

    def collect(self):
        for name in re.findall(r"^def (test_\w+)\(", self.path.read_text(), re.M):
            yield MpyItem.from_parent(self, name=name)

    def results(self):
        if self._results is None:
            env = dict(os.environ, MICROPYPATH=f"{MPY_DIR}:{FIRMWARE_DIR}:.frozen")
            proc = subprocess.run(
                [micropython_binary(), "-X", f"heapsize={MPY_HEAP}", str(MPY_DIR / "mpyunit.py"), self.path.stem],
                capture_output=True, text=True, env=env, timeout=600)
            res, cur, buf = {}, None, []
            for line in proc.stdout.splitlines():
                if line.startswith("PASS "):
                    res[line[5:].strip()] = None
                elif line.startswith("FAIL "):
                    cur, buf = line[5:].split(":", 1)[0], [line]
                elif line.startswith("END ") and cur:
                    res[cur] = "\n".join(buf)
                    cur = None
                elif cur:
                    buf.append(line)
            if "DONE" not in proc.stdout:
                res["__crash__"] = f"micropython exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            self._results = res
        return self._results


class MpyItem(pytest.Item):
    def runtest(self):
        res = self.parent.results()
        if "__crash__" in res and self.name not in res:
            raise MpyTestFailure(res["__crash__"])
        if self.name not in res:
            raise MpyTestFailure(f"{self.name} did not run")
        if res[self.name] is not None:
            raise MpyTestFailure(res[self.name])

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MpyTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"[micropython] {self.name}"


class MpyTestFailure(Exception):
    pass


@pytest.fixture
def dut(request):
    """A connected pump: the simulator (lockstep, 64 KB heap) or, with --port URL, a real board."""
    from hil.dut import Dut

    url = request.config.getoption("--port")
    d = Dut.board(url) if url else Dut.simulated(micropython=request.config.getoption("--micropython"))
    yield d
    d.close()


@pytest.fixture
def sim_dut(dut):
    """A pump whose time the test owns; tests that need virtual time skip on a real board."""
    if not dut.is_sim:
        pytest.skip("needs the simulator's virtual time and plant")
    return dut


@pytest.fixture
def no_pump(monkeypatch):
    """Fail the test if anything tries to start a pump (the scenario tests of invalid files)."""
    from hil.scenario import cli

    def boom(*a, **kw):
        raise AssertionError("a pump was started for an invalid file")

    monkeypatch.setattr(cli, "SimTarget", boom)
    monkeypatch.setattr(cli, "BoardTarget", boom)
