"""Scenario files: parse and validate a whole YAML scenario before anything runs.

Everything a runner needs is worked out here - absolute virtual times, protocol commands with
their integer arguments, comparisons in exact decimals - so a file that loads is a file that
can run, and a file that cannot run is refused with the step, the field and the line at fault.
docs/scenarios.md is the format reference.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from host.render import ALARM_NAMES
from host.units import LIMITS, UnitError, parse_hhmm, parse_segments, to_mu

MAX_HOURS = 999  # a scenario longer than ~41 days is a typo

# The pump's refusal codes (raised as firmware/basalt/core Refused) a scenario may expect.
REFUSAL_CODES = ("limit", "range", "state", "busy", "reservoir", "bad_arg", "storage", "duplicate")

# Status expectations: friendly name -> (how to read it from a status reply, unit label or kind).
STATUS_FIELDS = {
    "state": "text",
    "reason": "text",
    "bolus_running": "bool",
    "basal_rate": "U/h",
    "reservoir": "U",
    "delivered_basal": "U",
    "delivered_bolus": "U",
    "delivered_total": "U",
    "profile": "text",
    "reservoir_state": "text",
    "prime": "U",
    "plunger": "U",
    "last_hour": "U",
    "last_day": "U",
    "limit_hold": "bool",
    "extended_running": "bool",
    "temp_basal_running": "bool",
}
# Status sub-objects: true/false (running or not) or a mapping of their fields.
STATUS_OBJECTS = ("temp_basal", "extended", "normal_bolus")
PLANT_CHECKS = ("plant_delivered", "bolus_speed", "pump_matches_plant")
OTHER_CHECKS = ("clock", "event", "no_event", "limits", "basal_schedule", "profiles", "history", "no_history", "reply",
                "calc", "cgm")
CHECK_KEYS = tuple(STATUS_FIELDS) + STATUS_OBJECTS + PLANT_CHECKS + OTHER_CHECKS
PLANT_KINDS = ("therapy", "service", "all")

ACTION_KEYS = ("bolus", "cancel_bolus", "suspend", "resume", "basal", "limits", "temp_basal", "cancel_temp",
               "profile", "select_profile", "time", "calc_set", "calc", "rewind", "insert", "prime", "fill",
               "inject", "cgm_pair", "cgm_set")
STEP_KEYS = ("at", "note", "expect_refused", "expect") + ACTION_KEYS
TOP_KEYS = ("name", "description", "pump", "cgm", "steps")
PUMP_KEYS = ("reservoir", "prime", "cannula", "basal", "profiles", "active_profile", "limits", "time", "state")
COMPARE_KEYS = ("equals", "approx", "tol", "min", "max")
DEFAULT_CLOCK = "2026-01-01T00:00"  # the pump's local time at scenario 00:00 unless pump.time says otherwise

# ---- CGM (docs/scenarios.md "CGM"; the pump's client: firmware/basalt/cmd/cgm.py) -------------
CGM_KEYS = ("sensor", "glucose", "noise", "seed", "pair", "low", "high", "loss_min")
DEFAULT_SENSOR = "C0:98:E5:49:00:01"
DEFAULT_GLUCOSE = 120  # mg/dL, steady, when the cgm block gives none
SECOND_SENSOR_GLUCOSE = 300  # mg/dL from `cgm_second_sensor` unless given: a value the pump must never show
# The pump's reasons for rejecting a reading (basalt/cgm/rx.py R_*, docs/cgms.md), by code;
# 0 is an accepted reading (counts[0]).
CGM_REASONS = ("ok", "malformed", "crc", "special", "error_code", "range", "session_stopped", "malfunction",
               "calibration", "annunciation", "no_session", "future", "stale", "duplicate", "not_monotonic")
CGM_LINK_STATES = ("idle", "scanning", "connecting", "discovering", "up")  # cmd/cgm.py STATES
# `cgm_status:` -> the sensor's annunciation bit (hil/ble/sensor.py A_*)
CGM_STATUS_BITS = {"session_stopped": 1 << 0, "malfunction": 1 << 3, "calibration": 1 << 11}
CGM_INJECT = ("cgm_link_loss", "cgm_drop", "cgm_corrupt", "cgm_duplicate", "cgm_glucose", "cgm_status",
              "cgm_session_stop", "cgm_second_sensor")
# `expect: cgm:` fields -> (the `cgm` reply's key, unit); readings / rejected / alarm are special
TRENDU = "x0.1 mg/dL/min"  # the pump's trend: tenths of mg/dL per minute
CGM_FIELDS = {"paired": ("paired", "text"), "link": ("link", "text"), "glucose": ("glucose_mgdl", "mg/dL"),
              "age_s": ("age_s", "s"), "trend": ("trend", TRENDU), "low": ("low_mgdl", "mg/dL"),
              "high": ("high_mgdl", "mg/dL"), "loss_min": ("loss_min", "min"), "events_lost": ("events_lost", "count")}
CGM_ALIASES = {"glucose_mgdl": "glucose", "low_mgdl": "low", "high_mgdl": "high"}  # the reply's own names work too
CGM_CHECKS = tuple(CGM_FIELDS) + ("readings", "rejected", "alarm", "no_alarm")
CGM_ALARMS = tuple(a for a in ALARM_NAMES if a)
WHOLE_UNITS = ("mg/dL", "s", "min", TRENDU)  # shown without decimals

# History record types (firmware/basalt/core/history.py) and their fields a, b: (name, kind)
# where kind is "U" (steps, compared in units), "int", or a tuple of words indexed by the value.
HISTORY_TYPES = {
    "profile_select": (1, ("profile", "int"), None),
    "profile_set": (2, ("profile", "int"), ("daily", "U")),
    "temp_start": (3, ("percent", "int"), ("minutes", "int")),
    "temp_end": (4, ("delivered", "U"), ("how", ("", "ended", "cancelled"))),
    "bolus_request": (5, ("normal", "U"), ("extended", "U")),
    "bolus_done": (6, ("delivered", "U"), ("kind", ("", "normal", "extended"))),
    "bolus_cancel": (7, ("delivered", "U"), ("requested", "U±")),
    "limit_refused": (8, ("limit", ("", "max_hour_mU", "max_day_mU", "max_bolus_mU", "max_basal_mUh",
                                    "max_iob_mU")), ("amount", "int")),
    "prime": (9, ("amount", "U"), ("what", ("", "tubing", "cannula"))),
    "rewind": (10, ("retracted", "U"), None),
    "suspend": (11, ("reason", ("boot", "user", "reservoir_empty", "fault", "reservoir")), None),
    "resume": (12, None, None),
    "alarm": (13, ("alarm", ALARM_NAMES), None),
    "reservoir": (14, ("fill", "U"), None),
    "time_set": (15, ("local", "clock"), ("previous", "clock")),
    "limit_hold": (16, ("withheld", "U"), None),
    "cgm": (22, ("glucose", "int"), ("offset", "int")),  # a = mg/dL, b = the sensor's time offset (min)
    "cgm_rejected": (23, ("reason", CGM_REASONS), ("offset", "int")),  # a = reason code, b = time offset
}


# ---- errors -------------------------------------------------------------------------------------
class ScenarioError(ValueError):
    """An invalid scenario file. str() names the file, line, step and field."""

    def __init__(self, path: str, msg: str, line: int | None = None, step: int | None = None,
                 at: str | None = None, fld: str | None = None):
        self.path, self.msg, self.line, self.step, self.at, self.field = path, msg, line, step, at, fld
        where = path + (f":{line}" if line else "")
        parts = []
        if step is not None:
            parts.append(f"step {step}" + (f" (at {at})" if at else ""))
        if fld:
            parts.append(f"field '{fld}'")
        super().__init__(f"{where}: " + (", ".join(parts) + ": " if parts else "") + msg)


class _Bad(ValueError):
    """Raised by the small parsers below; turned into a ScenarioError with the location added."""

    def __init__(self, msg: str, fld: str | None = None):
        super().__init__(msg)
        self.field = fld


# ---- YAML without surprises ---------------------------------------------------------------------
# PyYAML follows YAML 1.1, where an unquoted 12:30 is the base-60 integer 750 and 1.1 is a binary
# float. Here only plain decimal integers, booleans and null are resolved; everything else (times,
# decimals) stays a string and is parsed exactly below.
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in (_INT, _FLOAT)]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))


def _lines(node: yaml.Node, path: str) -> dict:
    """Line numbers for the top level and each step, and a check for duplicate keys anywhere."""
    info: dict[str, Any] = {"top": {}, "steps": [], "step_fields": [], "sub": {}}

    def walk(n: yaml.Node) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise ScenarioError(path, f"duplicate key '{key}' (first on line {seen[key]})",
                                        line=k.start_mark.line + 1)
                if key is not None:
                    seen[key] = k.start_mark.line + 1
                walk(v)
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                walk(item)

    walk(node)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                info["top"][k.value] = k.start_mark.line + 1
                if isinstance(v, yaml.MappingNode):  # pump:, cgm: - the line of each of their keys
                    info["sub"][k.value] = {fk.value: fk.start_mark.line + 1 for fk, _ in v.value
                                            if isinstance(fk, yaml.ScalarNode)}
            if getattr(k, "value", None) == "steps" and isinstance(v, yaml.SequenceNode):
                for item in v.value:
                    info["steps"].append(item.start_mark.line + 1)
                    fields = {}
                    if isinstance(item, yaml.MappingNode):
                        for fk, _fv in item.value:
                            if isinstance(fk, yaml.ScalarNode):
                                fields[fk.value] = fk.start_mark.line + 1
                    info["step_fields"].append(fields)
    return info


# ---- values -------------------------------------------------------------------------------------
def dec(value: Any, what: str, negative: bool = False) -> Decimal:
    """An exact decimal from a YAML scalar (int or string); floats never get here."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Bad(f"{what} must be a number, got {_show(value)}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Bad(f"{what} {_show(value)} is not a number") from None
    if not d.is_finite():
        raise _Bad(f"{what} {_show(value)} is not a finite number")
    if d < 0 and not negative:
        raise _Bad(f"{what} {_show(value)} must not be negative")
    return d


def milli(value: Any, what: str) -> int:
    """Units (or U/h, U/min) -> the protocol's milli-integers, exactly."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Bad(f"{what} must be a number, got {_show(value)}")
    try:
        return to_mu(value, what)
    except UnitError as e:
        raise _Bad(str(e)) from None


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    return repr(value)


def fmt_dec(d: Decimal, places: int = 3) -> str:
    return f"{d:.{places}f}"


# ---- time ---------------------------------------------------------------------------------------
_ABS = re.compile(r"^(\d{1,3}):([0-5]\d)(?::([0-5]\d))?$")
_REL_CLOCK = re.compile(r"^\+(?:(\d+):)?(\d+):([0-5]\d)$")
_REL_UNITS = re.compile(r"^\+(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_abs(text: Any, what: str = "time") -> int:
    """'HH:MM' or 'HH:MM:SS' since the start of the scenario -> ms. Hours may pass 24."""
    m = _ABS.match(text) if isinstance(text, str) else None
    if not m:
        raise _Bad(f"{what} {_show(text)} is not HH:MM or HH:MM:SS (virtual time since the start; quote it)")
    h, mi, s = int(m[1]), int(m[2]), int(m[3] or 0)
    if h > MAX_HOURS:
        raise _Bad(f"{what} {text!r} is beyond {MAX_HOURS} hours")
    return ((h * 60 + mi) * 60 + s) * 1000


def parse_time(text: Any, prev_ms: int, what: str = "at") -> int:
    """Absolute ('06:30', '24:00', '01:02:03') or relative to prev_ms ('+30s', '+1h30m', '+05:00')."""
    if isinstance(text, str) and text.startswith("+"):
        m = _REL_CLOCK.match(text)
        if m:
            h = int(m[1]) if m[1] is not None else 0
            return prev_ms + ((h * 60 + int(m[2])) * 60 + int(m[3])) * 1000
        m = _REL_UNITS.match(text)
        if m and text != "+":
            h, mi, s = (int(g or 0) for g in m.groups())
            return prev_ms + ((h * 60 + mi) * 60 + s) * 1000
        raise _Bad(f"relative time {text!r} is not +MM:SS, +HH:MM:SS or like +30s, +5m, +2h, +1h30m")
    return parse_abs(text, what)


def fmt_short(ms: int) -> str:
    """HH:MM when on the minute, else HH:MM:SS."""
    return fmt_time(ms)[:-3] if ms % 60_000 == 0 else fmt_time(ms)


def fmt_time(ms: int) -> str:
    s = ms // 1000
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" + (f".{ms % 1000:03d}" if ms % 1000 else "")


_CLOCK = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?$")
_EPOCH = datetime.datetime(2000, 1, 1)


def parse_clock(text: Any, what: str = "time") -> int:
    """'2026-11-22T07:00' (local, on the pump's clock) -> seconds since 2000-01-01 00:00."""
    m = _CLOCK.match(text) if isinstance(text, str) else None
    try:
        if not m:
            raise ValueError
        d = datetime.datetime(*(int(g or 0) for g in m.groups()))
    except ValueError:
        raise _Bad(f"{what} {_show(text)} is not a local date and time like \"2026-11-22T07:00\" (quote it)") from None
    s = int((d - _EPOCH).total_seconds())
    if not 0 <= s <= 100 * 366 * 86400:
        raise _Bad(f"{what} {text!r} is outside the pump's clock range (2000 to 2099)")
    return s


def fmt_clock(s: int) -> str:
    d = _EPOCH + datetime.timedelta(seconds=s)
    return d.strftime("%Y-%m-%dT%H:%M" + (":%S" if s % 60 else ""))


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: Any, what: str) -> int:
    """'10s', '1m30s', '2h' -> ms."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if not m or not text:
        raise _Bad(f"{what} {_show(text)} is a duration like 10s, 1m or 1m30s")
    h, mi, sec = (int(g or 0) for g in m.groups())
    return ((h * 60 + mi) * 60 + sec) * 1000


# ---- comparisons --------------------------------------------------------------------------------
@dataclass
class Compare:
    """exact (equals), approx +- tol, or a min/max range; on decimals in `unit`, or on text/bools."""

    kind: str  # "eq" | "approx" | "range"
    value: Any = None
    tol: Decimal | None = None
    lo: Decimal | None = None
    hi: Decimal | None = None
    unit: str = ""

    def test(self, actual: Any) -> bool:
        if self.kind == "eq":
            return actual == self.value
        if actual is None or isinstance(actual, bool | str):
            return False
        if self.kind == "approx":
            return abs(actual - self.value) <= self.tol
        return (self.lo is None or actual >= self.lo) and (self.hi is None or actual <= self.hi)

    def describe(self) -> str:
        u = f" {self.unit}" if self.unit and self.unit not in ("text", "bool", "count") else ""
        if self.kind == "eq":
            return show_value(self.value, self.unit)
        if self.kind == "approx":
            tol = f"{self.tol:f}" if self.unit in WHOLE_UNITS else fmt_dec(self.tol)
            return f"{show_value(self.value, self.unit)} ± {tol}{u}"
        if self.lo is not None and self.hi is not None:
            return f"{show_value(self.lo, self.unit)} .. {show_value(self.hi, self.unit)}"
        if self.lo is not None:
            return f">= {show_value(self.lo, self.unit)}"
        return f"<= {show_value(self.hi, self.unit)}"


def show_value(v: Any, unit: str) -> str:
    if unit == "clock" and isinstance(v, int):
        return fmt_clock(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        if unit == "count":
            return str(v)
        if unit in WHOLE_UNITS:
            return f"{v:f} {unit}"
        return f"{fmt_dec(v)} {unit}".rstrip()
    if v is None:
        return "none"
    return str(v)


def parse_compare(spec: Any, unit: str, what: str, allow_extra: tuple[str, ...] = ()) -> Compare:
    """A plain value (exact) or {equals: v} / {approx: v, tol: t} / {min: a, max: b}."""
    if isinstance(spec, dict):
        keys = [k for k in spec if k not in allow_extra]
        unknown = [k for k in keys if k not in COMPARE_KEYS]
        if unknown:
            raise _Bad(f"unknown comparison key {unknown[0]!r} (use equals, approx + tol, or min/max)", what)
        if "equals" in spec:
            if len(keys) != 1:
                raise _Bad("'equals' cannot be combined with approx, tol, min or max", what)
            return _exact(spec["equals"], unit, what)
        if "approx" in spec:
            if "tol" not in spec or set(keys) != {"approx", "tol"}:
                raise _Bad("'approx' needs 'tol' and nothing else, e.g. {approx: 24.0, tol: 0.005}", what)
            _numeric(unit, what)
            return Compare("approx", dec(spec["approx"], f"{what} approx", negative=True),
                           tol=dec(spec["tol"], f"{what} tol"), unit=unit)
        if "tol" in spec:
            raise _Bad("'tol' needs 'approx'", what)
        if "min" in spec or "max" in spec:
            _numeric(unit, what)
            lo = dec(spec["min"], f"{what} min", negative=True) if "min" in spec else None
            hi = dec(spec["max"], f"{what} max", negative=True) if "max" in spec else None
            if lo is not None and hi is not None and lo > hi:
                raise _Bad(f"min {lo} is above max {hi}", what)
            return Compare("range", lo=lo, hi=hi, unit=unit)
        raise _Bad("a comparison needs equals, approx + tol, or min/max", what)
    return _exact(spec, unit, what)


def _numeric(unit: str, what: str) -> None:
    if unit in ("text", "bool"):
        raise _Bad(f"{what} is {'a word' if unit == 'text' else 'true/false'}; only exact comparison applies", what)


def _exact(v: Any, unit: str, what: str) -> Compare:
    if unit == "text":
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise _Bad(f"expected a word, got {_show(v)}", what)
        return Compare("eq", str(v), unit=unit)
    if unit == "bool":
        if not isinstance(v, bool):
            raise _Bad(f"expected true or false, got {_show(v)}", what)
        return Compare("eq", v, unit=unit)
    if unit == "any":
        return Compare("eq", v, unit="")
    return Compare("eq", dec(v, what, negative=True), unit=unit)


# ---- the model ----------------------------------------------------------------------------------
@dataclass
class Action:
    key: str  # the scenario key: bolus, cancel_bolus, ...
    cmd: str  # the protocol command
    args: dict
    label: str  # how it reads in the summary: "bolus 2.500 U"


@dataclass
class Check:
    key: str  # the expectation key
    label: str  # "reservoir", "plant_delivered 00:00..24:00", ...
    cmp: Compare | None = None
    params: dict = field(default_factory=dict)


@dataclass
class Step:
    index: int  # 1-based
    line: int | None
    at: str  # as written
    t_ms: int
    note: str = ""
    action: Action | None = None
    expect_refused: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [self.action.label] if self.action else []
        if self.expect_refused:
            parts[-1] += f", expect refused ({self.expect_refused})"
        if self.note:
            parts.append(f"- {self.note}" if parts else self.note)
        return " ".join(parts)


@dataclass
class Setup:
    reservoir_mu: int | None = 300_000
    prime_ms: int = 0
    cannula_mu: int = 0
    segments: list[int] | None = None  # flat, as the protocol: [start_min, rate_mUh, ...]
    profiles: dict[str, list[int]] = field(default_factory=dict)
    active_profile: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    clock_s: int = 0  # the pump's local time at scenario 00:00, s since 2000-01-01 00:00
    clock_text: str = DEFAULT_CLOCK
    state: str = "running"


@dataclass
class Scenario:
    path: str
    name: str
    description: str
    setup: Setup
    steps: list[Step]
    cgm: CgmSetup | None = None  # a simulated CGM sensor beside the pump (the `cgm:` block)

    @property
    def end_ms(self) -> int:
        return self.steps[-1].t_ms if self.steps else 0


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ScenarioError(str(path), f"cannot read the file: {e.strerror or e}") from None
    return parse(text, str(path))


def parse(text: str, path: str = "<scenario>") -> Scenario:
    """A scenario from its text; `path` names it in errors, and a CGM trace (`glucose: x.csv`)
    is found relative to its folder."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError(path, "the file is empty")
        info = _lines(node, path)
        doc = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ScenarioError(path, f"not valid YAML: {e.problem or e.context}",
                            line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, f"not valid YAML: {e}") from None
    finally:
        loader.dispose()
    return _build(doc, path, info)


def _build(doc: Any, path: str, info: dict) -> Scenario:
    top = info["top"]
    if not isinstance(doc, dict):
        raise ScenarioError(path, "a scenario is a mapping with name, description, pump and steps")
    for k in doc:
        if k not in TOP_KEYS:
            raise ScenarioError(path, f"unknown top-level key {k!r} (allowed: {', '.join(TOP_KEYS)})",
                                line=top.get(k))
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(path, "'name' is required and must be text", line=top.get("name"))
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise ScenarioError(path, "'description' must be text", line=top.get("description"))
    sub = info["sub"]

    def sub_line(block: str, fld: str | None) -> int | None:
        head = fld.split(".")[0].split("[")[0] if fld else None
        return sub.get(block, {}).get(head) or top.get(block)

    try:
        setup = _setup(doc.get("pump"))
    except _Bad as e:
        raise ScenarioError(path, str(e), line=sub_line("pump", e.field),
                            fld="pump" + (f".{e.field}" if e.field else "")) from None
    try:
        cgm = _cgm_setup(doc["cgm"], Path(path).parent) if "cgm" in doc else None
    except _Bad as e:
        raise ScenarioError(path, str(e), line=sub_line("cgm", e.field),
                            fld="cgm" + (f".{e.field}" if e.field else "")) from None
    steps_raw = doc.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(path, "'steps' is required: a non-empty list of steps", line=top.get("steps"))

    steps: list[Step] = []
    prev_ms = 0
    last_bolus_ms: int | None = None
    for i, raw in enumerate(steps_raw, 1):
        line = info["steps"][i - 1] if i - 1 < len(info["steps"]) else None
        flines = info["step_fields"][i - 1] if i - 1 < len(info["step_fields"]) else {}
        at = raw.get("at") if isinstance(raw, dict) else None
        try:
            step = _step(i, raw, line, prev_ms, last_bolus_ms)
        except _Bad as e:
            fld = e.field
            fline = flines.get(fld.split(".")[0]) if fld else None
            raise ScenarioError(path, str(e), line=fline or line, step=i,
                                at=at if isinstance(at, str) else None, fld=fld) from None
        if step.action and step.action.key == "inject" and step.action.args["what"].startswith("cgm_") \
                and cgm is None:
            raise ScenarioError(path, "a CGM fault needs a simulated sensor: add a top-level 'cgm:' block "
                                "(e.g. cgm: {sensor: \"C0:98:E5:49:00:01\", glucose: 120})",
                                line=flines.get("inject") or line, step=i, at=at if isinstance(at, str) else None,
                                fld="inject")
        steps.append(step)
        prev_ms = step.t_ms
        if step.action and step.action.key == "bolus" and not step.expect_refused:
            last_bolus_ms = step.t_ms
    return Scenario(path, name.strip(), desc.strip(), setup, steps, cgm)


def _setup(raw: Any) -> Setup:
    s = Setup()
    s.clock_s = parse_clock(DEFAULT_CLOCK)
    if raw is None:
        return s
    if not isinstance(raw, dict):
        raise _Bad("'pump' must be a mapping of " + ", ".join(PUMP_KEYS))
    for k in raw:
        if k not in PUMP_KEYS:
            raise _Bad(f"unknown key (allowed: {', '.join(PUMP_KEYS)})", str(k))
    if "reservoir" in raw:
        s.reservoir_mu = None if raw["reservoir"] is None else _with_field("reservoir", milli, raw["reservoir"],
                                                                           "reservoir (U)")
    if "prime" in raw:
        s.prime_ms = _with_field("prime", parse_duration, raw["prime"], "prime")
    if "cannula" in raw:
        s.cannula_mu = _with_field("cannula", milli, raw["cannula"], "cannula (U)")
    if s.reservoir_mu is None and ("prime" in raw or "cannula" in raw):
        raise _Bad("prime and cannula belong to the reservoir change; give a reservoir", "reservoir")
    if "basal" in raw:
        s.segments = _with_field("basal", _segments, raw["basal"])
    if "profiles" in raw:
        s.profiles = _with_field("profiles", _profiles, raw["profiles"])
    if "active_profile" in raw:
        name = _with_field("active_profile", _profile_name, raw["active_profile"])
        if name not in s.profiles and name != "default":
            raise _Bad(f"{name!r} is not one of the profiles set up here (or 'default')", "active_profile")
        s.active_profile = name
    if s.segments is not None and "default" in s.profiles:
        raise _Bad("'basal' is the profile 'default'; do not give it in profiles too", "basal")
    if "limits" in raw:
        s.limits = _with_field("limits", _limits, raw["limits"])
    if "time" in raw:
        s.clock_s = _with_field("time", parse_clock, raw["time"], "time")
        s.clock_text = raw["time"]
    if "state" in raw:
        if raw["state"] not in ("running", "suspended"):
            raise _Bad(f"must be running or suspended, got {_show(raw['state'])}", "state")
        s.state = raw["state"]
    if s.state == "running" and not s.reservoir_mu:
        raise _Bad("a pump set up running needs a reservoir (or set state: suspended)", "state")
    return s


# ---- the CGM sensor (`cgm:`) ---------------------------------------------------------------------
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
GLUCOSE_RANGE = (10, 600)  # mg/dL a glucose source may give (the sensor sends 40..400, annunciates beyond)


@dataclass
class Glucose:
    """The blood glucose a simulated sensor measures, against scenario time: a constant, points
    ("HH:MM=mg/dL", linear in between, held beyond the ends) or a CSV trace (minutes, mg/dL)."""

    kind: str  # "constant" | "points" | "trace"
    minutes: list[float]  # scenario minutes (one entry for a constant)
    mgdl: list[float]
    text: str  # as written, for the report

    def at(self, t_min: float) -> float:
        """Blood glucose at scenario minute t_min."""
        ts, gs = self.minutes, self.mgdl
        if t_min <= ts[0]:
            return gs[0]
        if t_min >= ts[-1]:
            return gs[-1]
        hi = next(i for i, t in enumerate(ts) if t > t_min)
        t0, t1, g0, g1 = ts[hi - 1], ts[hi], gs[hi - 1], gs[hi]
        return g0 + (g1 - g0) * (t_min - t0) / (t1 - t0)


@dataclass
class CgmSetup:
    address: str = DEFAULT_SENSOR  # upper case
    glucose: Glucose = field(default_factory=lambda: Glucose("constant", [0.0], [float(DEFAULT_GLUCOSE)],
                                                             str(DEFAULT_GLUCOSE)))
    noise: bool = True
    seed: int = 0
    pair: bool = True
    settings: dict[str, int] = field(default_factory=dict)  # cgm_set arguments: low_mgdl, high_mgdl, loss_min


def _address(v: Any, what: str) -> str:
    if not isinstance(v, str) or not _ADDRESS.match(v):
        raise _Bad(f"{what} is a Bluetooth address like \"C0:98:E5:49:00:01\" (quote it), got {_show(v)}")
    return v.upper()


def _mgdl(v: Any, what: str) -> float:
    d = dec(v, what)
    lo, hi = GLUCOSE_RANGE
    if not lo <= d <= hi:
        raise _Bad(f"{what} {_show(v)} is outside {lo}..{hi} mg/dL")
    return float(d)


def _glucose(v: Any, base: Path) -> Glucose:
    """120 | ["00:00=120", "06:00=90"] | "trace.csv" (relative to the scenario's folder)."""
    example = '120, ["00:00=120", "06:00=90", "07:30=180"] or "day.csv"'
    if isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and not v.lower().endswith(".csv"):
        try:
            return Glucose("constant", [0.0], [_mgdl(v, "glucose")], str(v))
        except _Bad as e:
            raise _Bad(f"{e} (glucose is mg/dL, e.g. {example})") from None
    if isinstance(v, str):
        p = Path(v) if Path(v).is_absolute() else base / v
        from hil.ble.sensor import trace_profile  # the sensor's own CSV reader: what loads here runs there

        try:
            trace_profile(p)
            ts, gs = _csv(p)
        except (OSError, ValueError) as e:
            raise _Bad(f"glucose trace {v!r}: {getattr(e, 'strerror', None) or e}") from None
        for g in gs:
            _mgdl(str(g), f"glucose trace {v!r}: a value")
        return Glucose("trace", ts, gs, v)
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _Bad(f"glucose is mg/dL, a list of \"HH:MM=mg/dL\" points or a CSV trace, e.g. {example}")
    ts, gs = [], []
    for item in v:
        t, sep, g = item.partition("=")
        if not sep:
            raise _Bad(f"point {item!r} is not \"HH:MM=mg/dL\" (scenario time), e.g. {example}")
        ms = parse_abs(t.strip(), "point time")
        if ts and ms / 60000 <= ts[-1]:
            raise _Bad(f"point {item!r}: times must ascend")
        ts.append(ms / 60000)
        gs.append(_mgdl(g.strip(), f"point {item!r}: glucose"))
    return Glucose("points", ts, gs, ", ".join(v))


def _csv(p: Path) -> tuple[list[float], list[float]]:
    import csv

    ts, gs = [], []
    with open(p, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            try:
                t, g = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                continue  # header, comments, blank lines (trace_profile has vetted the rest)
            ts.append(t)
            gs.append(g)
    return ts, gs


def _cgm_setup(raw: Any, base: Path) -> CgmSetup:
    if not isinstance(raw, dict) or not raw:
        raise _Bad("'cgm' is a mapping of " + ", ".join(CGM_KEYS) + ', e.g. {sensor: "C0:98:E5:49:00:01", '
                   "glucose: 120}")
    for k in raw:
        if k not in CGM_KEYS:
            raise _Bad(f"unknown key (allowed: {', '.join(CGM_KEYS)})", str(k))
    c = CgmSetup()
    if "sensor" in raw:
        c.address = _with_field("sensor", _address, raw["sensor"], "sensor")
    if "glucose" in raw:
        c.glucose = _with_field("glucose", _glucose, raw["glucose"], base)
    for k in ("noise", "pair"):
        if k in raw:
            if not isinstance(raw[k], bool):
                raise _Bad(f"{k} is true or false, got {_show(raw[k])}", k)
            setattr(c, k, raw[k])
    if "seed" in raw:
        c.seed = _int(raw["seed"], "seed", 0, 2**31)
    c.settings = _cgm_settings(raw, False)
    return c


def _cgm_settings(v: dict, as_written: bool) -> dict[str, int]:
    """{low, high, loss_min} -> cgm_set's arguments. The setup checks the pump's rules (low 0 or
    55..150, high 0 or 120..400 and above low, loss_min 10..120); an action passes them on as
    written, so a scenario can check that the pump refuses them."""
    out = {}
    for k, key in (("low", "low_mgdl"), ("high", "high_mgdl"), ("loss_min", "loss_min")):
        if k in v:
            out[key] = _int(v[k], k, 0, 100_000)
    if as_written:
        return out
    low, high = out.get("low_mgdl"), out.get("high_mgdl")
    if low is not None and not (low == 0 or 55 <= low <= 150):
        raise _Bad(f"low is 0 (off) or 55..150 mg/dL, got {low}", "low")
    if high is not None and not (high == 0 or 120 <= high <= 400):
        raise _Bad(f"high is 0 (off) or 120..400 mg/dL, got {high}", "high")
    if low and high and high <= low:
        raise _Bad(f"high ({high}) must be above low ({low})", "high")
    if "loss_min" in out and not 10 <= out["loss_min"] <= 120:
        raise _Bad(f"loss_min is 10..120 minutes, got {out['loss_min']}", "loss_min")
    return out


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


def _profile_name(raw: Any) -> str:
    if not isinstance(raw, str) or not _NAME.match(raw):
        raise _Bad(f"a profile name is 1..16 letters, digits, _ or -, got {_show(raw)}")
    return raw


def _profiles(raw: Any) -> dict[str, list[int]]:
    if not isinstance(raw, dict) or not raw:
        raise _Bad('profiles is a mapping of name: segments, e.g. {weekend: ["00:00=0.7"]}')
    out = {}
    for k, v in raw.items():
        name = _with_field(str(k), _profile_name, k)
        out[name] = _with_field(name, _segments, v)
    return out


def _with_field(fld: str, fn, *args):
    try:
        return fn(*args)
    except _Bad as e:
        raise _Bad(str(e), fld + (f".{e.field}" if e.field else "")) from None


def _segments(raw: Any) -> list[int]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise _Bad('basal is a list of "HH:MM=U/h" segments, e.g. ["00:00=0.8", "06:30=1.25"]')
    try:
        return parse_segments(raw)
    except UnitError as e:
        raise _Bad(str(e)) from None


def _limits(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise _Bad(f"limits is a mapping of {', '.join(LIMITS)}")
    out = {}
    for k, v in raw.items():
        if k not in LIMITS:
            raise _Bad(f"unknown limit (known: {', '.join(LIMITS)})", str(k))
        key, unit = LIMITS[k]
        try:
            out[key] = milli(v, f"{k} ({unit})")
        except _Bad as e:
            raise _Bad(str(e), str(k)) from None
    return out


def _step(i: int, raw: Any, line: int | None, prev_ms: int, last_bolus_ms: int | None) -> Step:
    if not isinstance(raw, dict):
        raise _Bad("a step is a mapping with 'at' and an action and/or 'expect'")
    for k in raw:
        if k not in STEP_KEYS:
            hint = " (expectations go under 'expect:')" if k in CHECK_KEYS else ""
            if k == "reservoir":
                hint = " (a reservoir is changed with suspend, rewind, insert, prime start/stop, fill, resume)"
            raise _Bad(f"unknown key{hint}; a step has at, note, one action ({', '.join(ACTION_KEYS)}), "
                       "expect_refused, expect", str(k))
    if "at" not in raw:
        raise _Bad("every step needs 'at' (e.g. at: \"06:30\" or at: +30m)", "at")
    try:
        t_ms = parse_time(raw["at"], prev_ms)
    except _Bad as e:
        raise _Bad(str(e), "at") from None
    if t_ms < prev_ms:
        raise _Bad(f"{fmt_time(t_ms)} is before the previous step ({fmt_time(prev_ms)}); time only moves forward",
                   "at")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise _Bad("note must be text", "note")
    step = Step(i, line, str(raw["at"]), t_ms, note)
    actions = [k for k in ACTION_KEYS if k in raw]
    if len(actions) > 1:
        raise _Bad(f"one action per step, found {', '.join(actions)}; split them into steps at the same time",
                   actions[1])
    if actions:
        step.action = _action(actions[0], raw[actions[0]])
    if "expect_refused" in raw:
        code = raw["expect_refused"]
        if not step.action:
            raise _Bad("expect_refused needs an action in the same step", "expect_refused")
        if step.action.key == "inject":
            raise _Bad("a hardware fault is not a command: the pump cannot refuse it", "expect_refused")
        if code not in REFUSAL_CODES + ("any",):
            raise _Bad(f"unknown refusal code {_show(code)} (one of {', '.join(REFUSAL_CODES)}, or any)",
                       "expect_refused")
        step.expect_refused = code
    if "expect" in raw:
        own_bolus = step.action and step.action.key == "bolus" and not step.expect_refused
        step.checks = _checks(raw["expect"], step, t_ms if own_bolus else last_bolus_ms)
    if not step.action and not step.checks:
        raise _Bad("a step needs an action or an 'expect' (or both)")
    return step


def _flag(key: str, v: Any) -> None:
    if v not in (None, True):
        raise _Bad(f"{key} takes no value (write '{key}: true' or just '{key}:')", key)


def _u3(mu: int) -> str:
    return f"{mu / 1000:.3f}"


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{what} must be a whole number, got {_show(v)}", what)
    if not lo <= v <= hi:
        raise _Bad(f"{what} must be {lo}..{hi}, got {v}", what)
    return v


def _mapping(v: Any, key: str, allowed: tuple[str, ...], example: str) -> dict:
    if not isinstance(v, dict) or not v:
        raise _Bad(f"{key} is a mapping, e.g. {example}", key)
    for k in v:
        if k not in allowed:
            raise _Bad(f"unknown key {k!r} (allowed: {', '.join(allowed)})", f"{key}.{k}")
    return v


def _schedule(raw: Any, what: str, conv, example: str) -> list[int]:
    """["HH:MM=VALUE", ...] -> the protocol's flat [start_min, *conv(VALUE), ...] (starts are
    checked by the pump)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise _Bad(f'{what} is a list of "HH:MM=VALUE" entries, e.g. {example}')
    out = []
    for item in raw:
        if "=" not in item:
            raise _Bad(f"entry {item!r} is not HH:MM=VALUE, e.g. {example}")
        t, val = item.split("=", 1)
        try:
            start = parse_hhmm(t)
        except UnitError as e:
            raise _Bad(str(e)) from None
        out += [start, *conv(val.strip())]
    return out


def _tenths(v: str) -> list[int]:
    d = dec(v, "carb ratio (g/U)")
    if d * 10 != (d * 10).to_integral_value():
        raise _Bad(f"carb ratio {v!r} has more precision than 0.1 g/U")
    return [int(d * 10)]


def _whole(v: str) -> list[int]:
    if not v.isdigit():
        raise _Bad(f"{v!r} is not a whole number of mg/dL")
    return [int(v)]


def _range(v: str) -> list[int]:
    lo, _, hi = v.partition("-")
    lo_v = _whole(lo.strip())[0]
    return [lo_v, _whole(hi.strip())[0] if hi else lo_v]


def _action(key: str, v: Any) -> Action:
    if key == "bolus":
        if isinstance(v, dict):
            _mapping(v, "bolus", ("now", "extended", "minutes"), "{now: 2.0, extended: 3.0, minutes: 120}")
            args: dict[str, int] = {}
            if "now" in v:
                args["mU"] = _with_field("bolus.now", milli, v["now"], "bolus now (U)")
            if "extended" in v:
                args["ext_mU"] = _with_field("bolus.extended", milli, v["extended"], "bolus extended (U)")
            if "minutes" in v:
                args["minutes"] = _int(v["minutes"], "bolus.minutes", 0, 10_000)
            if ("ext_mU" in args) != ("minutes" in args):
                raise _Bad("an extended part needs both 'extended' (U) and 'minutes'", "bolus")
            if not args:
                raise _Bad("give now and/or extended + minutes", "bolus")
            parts = []
            if "mU" in args:
                parts.append(f"{_u3(args['mU'])} U now")
            if "ext_mU" in args:
                parts.append(f"{_u3(args['ext_mU'])} U over {args['minutes']} min")
            kind = "combo" if len(parts) == 2 else "extended" if "ext_mU" in args else "bolus"
            return Action(key, "bolus", args, f"{kind} bolus {' + '.join(parts)}" if kind != "bolus"
                          else f"bolus {_u3(args['mU'])} U")
        mu = _with_field("bolus", milli, v, "bolus (U)")
        return Action(key, "bolus", {"mU": mu}, f"bolus {_u3(mu)} U")
    if key == "cancel_bolus":
        if v in (None, True, "all"):
            return Action(key, "bolus_cancel", {}, "cancel bolus")
        if v not in ("normal", "extended"):
            raise _Bad(f"cancel_bolus is true, normal, extended or all, got {_show(v)}", key)
        return Action(key, "bolus_cancel", {"kind": v}, f"cancel {v} bolus")
    if key in ("suspend", "resume", "rewind", "cancel_temp"):
        _flag(key, v)
        cmd = {"cancel_temp": "temp_basal_cancel"}.get(key, key)
        return Action(key, cmd, {}, {"cancel_temp": "cancel temp basal"}.get(key, key))
    if key == "basal":
        segs = _with_field("basal", _segments, v)
        return Action(key, "basal_set", {"segments": segs}, f"basal {_seg_text(segs)} U/h")
    if key == "limits":
        lim = _with_field("limits", _limits, v)
        text = ", ".join(f"{k}={v}" for k, v in v.items())
        return Action(key, "limits_set", lim, f"limits {text}")
    if key == "temp_basal":
        _mapping(v, key, ("percent", "rate", "minutes"), "{percent: 150, minutes: 60} or {rate: 0.5, minutes: 30}")
        if ("percent" in v) == ("rate" in v):
            raise _Bad("give exactly one of percent and rate", key)
        if "minutes" not in v:
            raise _Bad("needs minutes", key)
        minutes = _int(v["minutes"], "temp_basal.minutes", 0, 100_000)
        if "percent" in v:
            pct = _int(v["percent"], "temp_basal.percent", 0, 100_000)
            return Action(key, "temp_basal", {"percent": pct, "minutes": minutes},
                          f"temp basal {pct}% for {minutes} min")
        rate = _with_field("temp_basal.rate", milli, v["rate"], "temp basal rate (U/h)")
        return Action(key, "temp_basal", {"rate_mUh": rate, "minutes": minutes},
                      f"temp basal {rate / 1000:g} U/h for {minutes} min")
    if key == "profile":
        _mapping(v, key, ("set", "select", "delete"), '{set: {weekend: ["00:00=0.7"]}} or {select: weekend}')
        if len(v) != 1:
            raise _Bad("one of set, select or delete per step", key)
        op, arg = next(iter(v.items()))
        if op == "set":
            profs = _with_field("profile.set", _profiles, arg)
            if len(profs) != 1:
                raise _Bad("set one profile per step", "profile.set")
            name, segs = next(iter(profs.items()))
            return Action(key, "profile_set", {"name": name, "segments": segs},
                          f"profile {name} = {_seg_text(segs)} U/h")
        name = _with_field(f"profile.{op}", _profile_name, arg)
        return Action(key, f"profile_{op}", {"name": name}, f"{op} profile {name}")
    if key == "select_profile":
        name = _with_field(key, _profile_name, v)
        return Action(key, "profile_select", {"name": name}, f"select profile {name}")
    if key == "time":
        local = _with_field(key, parse_clock, v, "time")
        return Action(key, "time_set", {"local_s": local}, f"set the clock to {fmt_clock(local)}")
    if key == "calc_set":
        _mapping(v, key, ("carb_ratio", "sensitivity", "target", "dia_min", "peak_min"),
                 '{carb_ratio: ["00:00=10"], sensitivity: ["00:00=50"], target: ["00:00=100-120"]}')
        for need in ("carb_ratio", "sensitivity", "target"):
            if need not in v:
                raise _Bad(f"needs {need}", key)
        args = {"cr": _with_field("calc_set.carb_ratio", _schedule, v["carb_ratio"], "carb_ratio", _tenths,
                                  '["00:00=10", "11:00=8.5"] (g/U)'),
                "isf": _with_field("calc_set.sensitivity", _schedule, v["sensitivity"], "sensitivity", _whole,
                                   '["00:00=50"] (mg/dL per U)'),
                "target": _with_field("calc_set.target", _schedule, v["target"], "target", _range,
                                      '["00:00=100-120"] (mg/dL)')}
        for k in ("dia_min", "peak_min"):
            if k in v:
                args[k] = _int(v[k], f"calc_set.{k}", 0, 10_000)
        return Action(key, "calc_set", args, "set up the bolus calculator")
    if key == "calc":
        _mapping(v, key, ("carbs", "bg"), "{carbs: 60, bg: 180}")
        if "carbs" not in v:
            raise _Bad("needs carbs (grams; 0 for a correction only)", key)
        args = {"carbs_g": _int(v["carbs"], "calc.carbs", 0, 100_000)}
        if "bg" in v:
            args["bg_mgdl"] = _int(v["bg"], "calc.bg", 0, 100_000)
        return Action(key, "bolus_calc", args,
                      f"bolus calculator: {args['carbs_g']} g" + (f", BG {args['bg_mgdl']}" if "bg_mgdl" in args else ""))
    if key == "insert":
        mu = _with_field(key, milli, v, "insert (U)")
        return Action(key, "reservoir_insert", {"mU": mu}, f"insert a reservoir of {_u3(mu)} U")
    if key == "prime":
        if v not in ("start", "stop"):
            raise _Bad(f"prime is start or stop, got {_show(v)}", key)
        return Action(key, f"prime_{v}", {}, f"prime {v}")
    if key == "fill":
        mu = _with_field(key, milli, v, "fill (U)")
        return Action(key, "cannula_fill", {"mU": mu}, f"fill the cannula with {_u3(mu)} U")
    if key == "inject":
        return _inject(v)
    if key == "cgm_pair":
        if v is None or v is False:
            return Action(key, "cgm_pair", {"address": None}, "unpair the CGM")
        addr = _with_field(key, _address, v, "cgm_pair")
        return Action(key, "cgm_pair", {"address": addr}, f"pair the CGM {addr}")
    if key == "cgm_set":
        _mapping(v, key, ("low", "high", "loss_min"), "{low: 80, high: 250, loss_min: 30}")
        args = _with_field(key, _cgm_settings, v, True)
        return Action(key, "cgm_set", args, "CGM alerts " + ", ".join(f"{k}={v[k]}" for k in v))
    raise AssertionError(key)


# ---- hardware faults (the simulator's SimHardware; docs/scenarios.md "Injecting faults") -------
INJECT_KEYS = ("occlusion", "reservoir", "battery", "motor", "encoder") + CGM_INJECT
INJECT_EXAMPLE = ("{occlusion: full}, {reservoir: removed}, {battery: 0.1}, {motor: stall}, {encoder: {offset: 5}}, "
                  "{cgm_link_loss: 20m}")
PARTIAL_OCCLUSION = 100  # resistance x this for `occlusion: partial`


def _number(v: Any, what: str, lo: float, hi: float) -> float:
    try:
        d = dec(v, what)
    except _Bad:
        d = None
    if d is None or not lo <= d <= hi:
        raise _Bad(f"{what} must be a number {lo:g}..{hi:g}, got {_show(v)}", what)
    return float(d)


def _inject(v: Any) -> Action:
    """One fault of the simulated hardware: Action args {"what": ..., ...} for the runner."""
    if not isinstance(v, dict) or len(v) != 1:
        raise _Bad(f"inject is a mapping with one fault, e.g. {INJECT_EXAMPLE}", "inject")
    what, val = next(iter(v.items()))
    if what not in INJECT_KEYS:
        raise _Bad(f"unknown fault {what!r} (one of {', '.join(INJECT_KEYS)})", f"inject.{what}")
    field_ = f"inject.{what}"
    if what.startswith("cgm_"):
        return _inject_cgm(what, val, field_)
    if what == "occlusion":
        if val == "clear":
            return Action("inject", "", {"what": "clear"}, "inject: occlusion cleared")
        if val in ("full", "partial"):
            factor = None if val == "full" else PARTIAL_OCCLUSION
        else:
            factor = _number(val, field_ + " (resistance factor)", 2, 1e9)
        return Action("inject", "", {"what": "occlude", "factor": factor},
                      "inject: occlusion " + ("(full)" if factor is None else f"(resistance x {factor:g})"))
    if what == "reservoir":
        if val not in ("removed", "seated", "new"):
            raise _Bad(f"reservoir is removed, seated (the same one back) or new, got {_show(val)}", field_)
        return Action("inject", "", {"what": "remove" if val == "removed" else "seat", "new": val == "new"},
                      f"inject: reservoir {val}")
    if what == "battery":
        if val == "replace":
            return Action("inject", "", {"what": "battery"}, "inject: new battery")
        soc = _number(val, field_ + " (state of charge)", 0, 1)
        return Action("inject", "", {"what": "drain", "soc": soc}, f"inject: battery at {soc:.0%}")
    if what == "motor":
        if val in ("stall", "ok"):
            return Action("inject", "", {"what": "stall" if val == "stall" else "motor_ok"}, f"inject: motor {val}")
        _mapping(val, field_, ("runaway", "missed"), "stall, ok, {runaway: 20} (Hz) or {missed: 0.25}")
        if len(val) != 1:
            raise _Bad("one motor fault at a time", field_)
        if "runaway" in val:
            hz = _int(val["runaway"], field_ + ".runaway (Hz)", 1, 10_000)
            return Action("inject", "", {"what": "runaway", "hz": hz}, f"inject: motor runaway at {hz} Hz")
        frac = _number(val["missed"], field_ + ".missed (fraction of steps)", 0.001, 1)
        return Action("inject", "", {"what": "missed", "fraction": frac}, f"inject: motor misses {frac:.0%} of steps")
    if val == "ok":
        return Action("inject", "", {"what": "encoder_ok"}, "inject: encoder ok")
    _mapping(val, field_, ("offset", "scale"), "ok, {offset: 5} (counts) or {scale: 0.9} (counts per step)")
    off = _int(val.get("offset", 0), field_ + ".offset (counts)", -100_000, 100_000)
    scale = _number(val.get("scale", 1), field_ + ".scale (counts per step)", 0, 10)
    text = ([f"jumps {off:+d} counts"] if "offset" in val else []) + (
        [f"counts {scale:g} per step"] if "scale" in val else [])
    return Action("inject", "", {"what": "encoder", "offset": off, "scale": scale},
                  "inject: encoder " + " and ".join(text))


def _inject_cgm(what: str, val: Any, field_: str) -> Action:
    """A fault of the simulated CGM sensor or its radio link (hil/ble): args {"what": ...} for the runner."""
    if what == "cgm_link_loss":
        ms = _with_field(field_, parse_duration, val, "cgm_link_loss")
        if not 1000 <= ms <= 24 * 3600 * 1000:
            raise _Bad(f"cgm_link_loss is 1s..24h, got {_show(val)}", field_)
        return Action("inject", "", {"what": what, "ms": ms}, f"inject: CGM link lost for {val}")
    if what in ("cgm_drop", "cgm_corrupt", "cgm_duplicate"):
        n = _int(val, field_ + " (readings)", 1, 10_000)
        verb = {"cgm_drop": "dropped on the air", "cgm_corrupt": "sent with a bad E2E-CRC",
                "cgm_duplicate": "sent twice"}[what]
        return Action("inject", "", {"what": what, "n": n}, f"inject: the next {n} CGM reading(s) {verb}")
    if what == "cgm_glucose":
        if val == "nan":
            return Action("inject", "", {"what": what, "mgdl": None}, "inject: the next CGM reading is NaN")
        g = _int(val, field_ + " (mg/dL)", 0, 2000)
        return Action("inject", "", {"what": what, "mgdl": g}, f"inject: the next CGM reading is {g} mg/dL")
    if what == "cgm_status":
        if val not in CGM_STATUS_BITS:
            raise _Bad(f"cgm_status is one of {', '.join(CGM_STATUS_BITS)}, got {_show(val)}", field_)
        return Action("inject", "", {"what": what, "bits": CGM_STATUS_BITS[val], "status": val},
                      f"inject: the next CGM reading annunciates {val}")
    if what == "cgm_session_stop":
        if val not in (None, True):
            raise _Bad("cgm_session_stop takes no value (write 'cgm_session_stop: true')", field_)
        return Action("inject", "", {"what": what}, "inject: the CGM session ends (one last reading says so)")
    # cgm_second_sensor: an address, or {address, glucose}
    if isinstance(val, dict):
        _mapping(val, field_, ("address", "glucose"), '{address: "C0:98:E5:49:00:02", glucose: 300}')
        if "address" not in val:
            raise _Bad("needs address", field_)
        addr = _with_field(field_ + ".address", _address, val["address"], "address")
        g = _with_field(field_ + ".glucose", _mgdl, val.get("glucose", SECOND_SENSOR_GLUCOSE), "glucose")
    else:
        addr = _with_field(field_, _address, val, "cgm_second_sensor")
        g = float(SECOND_SENSOR_GLUCOSE)
    return Action("inject", "", {"what": what, "address": addr, "mgdl": g},
                  f"inject: a second, unpaired CGM {addr} ({g:g} mg/dL) advertising nearby")


def pairs(segs: list) -> list[list[int]]:
    """Segments as [[start, rate], ...], from the protocol's flat [start, rate, ...] or nested."""
    if segs and all(isinstance(e, list | tuple) for e in segs):
        return [list(e) for e in segs]
    return [list(segs[i:i + 2]) for i in range(0, len(segs), 2)]


def _seg_text(segs: list) -> str:
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}={r / 1000:g}" for s, r in pairs(segs))


def _window(spec: dict, what: str, step: Step, default_from: int | None,
            start_ok: bool = False) -> tuple[int | None, int]:
    """(from, to) in scenario ms; from None = the start of the run, setup included ('from: start')."""
    try:
        t_to = parse_abs(spec["to"], "to") if "to" in spec else step.t_ms
        if "from" in spec and start_ok and spec["from"] == "start":
            t_from = None
        elif "from" in spec:
            t_from = parse_abs(spec["from"], "from")
        elif default_from is not None or start_ok:
            t_from = default_from
        else:
            raise _Bad("needs 'from' (no bolus action before this step to start from)")
    except _Bad as e:
        raise _Bad(str(e), what) from None
    if t_to > step.t_ms:
        raise _Bad(f"'to' {fmt_time(t_to)} is after this step ({fmt_time(step.t_ms)}); "
                   "the plant cannot be measured in the future", what)
    if t_from is not None and t_from > t_to:
        raise _Bad(f"'from' {fmt_time(t_from)} is after 'to' {fmt_time(t_to)}", what)
    return t_from, t_to


def _fields(raw: dict, what: str, skip: tuple[str, ...]) -> dict[str, Compare]:
    """Field expectations of an event, reply, history record or status object. A field whose
    data key ends in _mU (or _mUh) may be named without the suffix and given in units."""
    fields = {}
    for k, v in raw.items():
        if k in skip:
            continue
        if not isinstance(k, str):
            raise _Bad(f"field {k!r} must be a name", what)
        unit = "mg/dL" if k in ("glucose", "glucose_mgdl") else ""  # CGM readings: whole mg/dL
        fields[k] = parse_compare(v, "any" if not isinstance(v, dict) else unit, f"{what}.{k}")
    return fields


def _matchers(v: Any, what: str, absent: bool, name_key: str):
    """One or a list of event/history matchers -> (spec, description) pairs."""
    specs = v if isinstance(v, list) else [v]
    if not specs:
        raise _Bad("an empty list expects nothing", what)
    for n, spec in enumerate(specs):
        es = _event_spec(spec, what if len(specs) == 1 else f"{what}[{n}]", absent, name_key)
        inner = ", ".join(f"{fk}={fc.describe()}" for fk, fc in es["fields"].items())
        yield es, es["name"] + (f"({inner})" if inner else "")


def _event_spec(raw: Any, what: str, absent: bool, name_key: str = "name") -> dict:
    if isinstance(raw, str):
        raw = {name_key: raw}
    if not isinstance(raw, dict) or not isinstance(raw.get(name_key), str):
        if name_key == "type":
            raise _Bad("a history expectation is a mapping with at least 'type', e.g. {type: bolus_done, "
                       "delivered: 2.0}", what)
        raise _Bad("an event expectation is a mapping with at least 'name', e.g. {name: bolus, phase: complete}",
                   what)
    if name_key == "type":
        t = HISTORY_TYPES.get(raw["type"])
        if t is None:
            raise _Bad(f"unknown history type {raw['type']!r} (known: {', '.join(HISTORY_TYPES)})", what)
        known = [f[0] for f in t[1:] if f] + ["a", "b", "t_s", "seq"] + (["kind"] if raw["type"] == "bolus_cancel"
                                                                         else [])
        for k in raw:
            if k not in (name_key, "count") and k not in known:
                raise _Bad(f"unknown field {k!r} of a {raw['type']} record (known: {', '.join(known)})", what)
    fields = _fields(raw, what, (name_key, "count"))
    count = None
    if "count" in raw:
        if absent:
            raise _Bad(f"no_{'history' if name_key == 'type' else 'event'} takes no count", what)
        count = parse_compare(raw["count"], "count", f"{what}.count")
    if absent:
        count = Compare("eq", Decimal(0), unit="count")
    return {"name": raw[name_key], "fields": fields, "count": count}


def _checks(raw: Any, step: Step, last_bolus_ms: int | None) -> list[Check]:
    if not isinstance(raw, dict) or not raw:
        raise _Bad(f"expect is a mapping of expectations ({', '.join(CHECK_KEYS)})", "expect")
    out: list[Check] = []
    for k, v in raw.items():
        what = f"expect.{k}"
        if k in STATUS_FIELDS:
            out.append(Check(k, k, parse_compare(v, STATUS_FIELDS[k], what)))
        elif k == "clock":
            local = _with_field(what, parse_clock, v, "clock")
            out.append(Check(k, "pump clock", Compare("eq", local, unit="clock")))
        elif k in STATUS_OBJECTS:
            if v is None or isinstance(v, bool):
                out.append(Check(k, f"{k} running", Compare("eq", bool(v), unit="bool"), {"fields": None}))
            elif isinstance(v, dict) and v:
                fields = _fields(v, what, ())
                inner = ", ".join(f"{fk}={fc.describe()}" for fk, fc in fields.items())
                out.append(Check(k, f"{k}({inner})", None, {"fields": fields}))
            else:
                raise _Bad(f"{k} is true/false (running or not) or a mapping of its fields, e.g. "
                           "{delivered: 0.5}", what)
        elif k == "plant_delivered":
            if not isinstance(v, dict):
                raise _Bad('plant_delivered is {from: "HH:MM", to: "HH:MM", equals: U} (or approx/min/max)', what)
            kind = v.get("kind", "therapy")
            if kind not in PLANT_KINDS:
                raise _Bad(f"kind is one of {', '.join(PLANT_KINDS)}, got {_show(kind)}", what)
            cmp = parse_compare({x: y for x, y in v.items() if x not in ("from", "to", "kind")}, "U", what)
            t_from, t_to = _window(v, what, step, None, start_ok=True)
            label = {"therapy": "plant delivered", "service": "plant primed", "all": "plunger moved"}[kind]
            start = "start" if t_from is None else fmt_short(t_from)
            out.append(Check(k, f"{label} {start}..{fmt_short(t_to)}", cmp,
                             {"from_ms": t_from, "to_ms": t_to, "kind": kind}))
        elif k == "bolus_speed":
            if not isinstance(v, dict):
                raise _Bad("bolus_speed is {approx: 1.5, tol: 0.05} in U/min, optionally with from/to", what)
            cmp = parse_compare({x: y for x, y in v.items() if x not in ("from", "to")}, "U/min", what)
            t_from, t_to = _window(v, what, step, last_bolus_ms)
            out.append(Check(k, f"bolus speed {fmt_short(t_from)}..{fmt_short(t_to)}", cmp,
                             {"from_ms": t_from, "to_ms": t_to}))
        elif k == "pump_matches_plant":
            if v is not True:
                raise _Bad("write 'pump_matches_plant: true'", what)
            out.append(Check(k, "pump total = plant total"))
        elif k in ("event", "no_event"):
            for es, desc in _matchers(v, what, k == "no_event", "name"):
                out.append(Check(k, f"{'no ' if k == 'no_event' else ''}event {desc}", es["count"], es))
        elif k == "limits":
            lim = _with_field(what, _limits, v)
            units = {LIMITS[f][0]: LIMITS[f][1] for f in LIMITS}
            for key, mu in lim.items():
                friendly = next(f for f in LIMITS if LIMITS[f][0] == key)
                out.append(Check(k, f"limit {friendly}", Compare("eq", Decimal(mu) / 1000, unit=units[key]),
                                 {"key": key}))
        elif k == "basal_schedule":
            segs = _with_field(what, _segments, v)
            out.append(Check(k, "basal schedule", Compare("eq", segs, unit="segments")))
        elif k == "profiles":
            profs = _with_field(what, _profiles, v)
            for name, segs in profs.items():
                out.append(Check(k, f"profile {name}", Compare("eq", segs, unit="segments"), {"name": name}))
        elif k in ("history", "no_history"):
            for hs, desc in _matchers(v, what, k == "no_history", "type"):
                out.append(Check(k, f"{'no ' if k == 'no_history' else ''}history {desc}", hs["count"], hs))
        elif k in ("reply", "calc"):
            if not step.action or step.expect_refused:
                raise _Bad(f"{k} checks the reply to this step's action; the step needs an action that is not "
                           "expect_refused", what)
            if k == "calc" and step.action.key != "calc":
                raise _Bad("calc checks the bolus calculator's suggestion; the step needs a 'calc' action", what)
            if not isinstance(v, dict) or not v:
                raise _Bad(f"{k} is a mapping of reply fields, e.g. {{suggested: 6.5, iob: 0}}", what)
            fields = _fields(v, what, ())
            for fk, fc in fields.items():
                out.append(Check(k, f"{k} {fk}", fc, {"field": fk}))
        elif k == "cgm":
            out += _cgm_checks(v, what)
        else:
            raise _Bad(f"unknown expectation (known: {', '.join(CHECK_KEYS)})", what)
    return out


def _cgm_checks(raw: Any, what: str) -> list[Check]:
    """expect: cgm: {link: up, glucose: {approx: 110, tol: 15}, readings: {min: 10}, rejected: {crc: 1},
    alarm: glucose_low, ...} -> one check per field, read from the pump's `cgm` reply (alarms: status)."""
    if not isinstance(raw, dict) or not raw:
        raise _Bad(f"cgm is a mapping of {', '.join(CGM_CHECKS)}, e.g. {{link: up, readings: {{min: 10}}}}", what)
    out: list[Check] = []
    for k, v in raw.items():
        f = CGM_ALIASES.get(k, k)
        w = f"{what}.{k}"
        if f in ("paired", "glucose") and (v is None or v is False):
            out.append(Check("cgm", f"cgm {f}", Compare("eq", None, unit="text"), {"field": f}))
        elif f == "paired":
            out.append(Check("cgm", "cgm paired", Compare("eq", _with_field(w, _address, v, "paired"), unit="text"),
                             {"field": f}))
        elif f == "link":
            if v not in CGM_LINK_STATES:
                raise _Bad(f"link is one of {', '.join(CGM_LINK_STATES)}, got {_show(v)}", w)
            out.append(Check("cgm", "cgm link", Compare("eq", v, unit="text"), {"field": f}))
        elif f in CGM_FIELDS:
            out.append(Check("cgm", f"cgm {f}", parse_compare(v, CGM_FIELDS[f][1], w), {"field": f}))
        elif f == "readings":
            out.append(Check("cgm", "cgm readings accepted", parse_compare(v, "count", w), {"field": f}))
        elif f == "rejected":
            if isinstance(v, dict) and v and not set(v) & set(COMPARE_KEYS):
                for reason, cv in v.items():
                    if reason not in CGM_REASONS[1:]:
                        raise _Bad(f"unknown rejection reason {reason!r} (one of {', '.join(CGM_REASONS[1:])})",
                                   f"{w}.{reason}")
                    out.append(Check("cgm", f"cgm rejected {reason}", parse_compare(cv, "count", f"{w}.{reason}"),
                                     {"field": f, "reason": CGM_REASONS.index(reason)}))
            else:
                out.append(Check("cgm", "cgm rejected (all reasons)", parse_compare(v, "count", w),
                                 {"field": f, "reason": None}))
        elif f in ("alarm", "no_alarm"):
            names = v if isinstance(v, list) else [v]
            if not names:
                raise _Bad("an empty list expects nothing", w)
            for n in names:
                if n not in CGM_ALARMS:
                    raise _Bad(f"unknown alarm {_show(n)} (one of {', '.join(CGM_ALARMS)})", w)
                out.append(Check("cgm", f"alarm {n} {'not ' if f == 'no_alarm' else ''}active",
                                 Compare("eq", f == "alarm", unit="bool"), {"field": "alarm", "alarm": n}))
        else:
            raise _Bad(f"unknown CGM expectation (known: {', '.join(CGM_CHECKS)})", w)
    return out
