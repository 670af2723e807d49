"""Human-readable views of pump replies and events for pumpctl (rich tables and one-line texts).

Everything shown as insulin is in units with 3 decimals (host.units.fmt_u); the protocol's
integers (mU, mU/h, steps) are never rounded on the way in, only formatted on the way out.
"""
from __future__ import annotations

from decimal import Decimal

from rich.table import Table

from host.units import fmt_hhmm, fmt_u

DAY_MIN = 1440

# Friendly limit names (what pumpctl accepts and shows) -> (protocol key, display unit).
# Every limit is carried in milli-units of its display unit, so one conversion fits all.
LIMITS = {
    "max_bolus": ("max_bolus_mU", "U"),
    "max_basal": ("max_basal_mUh", "U/h"),
    "bolus_speed": ("bolus_speed_mU_min", "U/min"),
    "bolus_increment": ("bolus_increment_mU", "U"),
}
LIMIT_NAME = {key: name for name, (key, _unit) in LIMITS.items()}


def hms(seconds: int) -> str:
    """Uptime in seconds -> 'H:MM:SS'."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def amount(mu: int, unit: str = "U") -> str:
    return f"{fmt_u(mu)} {unit}"


def _kv_table(title: str) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    return t


# ---- replies ------------------------------------------------------------------------------------
def ping(data: dict, rtt_ms: float) -> str:
    return (f"pong from {data.get('version', '?')}: uptime {hms(data.get('uptime_s', 0))}, "
            f"bad frames {data.get('frames_bad', 0)}, events dropped {data.get('events_dropped', 0)}, "
            f"round trip {rtt_ms:.1f} ms")


def bolus_line(b: dict) -> str:
    """A bolus report (started/running/cancelled/...) as one line."""
    return (f"#{b.get('id', '?')} {fmt_u(b.get('delivered_mU', 0))} of {amount(b.get('requested_mU', 0))} delivered "
            f"({b.get('delivered_steps', 0)} of {b.get('requested_steps', 0)} steps)")


def status(data: dict) -> Table:
    t = _kv_table("Pump status")
    state = data.get("state", "?")
    reason = data.get("reason")
    t.add_row("State", f"{state} ({reason})" if reason else state)
    t.add_row("Basal rate", amount(data.get("basal_mUh", 0), "U/h"))
    t.add_row("Reservoir", f"{amount(data.get('reservoir_mU', 0))} ({data.get('reservoir_steps', 0)} steps)")
    t.add_row("Delivered basal", amount(data.get("basal_delivered_mU", 0)))
    t.add_row("Delivered bolus", amount(data.get("bolus_delivered_mU", 0)))
    t.add_row("Delivered steps", str(data.get("delivered_steps", 0)))
    b = data.get("bolus")
    t.add_row("Running bolus", bolus_line(b) if b else "none")
    t.add_row("Uptime", hms(data.get("uptime_s", 0)))
    if "minute_of_day" in data:
        t.add_row("Pump clock", fmt_hhmm(data["minute_of_day"]))
    return t


def basal(segments: list[list[int]], current_muh: int | None = None) -> Table:
    """Segments [[start_min, mU/h], ...] as a table with each segment's span and insulin."""
    caption = None
    total = Decimal(0)
    rows = []
    for i, (start, rate) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else DAY_MIN
        mu = Decimal(rate) * (end - start) / 60
        total += mu
        rows.append((fmt_hhmm(start), fmt_hhmm(end % DAY_MIN), fmt_u(rate), f"{mu / 1000:.3f}"))
    caption = f"total {total / 1000:.3f} U per day"
    if current_muh is not None:
        caption += f"; delivering {amount(current_muh, 'U/h')} now"
    t = Table(title="Basal schedule", caption=caption, title_justify="left", caption_justify="left")
    t.add_column("Start")
    t.add_column("End")
    t.add_column("U/h", justify="right")
    t.add_column("U in segment", justify="right")
    for r in rows:
        t.add_row(*r)
    return t


def limits(data: dict) -> Table:
    t = Table(title="Therapy limits", title_justify="left")
    t.add_column("Limit")
    t.add_column("Value", justify="right")
    t.add_column("Protocol key")
    t.add_column("Raw", justify="right")
    for key, raw in data.items():
        name = LIMIT_NAME.get(key, key)
        unit = LIMITS[name][1] if name in LIMITS else ""
        value = f"{fmt_u(raw)} {unit}" if isinstance(raw, int) and unit else str(raw)
        t.add_row(name, value, key, str(raw))
    return t


def reservoir(data: dict) -> str:
    return f"Reservoir loaded: {amount(data.get('reservoir_mU', 0))} ({data.get('reservoir_steps', 0)} steps)"


# ---- events -------------------------------------------------------------------------------------
def event_summary(name: str, d: dict) -> str:
    """One human line for an event's data; unknown events fall back to their raw fields."""
    if name == "boot":
        return f"pump started: version {d.get('version', '?')} on board {d.get('board', '?')}"
    if name == "state":
        return f"{d.get('state', '?')} ({d.get('reason', '?')})"
    if name == "bolus":
        phase = d.get("phase", "?")
        if phase == "started":
            return f"#{d.get('id', '?')} started: {amount(d.get('requested_mU', 0))} ({d.get('requested_steps', 0)} steps)"
        return f"{phase}: {bolus_line(d)}"
    if name == "basal":
        segs = d.get("segments") or []
        return "schedule " + ", ".join(f"{fmt_hhmm(s)}={fmt_u(r)}" for s, r in segs) + " U/h"
    if name == "alarm":
        text = f"{d.get('alarm', '?')} (priority {d.get('priority', '?')})"
        if d.get("detail"):
            text += f": {d['detail']}"
        return text
    return " ".join(f"{k}={v}" for k, v in d.items())


def event_line(name: str, seq: int, t: int, data: dict) -> str:
    return f"{hms(t):>9}  #{seq:<5} {name:<6} {event_summary(name, data)}"
