"""History record types are one table on the host (host/render.py RECORD_NAMES) and private
constants in each firmware module that writes or reads one (a public constant would cost the
pump's heap an interned name; core/history.py lists them as a comment). Here they must agree, and
the firmware's alarm list must be the host's."""
import ast
import re

from hil.paths import FIRMWARE_DIR
from host.render import ALARM_NAMES, RECORD_CODE

CONST = re.compile(r"^_([A-Z][A-Z_]*) = const\((\d+)\)", re.M)


def test_every_record_type_constant_in_the_firmware_matches_the_host_table():
    seen: dict[str, set[tuple[str, int]]] = {}
    for path in sorted((FIRMWARE_DIR / "basalt").rglob("*.py")):
        for name, value in CONST.findall(path.read_text()):
            if name.lower() in RECORD_CODE:
                seen.setdefault(name.lower(), set()).add((path.name, int(value)))
    wrong = {n: v for n, v in seen.items() if any(code != RECORD_CODE[n] for _, code in v)}
    assert not wrong, wrong
    assert set(seen) == set(RECORD_CODE)  # every type is written or read somewhere, by that name


def test_the_comment_table_in_history_lists_every_type():
    text = (FIRMWARE_DIR / "basalt" / "core" / "history.py").read_text()
    for name, code in RECORD_CODE.items():
        assert re.search(rf"\b{code}\b[ ,]+{name}\b", text), (code, name)


def test_alarm_names_agree():
    tree = ast.parse((FIRMWARE_DIR / "basalt" / "core" / "pump.py").read_text())
    alarms = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ALARMS")
    assert alarms == ALARM_NAMES


def test_a_private_constant_copied_into_several_modules_has_one_value():
    """Overlays copy the few constants they share (a public one would cost a name in the heap):
    the copies must agree (e.g. _PRIME_MAX_STEPS in cmd/service.py and cmd/reservoir.py)."""
    values: dict[str, set[tuple[str, str]]] = {}
    for path in sorted((FIRMWARE_DIR / "basalt").rglob("*.py")):
        for name, value in re.findall(r"^_([A-Z][A-Z0-9_]*) = const\((.+?)\)(?:  #.*)?$", path.read_text(), re.M):
            values.setdefault(name, set()).add((str(path.relative_to(FIRMWARE_DIR)), value.strip()))
    for name in ("PRIME_MAX_STEPS",):  # the copies (the same name elsewhere may mean another thing)
        assert len({val for _, val in values.get(name, ())}) <= 1, values[name]
    assert len(values["PRIME_MAX_STEPS"]) == 2
    # the CGM link's state slots (core/cgm.py CgmLink.v), copied by the modules that read them
    link = ("basalt/core/cgm.py", "basalt/cgm/client.py", "basalt/cmd/cgm_cmd.py", "basalt/cmd/settings.py",
            "basalt/cmd/_save.py")
    for name, copies in values.items():
        vals = {val for path, val in copies if path in link}
        assert len(vals) <= 1, (name, sorted(c for c in copies if c[0] in link))
