"""Human-readable views of pump replies and events for pumpctl (rich tables and one-line texts),
and the decoding of history records (shared by `history` and `history export`).

Everything shown as insulin is in units with 3 decimals (host.units.fmt_u); the protocol's
integers (mU, mU/h, steps) are never rounded on the way in, only formatted on the way out.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from rich.table import Table

from host.units import LIMITS, fmt_hhmm, fmt_u, pairs

DAY_MIN = 1440

LIMIT_NAME = {key: name for name, (key, _unit) in LIMITS.items()}
LIMIT_HELP = {
    "max_hour": "in any 60 minutes",
    "max_day": "in any 24 hours",
    "max_iob": "insulin on board (calculator)",
}

# History record types (firmware/basalt/core/history.py) and the codes inside them.
RECORD_NAMES = {
    1: "profile_select", 2: "profile_set", 3: "temp_start", 4: "temp_end", 5: "bolus_request",
    6: "bolus_done", 7: "bolus_cancel", 8: "limit_refused", 9: "prime", 10: "rewind", 11: "suspend",
    12: "resume", 13: "alarm", 14: "reservoir", 15: "time_set", 16: "limit_hold", 17: "alarm_clear",
    18: "backoff", 19: "boot", 20: "repair", 21: "bolus_interrupted", 22: "cgm", 23: "cgm_rejected",
}
RECORD_CODE = {name: code for code, name in RECORD_NAMES.items()}
SUSPEND_REASONS = ("boot", "user", "reservoir_empty", "fault", "reservoir")
ALARM_NAMES = ("", "reservoir_empty", "fault", "limit_hold", "settings_lost", "occlusion", "reservoir_low",
               "battery_low", "battery_depleted", "motor_fault", "reservoir_removed", "auto_off",
               "unexpected_restart", "bolus_interrupted", "cgm_signal_loss", "cgm_session_ended", "cgm_sensor_error",
               "glucose_low", "glucose_high")
RESET_CAUSES = ("", "power", "watchdog", "soft")  # boot record a
REPAIRS = ("", "torn last record dropped", "corrupt record skipped", "torn journal snapshot dropped",
           "corrupt journal snapshot skipped")  # repair record b
LIMIT_CODES = ("", "max_hour_mU", "max_day_mU", "max_bolus_mU", "max_basal_mUh", "max_iob_mU")


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


def _name(codes: tuple[str, ...], i: int) -> str:
    return codes[i] if 0 <= i < len(codes) and codes[i] else f"code {i}"


# ---- replies ------------------------------------------------------------------------------------
def ping(data: dict, rtt_ms: float) -> str:
    return (f"pong from {data.get('version', '?')}: uptime {hms(data.get('uptime_s', 0))}, "
            f"bad frames {data.get('frames_bad', 0)}, events dropped {data.get('events_dropped', 0)}, "
            f"round trip {rtt_ms:.1f} ms")


def bolus_line(b: dict) -> str:
    """A bolus report (started/running/cancelled/...) as one line."""
    text = (f"#{b.get('id', '?')} {fmt_u(b.get('delivered_mU', 0))} of {amount(b.get('requested_mU', 0))} delivered "
            f"({b.get('delivered_steps', 0)} of {b.get('requested_steps', 0)} steps)")
    if b.get("kind") == "extended":
        text = "extended " + text + f" over {b.get('minutes', '?')} min"
    return text


def temp_line(d: dict) -> str:
    """A temp basal (reply, status field or event) as one line."""
    what = f"{d.get('percent')}% of the profile" if d.get("percent", -1) >= 0 else amount(d.get("rate_mUh", 0), "U/h")
    phase = d.get("phase")
    text = f"Temp basal {what} for {d.get('minutes', '?')} min"
    if phase:
        text = f"{text}: {phase}"
    if "remaining_s" in d:
        text += f", {hms(d['remaining_s'])} left"
    if "delivered_mU" in d:
        text += f", delivered {amount(d['delivered_mU'])}"
    if d.get("replaced"):
        text += f" (replaced: {temp_line(d['replaced'])})"
    return text


def status(data: dict, fmt_local: Callable[[int], str] | None = None) -> Table:
    t = _kv_table("Pump status")
    state = data.get("state", "?")
    reason = data.get("reason")
    t.add_row("State", f"{state} ({reason})" if reason else state)
    if data.get("limit_hold"):
        t.add_row("LIMIT HOLD", "delivery is being withheld: an hourly or daily limit was reached")
    t.add_row("Profile", str(data.get("profile", "?")))
    t.add_row("Basal rate", amount(data.get("basal_mUh", 0), "U/h"))
    tb = data.get("temp_basal")
    t.add_row("Temp basal", temp_line(tb) if tb else "none")
    b = data.get("bolus")
    t.add_row("Running bolus", bolus_line(b) if b else "none")
    x = data.get("extended")
    t.add_row("Extended bolus", bolus_line(x) if x else "none")
    t.add_row("Reservoir", f"{amount(data.get('reservoir_mU', 0))} ({data.get('reservoir_steps', 0)} steps), "
                           f"{data.get('reservoir_state', '?')}")
    t.add_row("Delivered basal", amount(data.get("basal_delivered_mU", 0)))
    t.add_row("Delivered bolus", amount(data.get("bolus_delivered_mU", 0)))
    t.add_row("Delivered steps", str(data.get("delivered_steps", 0)))
    t.add_row("Last hour / 24 h", f"{amount(data.get('last_hour_mU', 0))} / {amount(data.get('last_day_mU', 0))}")
    t.add_row("Primed", f"{amount(data.get('prime_mU', 0))} ({data.get('prime_steps', 0)} steps)")
    t.add_row("Plunger", f"{data.get('plunger_steps', 0)} steps from home")
    if "local_s" in data and fmt_local:
        t.add_row("Pump clock", fmt_local(data["local_s"]).replace("T", " "))
    elif "minute_of_day" in data:
        t.add_row("Pump clock", fmt_hhmm(data["minute_of_day"]))
    t.add_row("Uptime", hms(data.get("uptime_s", 0)))
    t.add_row("History", f"newest record #{data.get('history_seq', 0)}")
    return t


def basal(segments: list[list[int]], current_muh: int | None = None, name: str | None = None) -> Table:
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
    title = f"Basal profile {name}" if name else "Basal schedule"
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    t.add_column("Start")
    t.add_column("End")
    t.add_column("U/h", justify="right")
    t.add_column("U in segment", justify="right")
    for r in rows:
        t.add_row(*r)
    return t


def profile_list(data: dict) -> Table:
    t = Table(title="Basal profiles", title_justify="left")
    t.add_column("Name")
    t.add_column("U per day", justify="right")
    t.add_column("Active")
    for p in data.get("profiles", []):
        t.add_row(p["name"], fmt_u(p.get("daily_mU", 0)), "yes" if p["name"] == data.get("active") else "")
    return t


def limits(data: dict) -> Table:
    t = Table(title="Therapy limits", title_justify="left")
    t.add_column("Limit")
    t.add_column("Value", justify="right")
    t.add_column("Protocol key")
    t.add_column("Raw", justify="right")
    order = [key for key, _unit in LIMITS.values()]
    for key in sorted(data, key=lambda k: order.index(k) if k in order else len(order)):
        raw = data[key]
        name = LIMIT_NAME.get(key, key)
        unit = LIMITS[name][1] if name in LIMITS else ""
        value = f"{fmt_u(raw)} {unit}" if isinstance(raw, int) and unit else str(raw)
        if name in LIMIT_HELP:
            value += f" ({LIMIT_HELP[name]})"
        t.add_row(name, value, key, str(raw))
    return t


def bolus_started(d: dict) -> str:
    if "kind" in d and d["kind"] in ("extended", "combo"):
        parts = []
        if d.get("normal"):
            n = d["normal"]
            parts.append(f"now {amount(n.get('requested_mU', 0))} ({n.get('requested_steps', 0)} steps)")
        x = d.get("extended") or {}
        parts.append(f"extended {amount(x.get('requested_mU', 0))} ({x.get('requested_steps', 0)} steps) "
                     f"over {x.get('minutes', '?')} min")
        return f"{d['kind'].capitalize()} bolus #{d.get('id', '?')} started: " + ", ".join(parts)
    return (f"Bolus #{d.get('id', '?')} started: {amount(d.get('requested_mU', 0))} "
            f"({d.get('requested_steps', 0)} steps)")


def bolus_cancelled(d: dict) -> str:
    lines = []
    for b in (d, d.get("extended")):
        if b:
            kind = b.get("kind", "normal")
            lines.append(f"{kind.capitalize()} bolus #{b.get('id', '?')} cancelled: delivered "
                         f"{amount(b.get('delivered_mU', 0))} of {amount(b.get('requested_mU', 0))} requested "
                         f"({b.get('delivered_steps', 0)} of {b.get('requested_steps', 0)} steps)")
    return "\n".join(lines)


def suspended(data: dict) -> str:
    text = "Suspended."
    if data.get("bolus_cancelled"):
        text += " Running bolus cancelled: " + bolus_line(data["bolus_cancelled"]) + "."
    if data.get("extended_cancelled"):
        text += " Extended bolus cancelled: " + bolus_line(data["extended_cancelled"]) + "."
    if data.get("temp_cancelled"):
        text += " " + temp_line(data["temp_cancelled"]) + "."
    return text


def reservoir(data: dict) -> str:
    """A reservoir workflow reply as one line."""
    st = data.get("state", "?")
    if "reservoir_mU" in data:
        return f"Reservoir {st}: {amount(data['reservoir_mU'])} ({data.get('reservoir_steps', 0)} steps)"
    if "primed_mU" in data:
        return f"Tubing {st}: {amount(data['primed_mU'])} ({data.get('primed_steps', 0)} steps)"
    if "cannula_mU" in data:
        return f"Cannula fill {st}: {amount(data['cannula_mU'])}"
    if "max_mU" in data:
        return f"Priming (stops by itself after {amount(data['max_mU'])}); run `pumpctl reservoir prime stop`"
    if "plunger_steps" in data:
        return f"Rewinding the plunger from {data['plunger_steps']} steps; wait for reservoir state 'rewound'"
    return f"Reservoir {st}"


def change_done(st: dict, resumed: bool) -> str:
    return (f"Reservoir change complete: {amount(st.get('reservoir_mU', 0))} ({st.get('reservoir_steps', 0)} steps) "
            f"left, pump {st.get('state', '?')}" + ("" if resumed else " (not resumed)"))


def _g_per_u(x10: int) -> str:
    return f"{Decimal(x10) / 10:g}"


def calc_settings(d: dict) -> Table:
    t = Table(title="Bolus calculator", title_justify="left",
              caption=f"insulin action {d.get('dia_min')} min, peak {d.get('peak_min')} min", caption_justify="left")
    t.add_column("Setting")
    t.add_column("From")
    t.add_column("Value", justify="right")
    for name, key, fmt in (("carb ratio", "cr", lambda e: f"{_g_per_u(e[1])} g/U"),
                           ("sensitivity", "isf", lambda e: f"{e[1]} mg/dL per U"),
                           ("target", "target", lambda e: f"{e[1]}-{e[2]} mg/dL")):
        for e in pairs(d.get(key, []), 3 if key == "target" else 2):
            t.add_row(name, fmt_hhmm(e[0]), fmt(e))
    return t


def _signed_u(mu: int) -> str:
    return ("-" if mu < 0 else "") + amount(abs(mu))


def calc_suggestion(d: dict, carbs: int, bg: int | None) -> Table:
    t = _kv_table("Bolus suggestion (nothing is delivered)")
    t.add_row("Carbs", f"{carbs} g / {_g_per_u(d.get('carb_ratio_g_per_U_x10', 0))} g/U = {amount(d.get('carbs_mU', 0))}")
    lo, hi = d.get("target_mgdl", [0, 0])
    if bg is None:
        t.add_row("Correction", f"{amount(0)} (no BG given)")
    else:
        t.add_row("Correction", f"BG {bg} vs target {lo}-{hi} mg/dL, ISF {d.get('isf_mgdl_per_U')} mg/dL/U: "
                                f"{_signed_u(d.get('correction_mU', 0))}")
    t.add_row("Insulin on board", f"-{amount(d.get('iob_mU', 0))}")
    t.add_row("Raw", _signed_u(d.get("raw_mU", 0)))
    capped = d.get("capped_by") or []
    t.add_row("Capped by", ", ".join(capped) if capped else "-")
    t.add_row("Suggested", f"{amount(d.get('suggested_mU', 0))} (rounded down to {amount(d.get('increment_mU', 0))})")
    return t


def clock(d: dict, fmt_local: Callable[[int], str]) -> str:
    text = f"Pump clock: {fmt_local(d['local_s']).replace('T', ' ')}"
    if "previous_s" in d:
        text += f" (was {fmt_local(d['previous_s']).replace('T', ' ')})"
    if "uptime_s" in d:
        text += f"; uptime {hms(d['uptime_s'])}"
    return text


# ---- history --------------------------------------------------------------------------------------
def _mu(steps: int, uu_per_step: int) -> int | str:
    """Steps -> mU, exactly: an int, or a decimal string when a step is not a whole mU."""
    q, r = divmod(steps * uu_per_step, 1000)
    return q if r == 0 else str(Decimal(steps * uu_per_step) / 1000)


def decode_record(rec: list[int], uu_per_step: int) -> dict:
    """[seq, t, type, a, b] -> a dict with the type's name, a/b raw, a_mU/b_mU where a or b is
    an amount of steps (None elsewhere) and a human `detail`."""
    seq, t, kind, a, b = rec
    name = RECORD_NAMES.get(kind, f"type_{kind}")
    a_mu = b_mu = None
    if kind == 2:
        b_mu = _mu(b, uu_per_step)
        detail = f"profile #{a} set, {b_mu} mU per day"
    elif kind == 1:
        detail = f"profile #{a} selected"
    elif kind == 3:
        detail = (f"{a}% of the profile" if a >= 0 else "absolute rate") + f" for {b} min"
    elif kind == 4:
        a_mu = _mu(a, uu_per_step)
        how = {1: "ended", 2: "cancelled", 3: "interrupted by a restart"}.get(b, f"how {b}")
        detail = f"{how}, {a_mu} mU delivered"
    elif kind == 5:
        a_mu, b_mu = _mu(a, uu_per_step), _mu(b, uu_per_step)
        detail = f"normal {a_mu} mU, extended {b_mu} mU"
    elif kind == 6:
        a_mu = _mu(a, uu_per_step)
        detail = f"{'normal' if b == 1 else 'extended'} bolus complete, {a_mu} mU"
    elif kind == 7:
        a_mu, b_mu = _mu(a, uu_per_step), _mu(abs(b), uu_per_step)
        detail = f"{'extended' if b < 0 else 'normal'} bolus cancelled, {a_mu} of {b_mu} mU delivered"
    elif kind == 8:
        lim = _name(LIMIT_CODES, a)
        if a == 4:
            detail = f"{lim}: {b} mU/h asked"
        else:  # 1/2: the worst 60-min / 24-h window it could have led to; 3: the bolus asked
            b_mu = b
            detail = f"{lim}: {'could reach' if a in (1, 2) else 'asked'} {b} mU"
    elif kind == 9:
        a_mu = _mu(a, uu_per_step)
        detail = f"{'tubing' if b == 1 else 'cannula' if b == 2 else f'kind {b}'} primed, {a_mu} mU"
    elif kind == 10:
        a_mu = _mu(a, uu_per_step)
        detail = f"plunger rewound {a} steps"
    elif kind == 11:
        detail = f"suspended ({_name(SUSPEND_REASONS, a)})"
    elif kind == 12:
        detail = "resumed"
    elif kind == 13:
        detail = f"alarm {_name(ALARM_NAMES, a)}"
    elif kind == 14:
        a_mu = _mu(a, uu_per_step)
        detail = f"reservoir inserted, {a_mu} mU"
    elif kind == 15:
        # seconds since 2000-01-01 local (time_set accepts up to 2^31-1, so they fit the record)
        detail = f"clock set to local_s {a} (was {b})"
    elif kind == 16:
        a_mu = _mu(a, uu_per_step)
        detail = f"delivery backstop withheld {a_mu} mU"
    elif kind == 17:
        detail = f"alarm {_name(ALARM_NAMES, a)} {'acknowledged' if b == 1 else 'cleared'}"
    elif kind == 18:
        a_mu = _mu(a, uu_per_step)
        detail = f"plunger backed off {a} steps to relieve an occlusion"
    elif kind == 19:
        detail = f"started after a {_name(RESET_CAUSES, a)} reset, " + \
            ("clean shutdown before" if b == 1 else "previous shutdown NOT clean")
    elif kind == 20:
        detail = f"record #{a}: {_name(REPAIRS, b)}" if b in (1, 2) else f"journal snapshot #{a}: {_name(REPAIRS, b)}"
    elif kind == 21:
        a_mu, b_mu = _mu(a, uu_per_step), _mu(abs(b), uu_per_step)
        detail = f"{'extended' if b < 0 else 'normal'} bolus interrupted by a restart, {a_mu} of {b_mu} mU delivered"
    else:
        detail = ""
    return {"seq": seq, "uptime_s": t, "type": kind, "name": name, "a": a, "b": b,
            "a_mU": a_mu, "b_mU": b_mu, "detail": detail}


def history(rows: list[dict], meta: dict) -> Table:
    caption = f"records {meta.get('oldest')}..{meta.get('newest')} kept; next --since {meta.get('next')}"
    if meta.get("first_since", 0) + 1 < meta.get("oldest", 1):
        caption += f"; records {meta['first_since'] + 1}..{meta['oldest'] - 1} are gone from the pump"
    if meta.get("skipped_corrupt"):
        caption += f"; corrupt in the pump's flash, skipped: {', '.join(map(str, meta['skipped_corrupt']))}"
    t = Table(title="History", caption=caption, title_justify="left", caption_justify="left")
    for col in ("Seq", "Uptime", "Type", "Detail"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["seq"]), hms(r["uptime_s"]), r["name"], r["detail"])
    return t


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
            kind = "extended " if d.get("kind") == "extended" else ""
            return (f"#{d.get('id', '?')} {kind}started: {amount(d.get('requested_mU', 0))} "
                    f"({d.get('requested_steps', 0)} steps)")
        return f"{phase}: {bolus_line(d)}"
    if name == "basal":
        if d.get("active"):
            return f"profile {d.get('profile', '?')} selected"
        return f"profile {d.get('profile', '?')} set: {amount(d.get('daily_mU', 0))} per day"
    if name == "temp_basal":
        return temp_line(d)
    if name == "reservoir":
        return reservoir(d) if set(d) & {"reservoir_mU", "primed_mU", "cannula_mU"} else \
            " ".join(f"{k}={v}" for k, v in d.items())
    if name == "time":
        return f"clock set: local_s {d.get('local_s')} (was {d.get('previous_s')})"
    if name == "alarm":
        text = f"{d.get('alarm', '?')} (priority {d.get('priority', '?')})"
        if d.get("detail"):
            text += f": {d['detail']}"
        return text
    return " ".join(f"{k}={v}" for k, v in d.items())


def event_line(name: str, seq: int, t: int, data: dict) -> str:
    return f"{hms(t):>9}  #{seq:<5} {name:<10} {event_summary(name, data)}"
