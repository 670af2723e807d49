"""Board definitions, the real-board HALs and deployment - all checked without a board.

- every boards/<name>/board.py has the constants the firmware needs and the reference mechanics
- each board's HAL module (and board.py) compiles with mpy-cross
- the board HALs type-check against the MicroPython port stubs (mypy), when those are installed
- the board HAL objects expose exactly the simulator HAL's methods (compared by parsing both)
- the core never imports hardware modules; only basalt/hal/* and boards may
- the ESP32 RMT pulse pattern is a correct train (run in CPython against fake esp32/machine)
- `python -m hil.rig.deploy --dry-run` prints the mpremote commands and runs nothing
"""
from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from hil.paths import BOARDS_DIR, BUILD_DIR, FIRMWARE_DIR, ROOT, mpy_cross_binary
from hil.rig import deploy

HAL_DIR = FIRMWARE_DIR / "basalt" / "hal"
BOARDS = sorted(p.parent.name for p in BOARDS_DIR.glob("*/board.py"))
REAL_BOARDS = [b for b in BOARDS if b != "sim"]
REQUIRED_PINS = {"step", "dir", "enable", "buzzer", "led", "pressure_adc", "battery_adc", "reservoir_switch"}
HARDWARE_MODULES = {"machine", "time", "socket", "select", "bluetooth", "esp32", "rp2", "network"}

# boards/README.md: the reference mechanism every board shares.
BORE_MM2 = 40
PITCH_UM = 250  # lead screw pitch per revolution
STEPS_PER_REV = 200
RESERVOIR_NL = 3_000_000  # 3 mL

# The port stubs to type-check each HAL against (mypy + micropython-<port>-stubs).
STUB_PINS = {"esp32": "micropython-esp32-stubs==1.29.0.post1", "rp2": "micropython-rp2-stubs==1.29.0.post1"}
STDLIB_STUBS = "micropython-stdlib-stubs==1.29.0.post2"


def load_board(name: str) -> dict:
    src = (BOARDS_DIR / name / "board.py").read_text()
    ns: dict = {}
    exec(compile(src, f"boards/{name}/board.py", "exec"), ns)  # constants only: no imports to run
    return ns


def hal_path(module: str) -> Path:
    assert module.startswith("basalt.hal."), module
    return HAL_DIR / (module.rsplit(".", 1)[1] + ".py")


# ---- board definitions ------------------------------------------------------------------------
@pytest.mark.parametrize("name", BOARDS)
def test_board_constants(name):
    b = load_board(name)
    assert b["NAME"] == name
    assert hal_path(b["HAL"]).exists(), f"{b['HAL']} has no module under firmware/basalt/hal"
    for k in ("NL_PER_STEP", "RESERVOIR_CAPACITY_STEPS", "MOTOR_MAX_HZ", "TICK_MS"):
        assert type(b[k]) is int and b[k] > 0, k
    # The reference mechanics, derived rather than copied: one step displaces bore x pitch / steps.
    nl_per_step = BORE_MM2 * PITCH_UM // STEPS_PER_REV  # mm^2 * um = nL
    assert BORE_MM2 * PITCH_UM % STEPS_PER_REV == 0
    assert b["NL_PER_STEP"] == nl_per_step == 50
    assert b["RESERVOIR_CAPACITY_STEPS"] == RESERVOIR_NL // nl_per_step == 60000
    assert b["TICK_MS"] == 1000
    assert b["MOTOR_MAX_HZ"] <= 1000, "a syringe pump's driver never needs more"


def test_board_imports_nothing():
    for name in BOARDS:
        tree = ast.parse((BOARDS_DIR / name / "board.py").read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"boards/{name}/board.py must hold constants only"


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_real_board_pins(name):
    b = load_board(name)
    pins = b["PINS"]
    assert REQUIRED_PINS <= set(pins), f"missing pins: {REQUIRED_PINS - set(pins)}"
    values = list(pins.values())
    assert len(values) == len(set(values)), f"a pin is used twice: {pins}"
    assert b.get("DIR_DELIVER_LEVEL", 1) in (0, 1)
    assert b["HAL"] != "basalt.hal.sim"


def test_esp32_pins_are_safe():
    pins = load_board("esp32")["PINS"]
    strapping_or_flash = {0, 2, 5, 12, 15, 6, 7, 8, 9, 10, 11, 1, 3}
    assert not strapping_or_flash & set(pins.values())
    for k in ("pressure_adc", "battery_adc"):
        assert 32 <= pins[k] <= 39, f"{k} must be on ADC1 (ADC2 is unusable while BLE runs)"
    for k in ("step", "dir", "enable", "buzzer", "led", "step_sense"):
        assert pins[k] < 34, f"{k}: GPIO34-39 are input-only"


def test_pico_w_pins_are_safe():
    pins = load_board("pico_w")["PINS"]
    gp = {v for v in pins.values() if isinstance(v, int)}
    assert not gp & {23, 24, 25, 29}, "GP23-25/29 belong to the Pico W's wireless chip"
    for k in ("pressure_adc", "battery_adc"):
        assert pins[k] in (26, 27, 28), f"{k} must be an ADC pin (GP26-28)"


# ---- compilation ------------------------------------------------------------------------------
def _mpy_cross(src: Path, tmp_path: Path) -> None:
    r = subprocess.run([mpy_cross_binary(), "-o", str(tmp_path / (src.stem + ".mpy")), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"mpy-cross failed on {src}:\n{r.stderr}"


@pytest.mark.parametrize("name", BOARDS)
def test_board_and_hal_compile(name, tmp_path):
    b = load_board(name)
    _mpy_cross(BOARDS_DIR / name / "board.py", tmp_path)
    _mpy_cross(hal_path(b["HAL"]), tmp_path)
    if name != "sim":
        _mpy_cross(HAL_DIR / "board_common.py", tmp_path)


# ---- import boundary --------------------------------------------------------------------------
def _imported_roots(path: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.add(n.module.split(".")[0])
    return out


def test_core_free_of_hardware_imports():
    offenders = {}
    for p in sorted((FIRMWARE_DIR / "basalt").rglob("*.py")):
        if HAL_DIR in p.parents:
            continue
        bad = _imported_roots(p) & HARDWARE_MODULES
        if bad:
            offenders[str(p.relative_to(FIRMWARE_DIR))] = sorted(bad)
    assert not offenders, f"only basalt/hal/* may import hardware modules: {offenders}"


# ---- the same HAL contract as the simulator -------------------------------------------------------
# The contracts documented in firmware/basalt/hal/__init__.py: role -> public methods.
CONTRACT = {
    "clock": {"now_ms", "wait"},
    "motor": {"start", "count", "busy", "stop"},
    "console": {"readinto", "write"},
    "storage": {"read", "write_atomic", "append", "readinto", "listdir", "remove"},
    "annunciator": {"buzzer", "led"},
}
# role -> (class in the board HAL, module holding it); storage is basalt.lib.filestore.FileStore
BOARD_CLASSES = {
    "clock": ("TickClock", "board_common"),
    "console": ("Console", "board_common"),
    "annunciator": ("Annunciator", "board_common"),
    "motor": ("Motor", None),  # one per board HAL
}


def _classes(path: Path) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}


def _public_methods(classes: dict[str, ast.ClassDef], name: str) -> set[str]:
    cls = classes[name]
    out = {f.name for f in cls.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
    for base in cls.bases:  # bases defined in the same module
        if isinstance(base, ast.Name) and base.id in classes:
            out |= _public_methods(classes, base.id)
    return out


def _make_hal_args(path: Path) -> list[str]:
    for n in ast.parse(path.read_text()).body:
        if isinstance(n, ast.FunctionDef) and n.name == "make_hal":
            return [a.arg for a in n.args.args]
    raise AssertionError(f"{path.name} has no make_hal")


def test_documented_contract_is_the_one_checked():
    doc = (HAL_DIR / "__init__.py").read_text()
    for role, methods in CONTRACT.items():
        assert f"# {role}" in doc, role
        for m in methods:
            assert f"{m}(" in doc, (role, m)


def test_sim_hal_implements_every_role():
    # The simulated board is one object playing every role (clock = motor = console = annunciator).
    sim = _public_methods(_classes(HAL_DIR / "sim.py"), "Hal")
    for role in ("clock", "motor", "console", "annunciator"):
        assert CONTRACT[role] <= sim, (role, CONTRACT[role] - sim)
    store = _public_methods(_classes(FIRMWARE_DIR / "basalt" / "lib" / "filestore.py"), "FileStore")
    assert store == CONTRACT["storage"]


@pytest.mark.parametrize("hal", ["esp32", "rp2"])
def test_hal_matches_sim_contract(hal):
    common = _classes(HAL_DIR / "board_common.py")
    own = _classes(HAL_DIR / f"{hal}.py")
    for role, (board_name, where) in BOARD_CLASSES.items():
        board = _public_methods(common if where == "board_common" else own, board_name)
        assert board == CONTRACT[role], f"{hal} {role}: {sorted(board)} != {sorted(CONTRACT[role])}"
    assert "Storage = FileStore" in (HAL_DIR / "board_common.py").read_text()
    assert _make_hal_args(HAL_DIR / f"{hal}.py") == _make_hal_args(HAL_DIR / "sim.py") == ["board", "argv"]
    # The board Hal object carries the five role objects the core is handed.
    init = next(f for f in common["Hal"].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    board_attrs = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
                   if isinstance(t, ast.Attribute)}
    assert set(CONTRACT) <= board_attrs


# ---- type check against the port stubs -----------------------------------------------------------
def _dist_files_intact(dist: importlib.metadata.Distribution) -> bool:
    """True when every file of dist on disk is the one it installed (another stub package
    installed into the same site-packages overwrites machine.pyi & co.)."""
    for f in dist.files or ():
        if f.hash is None or f.hash.mode != "sha256":
            continue
        digest = hashlib.sha256(Path(f.locate()).read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != f.hash.value:
            return False
    return True


def _stub_dir(port: str, tmp_path: Path) -> Path:
    """A directory holding micropython-<port>-stubs + micropython-stdlib-stubs, laid out as one
    tree: build/stubs/<port> (see docs/boards.md) or $BASALT_STUBS_<PORT>, else the installed
    distributions when they are intact."""
    for cand in (os.environ.get(f"BASALT_STUBS_{port.upper()}"), BUILD_DIR / "stubs" / port):
        if cand and (Path(cand) / "machine.pyi").exists() and (Path(cand) / "stdlib" / "VERSIONS").exists():
            return Path(cand)
    how = (f"pip install --no-deps --target build/stubs/{port} {STUB_PINS[port]} {STDLIB_STUBS}")
    dists = []
    for name in (STUB_PINS[port].split("==")[0], STDLIB_STUBS.split("==")[0]):
        try:
            dists.append(importlib.metadata.distribution(name))
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} not installed; for the type check run: {how}")
    for d in dists:
        if not _dist_files_intact(d):
            pytest.skip(f"{d.metadata['Name']} was overwritten by another port's stubs in site-packages "
                        f"(they share machine.pyi); install each port apart: {how}")
    out = tmp_path / f"stubs-{port}"
    for d in dists:
        for f in d.files or ():
            if ".dist-info" in str(f) or not str(f).endswith((".pyi", "VERSIONS")):
                continue
            dst = out / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.locate(), dst)
    return out


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_hal_type_checks_against_port_stubs(port, tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy not installed (pin: mypy==2.4.1)")
    stubs = _stub_dir(port, tmp_path)
    cfg = tmp_path / "mypy.ini"
    # The stubs themselves do not pass mypy cleanly: report errors in Basalt's modules only.
    cfg.write_text("[mypy]\nignore_errors = True\n[mypy-basalt.*]\nignore_errors = False\n")
    files = ["basalt/hal/board_common.py", f"basalt/hal/{port}.py"]
    env = dict(os.environ, MYPYPATH=str(stubs))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--check-untyped-defs", "--no-site-packages",
         "--custom-typeshed-dir", str(stubs), "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=FIRMWARE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Success" in r.stdout, f"mypy ({port} stubs):\n{r.stdout}\n{r.stderr}"


# ---- ESP32 RMT pattern, in CPython with fake hardware modules --------------------------------
class _Fake:
    def __init__(self, *a, **kw):
        self.calls = []

    def __getattr__(self, name):
        def call(*a, **kw):
            self.calls.append((name, a))
            return 0
        return call


@pytest.fixture
def esp32_hal(monkeypatch):
    fake_esp32 = types.ModuleType("esp32")

    class RMT(_Fake):
        PULSE_MAX = 32767

        def active(self, *a):
            return False

    class PCNT(_Fake):
        INCREMENT, IGNORE = 1, 0

    fake_esp32.RMT, fake_esp32.PCNT = RMT, PCNT
    machine = types.ModuleType("machine")
    machine.Pin = type("Pin", (_Fake,), {"OUT": 1, "IN": 0})
    machine.PWM = machine.Timer = machine.ADC = machine.WDT = _Fake
    mp = types.ModuleType("micropython")
    mp.const = lambda v: v
    for name, mod in (("esp32", fake_esp32), ("machine", machine), ("micropython", mp)):
        monkeypatch.setitem(sys.modules, name, mod)
    now = [0]  # MicroPython's tick functions on CPython's time module, on a hand-moved clock
    monkeypatch.setattr(time, "ticks_ms", lambda: now[0], raising=False)
    monkeypatch.setattr(time, "ticks_add", lambda t, d: t + d, raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: a - b, raising=False)
    for name in ("basalt.hal.esp32", "basalt.hal.board_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import basalt.hal.esp32 as hal
    hal.now = now
    yield hal
    for name in ("basalt.hal.esp32", "basalt.hal.board_common"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("n,hz", [(1, 1), (2, 2), (7, 7), (30, 30), (31, 31), (400, 400), (5, 400)])
def test_esp32_rmt_pattern(esp32_hal, n, hz):
    m = esp32_hal.Motor(load_board("esp32")["PINS"])
    m._pattern(n, hz)
    d, lv = m.durations, m.levels
    assert len(d) == len(lv)
    assert all(1 <= x <= 32767 for x in d), "every RMT item must fit PULSE_MAX"
    rises = [sum(d[:i]) for i in range(len(lv)) if lv[i] and (i == 0 or not lv[i - 1])]
    assert len(rises) == n
    period = 1_000_000 // hz
    assert all(b - a == period for a, b in zip(rises, rises[1:], strict=False))
    assert sum(d) <= 1_000_000 * n // hz, "the train must fit inside its tick"
    assert lv[-1] is True, "no trailing low: the line idles low when the train ends"


def test_esp32_motor_reads_pcnt(esp32_hal):
    """The fake RMT is never active: the count is closed once complete or once the train's
    nominal length (4 periods of 200 ms after the first step) has passed."""
    m = esp32_hal.Motor(load_board("esp32")["PINS"])
    edges = [5]
    m.pcnt.value = lambda *a: edges[0]
    m.start(5, 5, 1)
    assert m.busy() is False and m.count() == 5
    edges[0] = 3
    m.start(5, 5, 1)
    assert m.busy() is True and m.count() == 3  # RMT idle but not all edges yet: still open
    esp32_hal.now[0] += 801
    assert m.busy() is True
    esp32_hal.now[0] += 1
    assert m.busy() is False and m.count() == 3 and m.stop() == 3


# ---- deploy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REAL_BOARDS)
def test_deploy_dry_run(name, capsys, monkeypatch):
    monkeypatch.setattr(deploy, "subprocess", None)  # a dry run must not run anything
    assert deploy.main(["--board", name, "--port", "/dev/ttyFAKE0", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mp = deploy.mpremote_binary()
    staged = BUILD_DIR / "deploy" / name
    assert lines == [
        f"{mp} connect /dev/ttyFAKE0 fs rm -r :basalt",
        f"{mp} connect /dev/ttyFAKE0 fs cp -r {staged}/basalt {staged}/board.mpy {staged}/main.py :",
        f"{mp} connect /dev/ttyFAKE0 reset",
    ]
    # The staged tree: bytecode, this board's HAL only, main.py as source (boards run main.py).
    hal = load_board(name)["HAL"].rsplit(".", 1)[1]
    assert sorted(p.name for p in (staged / "basalt" / "hal").iterdir()) == sorted(
        ["board_common.mpy", f"{hal}.mpy"])  # (hal/__init__.py only documents: a namespace package)
    assert (staged / "main.py").read_text() == (FIRMWARE_DIR / "main.py").read_text()
    assert (staged / "board.mpy").exists() and not (staged / "main.mpy").exists()
    assert [p.name for p in staged.rglob("*.py")] == ["main.py"], "only main.py ships as source"


def test_deploy_runs_mpremote(tmp_path, monkeypatch, capsys):
    """With a stand-in mpremote: a failing `rm` (fresh board) is tolerated, the rest must pass."""
    log = tmp_path / "calls"
    fake = tmp_path / "mpremote"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    "sys.exit(1 if 'rm' in sys.argv else 0)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(deploy, "mpremote_binary", lambda: str(fake))
    assert deploy.main(["--board", "esp32", "--port", "/dev/ttyFAKE1"]) == 0
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    assert calls[0] == "connect /dev/ttyFAKE1 fs rm -r :basalt"
    assert calls[1].startswith("connect /dev/ttyFAKE1 fs cp -r ") and calls[1].endswith(" :")
    assert calls[2] == "connect /dev/ttyFAKE1 reset"
    assert "deployed esp32 to /dev/ttyFAKE1" in capsys.readouterr().out


def test_deploy_cli_help():
    r = subprocess.run([sys.executable, "-m", "hil.rig.deploy", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--dry-run" in r.stdout and "--port" in r.stdout
