"""pumpctl: control a Basalt pump from the command line over its console protocol.

    pumpctl --port socket://127.0.0.1:7000 status
    pumpctl --port /dev/ttyUSB0 reservoir change 200 --prime-seconds 5
    pumpctl --port /dev/ttyUSB0 bolus 2.5 --ext 1 --minutes 60
    BASALT_PORT=rfc2217://rig:4000 pumpctl --json events --count 10

--port takes any pyserial URL (default: $BASALT_PORT). Amounts are typed and shown in units
(U, U/h, U/min) and converted to the protocol's integer milliunits exactly; an amount that
needs more precision than 0.001 U is refused here, before anything is sent. Times of day are
HH:MM; the pump clock is set and shown as local YYYY-MM-DDTHH:MM[:SS] (no time zones).

Exit status: 0 done; 2 refused (by the pump - its error code and message go to stderr - or by
pumpctl's own checks before sending, e.g. a bad unit string or no port); 3 transport problem
(cannot open the port, no reply, connection lost, or the pump did not reach a workflow stage
in time); 130 interrupted.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import serial
from basalt.proto.frame import MAX_FRAME
from rich.console import Console

from host import render
from host.client import PumpClient, PumpError, frame
from host.units import UnitError, pairs, parse_hhmm, parse_segments, to_mu

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_TRANSPORT = 3
EXIT_INTERRUPTED = 130

EPOCH = datetime(2000, 1, 1)  # the pump's local_s counts seconds from here (local time)
MAX_LOCAL_S = 0x7FFFFFFF  # time_set's accepted range (its history record is int32: until 2068)
HISTORY_PAGE = 32  # the most records one `history` request returns


class LocalError(Exception):
    """Refused by pumpctl itself before anything was sent (exit 2)."""


class TransportError(Exception):
    """The pump could not be reached or stopped answering (exit 3)."""


# ---- argument conversion (all of it happens before the port is opened) -------------------------
def units_arg(text: str, what: str) -> int:
    try:
        return to_mu(text, what)
    except UnitError as e:
        raise LocalError(str(e)) from None


def segments_arg(items: list[str]) -> list[int]:
    try:
        return parse_segments(items)
    except UnitError as e:
        raise LocalError(str(e)) from None


def limit_changes(items: list[str]) -> dict[str, int]:
    """['max_bolus=10', 'bolus_speed=1.5'] -> {'max_bolus_mU': 10000, 'bolus_speed_mU_min': 1500}.
    Friendly names take units (U, U/h, U/min); protocol keys (max_bolus_mU=...) take raw integers."""
    out: dict[str, int] = {}
    keys = {key for key, _unit in render.LIMITS.values()}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise LocalError(f"limit {item!r} is not NAME=VALUE")
        if name in render.LIMITS:
            key, unit = render.LIMITS[name]
            mu = units_arg(value, f"{name} ({unit})")
        elif name in keys:
            key = name
            try:
                mu = int(value.strip(), 10)
            except ValueError:
                raise LocalError(f"{name} {value!r} must be an integer (it is a raw protocol value)") from None
        else:
            raise LocalError(f"unknown limit {name!r}; known: {', '.join(render.LIMITS)}")
        if key in out:
            raise LocalError(f"limit {name!r} given twice")
        out[key] = mu
    return out


def _schedule_items(items: list[str] | None, what: str, value: Callable[[str], list[int]]) -> list[int]:
    """['00:00=10', '12:00=12.5'] -> the protocol's flat schedule [0, 100, 720, 125]."""
    if not items:
        raise LocalError(f"--{what} needs at least one HH:MM=VALUE")
    out: list[int] = []
    for item in items:
        t, sep, v = item.partition("=")
        if not sep or not v.strip():
            raise LocalError(f"--{what} {item!r} is not HH:MM=VALUE")
        try:
            out += [parse_hhmm(t), *value(v.strip())]
        except UnitError as e:
            raise LocalError(f"--{what} {item!r}: {e}") from None
    return out


def _carb_ratio(text: str) -> list[int]:
    """'12.5' g/U -> [125] (the protocol's tenths of a gram per unit), exactly."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise UnitError(f"{text!r} is not a number of grams per unit") from None
    x10 = d * 10
    if not d.is_finite() or d <= 0 or x10 != x10.to_integral_value():
        raise UnitError(f"{text!r} must be a positive number of g/U with at most one decimal")
    return [int(x10)]


def _mgdl(text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise UnitError(f"{text!r} is not a whole number of mg/dL") from None
    if v <= 0:
        raise UnitError(f"{text!r} must be positive")
    return v


def _target(text: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    if not sep:
        raise UnitError(f"target {text!r} is not LO-HI (mg/dL)")
    return [_mgdl(lo), _mgdl(hi)]


def local_s_arg(text: str) -> int:
    """'2024-03-05T07:30[:15]' (local time) -> seconds since 2000-01-01 00:00."""
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            dt = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        raise LocalError(f"time {text!r} is not YYYY-MM-DDTHH:MM[:SS]")
    s = (dt - EPOCH) // timedelta(seconds=1)
    if not 0 <= s <= MAX_LOCAL_S:
        raise LocalError(f"time {text!r} is outside the pump's range (2000-01-01 .. {fmt_local(MAX_LOCAL_S)})")
    return s


def fmt_local(local_s: int) -> str:
    return (EPOCH + timedelta(seconds=local_s)).isoformat(timespec="seconds")


def minutes_arg(value: int | None, lo: int, hi: int, what: str = "--minutes") -> int:
    if value is None:
        raise LocalError(f"{what} is required")
    if not lo <= value <= hi or value % 15:
        raise LocalError(f"{what} must be {lo}..{hi} in steps of 15, got {value}")
    return value


def history_type(name: str | None) -> int:
    if name is None:
        return 0
    code = render.RECORD_CODE.get(name)
    if code is None:
        try:
            code = int(name)
        except ValueError:
            raise LocalError(f"unknown record type {name!r}; known: {', '.join(render.RECORD_CODE)}") from None
        if not 1 <= code <= 255:
            raise LocalError(f"record type {name!r} must be 1..255")
    return code


# ---- output -------------------------------------------------------------------------------------
class Out:
    def __init__(self, as_json: bool):
        self.json = as_json
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True)

    def doc(self, data) -> None:
        print(json.dumps(data, separators=(",", ":")), flush=True)

    def show(self, data, human) -> None:
        if self.json:
            self.doc(data)
        else:
            self.console.print(human)

    def note(self, text: str) -> None:
        """Progress of a multi-step command (human mode only; --json prints one document)."""
        if not self.json:
            self.console.print(text, markup=False)


def _err(msg: str) -> None:
    print(f"pumpctl: {msg}", file=sys.stderr, flush=True)


# ---- talking to the pump ------------------------------------------------------------------------
class Session:
    """One connection for one pumpctl run: requests with transport errors mapped to exit 3."""

    def __init__(self, pump: PumpClient, a: argparse.Namespace):
        self.pump = pump
        self.a = a
        self.rtt_ms = 0.0

    def req(self, cmd: str, args: dict | None = None) -> dict:
        t0 = time.monotonic()
        try:
            data = self.pump.request(cmd, args or {})
        except TimeoutError:
            raise TransportError(f"no reply from the pump at {self.a.port} to {cmd!r} "
                                 f"({self.pump.retries + 1} tries, {self.a.timeout:g} s each)") from None
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"lost the connection to {self.a.port}: {e}") from None
        self.rtt_ms = (time.monotonic() - t0) * 1000
        return data

    def wait_status(self, pred: Callable[[dict], bool], what: str, timeout_s: float) -> dict:
        """Poll status until pred holds; TransportError after timeout_s seconds (wall clock)."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.req("status")
            if pred(st):
                return st
            if time.monotonic() >= deadline:
                raise TransportError(f"the pump did not reach {what} within {timeout_s:g} s "
                                     f"(reservoir {st.get('reservoir_state')}, uptime {st.get('uptime_s')} s)")
            time.sleep(0.05)


def check_frame_size(cmd: str, args: dict) -> None:
    """Refuse locally a request the pump would discard as too long (it could not answer its id)."""
    body = {"id": 65535, "cmd": cmd}
    if args:
        body["args"] = args
    n = len(frame(body))
    if n > MAX_FRAME:
        raise LocalError(f"the request would be {n} bytes, above the pump's {MAX_FRAME}-byte frame limit; "
                         "use fewer segments or entries")


Action = Callable[[Session, Out], None]


def single(cmd: str, args: dict, show: Callable[[dict, Session], object]) -> Action:
    """An action that sends one request and shows its reply (human view from show())."""
    check_frame_size(cmd, args)

    def act(s: Session, out: Out) -> None:
        data = s.req(cmd, args)
        out.show(data, show(data, s))
    return act


# ---- multi-step actions -------------------------------------------------------------------------
def reservoir_change(a: argparse.Namespace) -> Action:
    mu = units_arg(a.units, "reservoir")
    fill = None if a.fill is None else units_arg(a.fill, "cannula fill")
    if a.prime_seconds < 0:
        raise LocalError("--prime-seconds must not be negative")
    if a.wait_timeout <= 0:
        raise LocalError("--wait-timeout must be positive")

    def act(s: Session, out: Out) -> None:
        done: dict[str, object] = {}
        st = s.req("status")
        if st["state"] == "running":
            done["suspend"] = s.req("suspend")
            out.note("Suspended.")
        done["rewind"] = s.req("rewind")
        out.note("Rewinding...")
        s.wait_status(lambda st: st["reservoir_state"] == "rewound", "'rewound'", a.wait_timeout)
        done["insert"] = s.req("reservoir_insert", {"mU": mu})
        out.note(render.reservoir(done["insert"]))
        s.req("prime_start")
        u0 = s.req("status")["uptime_s"]
        out.note(f"Priming for {a.prime_seconds} s...")
        st = s.wait_status(lambda st: st["reservoir_state"] != "priming" or st["uptime_s"] >= u0 + a.prime_seconds,
                           "the end of priming", a.wait_timeout + a.prime_seconds)
        if st["reservoir_state"] == "priming":
            done["prime"] = s.req("prime_stop")
        else:  # the pump stopped priming by itself (its 30 U safety stop, or the reservoir ran out)
            done["prime"] = {"state": st["reservoir_state"]}
        out.note(render.reservoir(done["prime"]))
        done["fill"] = s.req("cannula_fill", {} if fill is None else {"mU": fill})
        out.note(render.reservoir(done["fill"]))
        st = s.wait_status(lambda st: st["reservoir_state"] in ("ready", "primed"), "'ready'", a.wait_timeout)
        if st["reservoir_state"] != "ready":
            raise PumpError("reservoir", "the cannula fill stopped early (reservoir empty?); status: primed")
        if a.resume:
            done["resume"] = s.req("resume")
        done["status"] = s.req("status")
        out.show(done, render.change_done(done["status"], a.resume))
    return act


def fetch_history(s: Session, since: int, kind: int, total: int | None) -> tuple[list[list[int]], dict]:
    """Records after `since` (of type kind, 0 = all), paging with since/next; at most `total`."""
    records: list[list[int]] = []
    meta: dict = {}
    while True:
        want = HISTORY_PAGE if total is None else min(HISTORY_PAGE, total - len(records))
        args = {"since": since, "limit": want}
        if kind:
            args["type"] = kind
        d = s.req("history", args)
        if not meta:
            meta = {k: v for k, v in d.items() if k != "records"}
            meta["first_since"] = since
        records.extend(d["records"])
        meta.update(next=d["next"], newest=d["newest"], oldest=d["oldest"], uu_per_step=d["uu_per_step"])
        if d["next"] >= d["newest"] or d["next"] <= since or (total is not None and len(records) >= total):
            return records, meta
        since = d["next"]


def history_action(a: argparse.Namespace) -> Action:
    kind = history_type(a.type)
    if a.since < 0:
        raise LocalError("--since must not be negative")
    if getattr(a, "history_cmd", None) == "export":
        return history_export(a, kind)
    if a.limit is not None and a.limit < 1:
        raise LocalError("--limit must be at least 1")
    total = None if a.all else (a.limit or 16)

    def act(s: Session, out: Out) -> None:
        recs, meta = fetch_history(s, a.since, kind, total)
        rows = [render.decode_record(r, meta["uu_per_step"]) for r in recs]
        out.show({"records": rows, "next": meta["next"], "newest": meta["newest"], "oldest": meta["oldest"],
                  "uu_per_step": meta["uu_per_step"]}, render.history(rows, meta))
    return act


EXPORT_FIELDS = ["seq", "uptime_s", "type", "name", "a", "b", "a_mU", "b_mU", "detail"]


def history_export(a: argparse.Namespace, kind: int) -> Action:
    def act(s: Session, out: Out) -> None:
        recs, meta = fetch_history(s, a.since, kind, None)
        rows = [render.decode_record(r, meta["uu_per_step"]) for r in recs]
        if a.format == "json":
            text = json.dumps({"uu_per_step": meta["uu_per_step"], "oldest": meta["oldest"],
                               "newest": meta["newest"], "records": rows}, indent=1) + "\n"
        else:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r[k]) for k in EXPORT_FIELDS})
            text = buf.getvalue()
        if a.output and a.output != "-":
            with open(a.output, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"pumpctl: wrote {len(rows)} record(s) to {a.output}", file=sys.stderr, flush=True)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    return act


def profile_set(cmd: str, args: dict) -> Action:
    """profile_set/basal_set; the reply does not echo the segments, so the human view reads the
    profile back with profile_get."""
    check_frame_size(cmd, args)

    def act(s: Session, out: Out) -> None:
        data = s.req(cmd, args)
        if out.json:
            out.doc(data)
            return
        got = s.req("profile_get", {"name": data["name"]})
        out.show(data, render.basal(pairs(got["segments"]), None,
                                    data["name"] + (" (active)" if data.get("active") else "") + " saved"))
    return act


def calc_set(a: argparse.Namespace) -> Action:
    """calc_set with the schedules given (the first set-up needs all three; later any subset).
    When they do not fit one frame together, each schedule goes in its own calc_set (not atomic:
    a refusal of a later part leaves the earlier ones applied). Shows the settings read back."""
    parts: list[dict] = []
    for key, value in (("cr", _carb_ratio), ("isf", lambda v: [_mgdl(v)]), ("target", _target)):
        items = getattr(a, key)
        if items is not None:
            parts.append({key: _schedule_items(items, key, value)})
    extra = {k: v for k, v in (("dia_min", a.dia), ("peak_min", a.peak)) if v is not None}
    if not parts and not extra:
        raise LocalError("give at least one of --cr, --isf, --target, --dia, --peak")
    whole = dict(extra)
    for p in parts:
        whole.update(p)
    try:
        check_frame_size("calc_set", whole)
        requests = [whole]
    except LocalError:
        requests = [dict(parts[0], **extra)] + parts[1:]
        for r in requests:
            check_frame_size("calc_set", r)

    def act(s: Session, out: Out) -> None:
        for r in requests:
            s.req("calc_set", r)
        cfg = read_calc(s)
        out.show(cfg, render.calc_settings(cfg))
    return act


def read_calc(s: Session) -> dict:
    """calc_get answers a summary, and each schedule on its own request (small replies for the
    pump's heap): assemble the whole settings."""
    cfg = s.req("calc_get")
    for k in ("cr", "isf", "target"):
        cfg[k] = s.req("calc_get", {"schedule": k})[k]
    return cfg


def calc_show(a: argparse.Namespace) -> Action:
    def act(s: Session, out: Out) -> None:
        cfg = read_calc(s)
        out.show(cfg, render.calc_settings(cfg))
    return act


def calc_suggest(a: argparse.Namespace) -> Action:
    if a.carbs is None:
        raise LocalError("--carbs is required")
    args = {"carbs_g": a.carbs}
    if a.bg is not None:
        args["bg_mgdl"] = a.bg
    return single("bolus_calc", args, lambda d, s: render.calc_suggestion(d, a.carbs, a.bg))


# ---- command -> action ----------------------------------------------------------------------------
def _lit(text):
    return lambda d, s: text


def prepare(a: argparse.Namespace) -> None:
    """Validate and convert the command's arguments into a.action (nothing is sent here)."""
    c = a.command
    if c == "basal":
        if a.basal_cmd == "show":
            a.action = single("basal_get", {}, lambda d, s: render.basal(pairs(d.get("segments", [])), d.get("basal_mUh"),
                                                                          d.get("profile")))
        else:
            a.action = profile_set("basal_set", {"segments": segments_arg(a.segments)})
    elif c == "profile":
        pc = a.profile_cmd
        if pc == "list":
            a.action = single("profile_list", {}, lambda d, s: render.profile_list(d))
        elif pc == "show":
            a.action = single("profile_get", {"name": a.name},
                              lambda d, s: render.basal(pairs(d["segments"]), None,
                                                        d["name"] + (" (active)" if d.get("active") else "")))
        elif pc == "set":
            a.action = profile_set("profile_set", {"name": a.name, "segments": segments_arg(a.segments)})
        elif pc == "select":
            a.action = single("profile_select", {"name": a.name}, lambda d, s: f"Active profile: {d.get('active')}")
        else:
            a.action = single("profile_delete", {"name": a.name},
                              lambda d, s: "Deleted. Profiles: " + ", ".join(d.get("profiles", [])))
    elif c == "temp":
        if a.temp_cmd == "cancel":
            a.action = single("temp_basal_cancel", {}, lambda d, s: render.temp_line(d))
        else:
            minutes = minutes_arg(a.minutes, 15, 1440)
            if a.percent is not None:
                if not 0 <= a.percent <= 250:
                    raise LocalError(f"--percent must be 0..250, got {a.percent}")
                args = {"percent": a.percent, "minutes": minutes}
            else:
                args = {"rate_mUh": units_arg(a.rate, "rate (U/h)"), "minutes": minutes}
            a.action = single("temp_basal", args, lambda d, s: render.temp_line(d))
    elif c == "bolus":
        now = units_arg(a.units, "bolus")
        args = {"mU": now} if now else {}
        if a.ext is not None:
            args["ext_mU"] = units_arg(a.ext, "extended bolus")
            args["minutes"] = minutes_arg(a.minutes, 30, 480)
        elif a.minutes is not None:
            raise LocalError("--minutes needs --ext")
        if not now and not args.get("ext_mU"):
            raise LocalError("a bolus must be more than 0 U")
        a.action = single("bolus", args, lambda d, s: render.bolus_started(d))
    elif c == "cancel":
        a.action = single("bolus_cancel", {"kind": a.kind}, lambda d, s: render.bolus_cancelled(d))
    elif c == "reservoir":
        rc = a.reservoir_cmd
        if rc == "change":
            a.action = reservoir_change(a)
        elif rc == "rewind":
            a.action = single("rewind", {}, lambda d, s: render.reservoir(d))
        elif rc == "insert":
            a.action = single("reservoir_insert", {"mU": units_arg(a.units, "reservoir")},
                              lambda d, s: render.reservoir(d))
        elif rc == "prime":
            a.action = single("prime_start" if a.prime_cmd == "start" else "prime_stop", {},
                              lambda d, s: render.reservoir(d))
        else:  # fill
            args = {} if a.units is None else {"mU": units_arg(a.units, "cannula fill")}
            a.action = single("cannula_fill", args, lambda d, s: render.reservoir(d))
    elif c == "calc":
        cc = a.calc_cmd
        if cc == "show":
            a.action = calc_show(a)
        elif cc == "suggest":
            a.action = calc_suggest(a)
        else:
            a.action = calc_set(a)
    elif c == "time":
        if a.time_cmd == "show":
            a.action = single("time_get", {}, lambda d, s: render.clock(d, fmt_local))
        else:
            a.action = single("time_set", {"local_s": local_s_arg(a.when)}, lambda d, s: render.clock(d, fmt_local))
    elif c == "history":
        a.action = history_action(a)
    elif c == "limits":
        if a.limits_cmd == "show":
            a.action = single("limits_get", {}, lambda d, s: render.limits(d))
        else:
            a.action = single("limits_set", limit_changes(a.changes), lambda d, s: render.limits(d))
    elif c == "events":
        if a.count is not None and a.count < 1:
            raise LocalError("--count must be at least 1")
        if a.for_s is not None and a.for_s < 0:
            raise LocalError("--for must not be negative")
        a.action = events_action(a)
    elif c == "status":
        a.action = single("status", {}, lambda d, s: render.status(d, fmt_local))
    elif c == "ping":
        a.action = single("ping", {}, lambda d, s: render.ping(d, s.rtt_ms))
    elif c == "suspend":
        a.action = single("suspend", {}, lambda d, s: render.suspended(d))
    elif c == "resume":
        a.action = single("resume", {}, lambda d, s: f"Pump is {d.get('state', '?')}.")
    else:  # pragma: no cover - argparse only lets known commands through
        raise LocalError(f"unknown command {c!r}")


def events_action(a: argparse.Namespace) -> Action:
    def act(s: Session, out: Out) -> None:
        s.req("ping")  # proves the link before we promise to follow it
        follow_events(s.pump, a, out)
    return act


def follow_events(pump: PumpClient, a: argparse.Namespace, out: Out) -> None:
    print(f"pumpctl: following events from {a.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    deadline = None if a.for_s is None else time.monotonic() + a.for_s
    n = 0
    last_seq = None
    while a.count is None or n < a.count:
        wait = 0.25
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = min(wait, left)
        ev = pump.next_event(timeout=wait)
        if ev is None:
            if pump._closed:  # the reader thread saw the connection end
                raise TransportError(f"connection to {a.port} closed")
            continue
        if last_seq is not None and ev.seq != last_seq + 1 and ev.seq > 1:
            print(f"pumpctl: {ev.seq - last_seq - 1} event(s) lost (seq {last_seq} -> {ev.seq})",
                  file=sys.stderr, flush=True)
        last_seq = ev.seq
        if out.json:
            out.doc({"ev": ev.name, "seq": ev.seq, "t": ev.t, "data": ev.data})
        else:
            out.console.print(render.event_line(ev.name, ev.seq, ev.t, ev.data), markup=False)
        n += 1


# ---- the parser ---------------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _globals(p: argparse.ArgumentParser, sub: bool) -> None:
    # Accepted before or after the subcommand; the subcommand's copy never overrides a default.
    d: Callable[[object], object] = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument("--port", default=d(None), metavar="URL",
                   help="pyserial URL: /dev/ttyUSB0, socket://HOST:PORT, rfc2217://HOST:PORT (default: $BASALT_PORT)")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print machine-readable JSON (one document per command; one per line for events)")
    p.add_argument("--timeout", type=_positive_float, default=d(2.0), metavar="SECONDS",
                   help="seconds to wait for each reply before retransmitting (default 2)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pumpctl", description="Control a Basalt pump over its console protocol.",
                                epilog="Exit status: 0 ok, 2 refused (pump or local check), 3 transport problem.")
    _globals(p, sub=False)
    common = argparse.ArgumentParser(add_help=False)
    _globals(common, sub=True)
    sp = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, parent=sp) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, parents=[common])

    def group(parser: argparse.ArgumentParser, dest: str, metavar: str, required: bool = True):
        return parser.add_subparsers(dest=dest, metavar=metavar, required=required)

    add("ping", "check that the pump answers; show its version and link counters")
    add("status", "state, basal, temp basal, boluses, reservoir, totals, clock")

    basal = add("basal", "show or set the active basal profile")
    bsp = group(basal, "basal_cmd", "show|set")
    add("show", "show the active profile", bsp)
    bset = add("set", "replace the active profile: HH:MM=U/h ...; starts on 30-minute boundaries, first 00:00", bsp)
    bset.add_argument("segments", nargs="+", metavar="HH:MM=RATE", help="segment start and rate in U/h, e.g. 06:30=1.25")

    prof = add("profile", "named basal profiles (up to 6)")
    psp = group(prof, "profile_cmd", "list|show|set|select|delete")
    add("list", "list the profiles, their daily totals and the active one", psp)
    for name, text in (("show", "show a profile's segments"), ("select", "make a profile the active one"),
                       ("delete", "delete a profile (not the active one)")):
        add(name, text, psp).add_argument("name", metavar="NAME")
    pset = add("set", "create or replace a profile: NAME HH:MM=U/h ...", psp)
    pset.add_argument("name", metavar="NAME", help="1..16 letters, digits, _ or -")
    pset.add_argument("segments", nargs="+", metavar="HH:MM=RATE")

    temp = add("temp", "temporary basal rate")
    tsp = group(temp, "temp_cmd", "set|cancel")
    tset = add("set", "start (or replace) a temp basal", tsp)
    how = tset.add_mutually_exclusive_group(required=True)
    how.add_argument("--percent", type=int, metavar="P", help="percent of the profile, 0..250")
    how.add_argument("--rate", metavar="U/h", help="absolute rate in U/h")
    tset.add_argument("--minutes", type=int, required=True, metavar="M", help="15..1440 in steps of 15")
    add("cancel", "cancel the running temp basal", tsp)

    bolus = add("bolus", "start a normal, extended or combo bolus")
    bolus.add_argument("units", metavar="UNITS", help="amount now in units, e.g. 2.5 (0 with --ext: extended only)")
    bolus.add_argument("--ext", metavar="UNITS", help="extended part in units, delivered evenly over --minutes")
    bolus.add_argument("--minutes", type=int, metavar="M", help="extended duration: 30..480 in steps of 15")
    cancel = add("cancel", "cancel running bolus(es) and report exactly what was delivered")
    cancel.add_argument("--kind", choices=("normal", "extended", "all"), default="all")
    add("suspend", "stop all delivery (cancels boluses and the temp basal)")
    add("resume", "resume delivery (after a completed reservoir change)")

    res = add("reservoir", "the reservoir change workflow, step by step or whole")
    rsp = group(res, "reservoir_cmd", "rewind|insert|prime|fill|change")
    add("rewind", "retract the plunger (pump suspended)", rsp)
    add("insert", "record the new reservoir's content", rsp).add_argument(
        "units", metavar="UNITS", help="insulin in the new reservoir, in units, e.g. 200")
    prime = add("prime", "prime the tubing: start, then stop when insulin drips", rsp)
    prime.add_argument("prime_cmd", choices=("start", "stop"))
    add("fill", "fill the cannula (default 0.3 U; 0 for a steel cannula)", rsp).add_argument(
        "units", nargs="?", metavar="UNITS")
    change = add("change", "the whole change: suspend, rewind, insert, prime, fill, resume", rsp)
    change.add_argument("units", metavar="UNITS", help="insulin in the new reservoir, in units")
    change.add_argument("--prime-seconds", type=int, default=0, metavar="S",
                        help="seconds of pump time to prime the tubing (default 0)")
    change.add_argument("--fill", metavar="UNITS", help="cannula fill in units (default: the pump's 0.3 U)")
    change.add_argument("--no-resume", dest="resume", action="store_false", help="stay suspended at the end")
    change.add_argument("--wait-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="give up when a stage takes longer than this (wall clock, default 300)")

    calc = add("calc", "the bolus calculator (suggestions only; it never delivers)")
    csp = group(calc, "calc_cmd", "set|show|suggest")
    add("show", "show the calculator settings", csp)
    cset = add("set", "replace the calculator settings", csp)
    cset.add_argument("--cr", nargs="+", metavar="HH:MM=G_PER_U", help="carb ratio schedule, g per U (0.1 g)")
    cset.add_argument("--isf", nargs="+", metavar="HH:MM=MGDL", help="sensitivity schedule, mg/dL per U")
    cset.add_argument("--target", nargs="+", metavar="HH:MM=LO-HI", help="target range schedule, mg/dL")
    cset.add_argument("--dia", type=int, metavar="MIN", help="duration of insulin action, 180..480 min (default 300)")
    cset.add_argument("--peak", type=int, metavar="MIN", help="insulin activity peak, 35..120 min (default 75)")
    sug = add("suggest", "suggest a bolus for a meal and/or a glucose reading", csp)
    sug.add_argument("--carbs", type=int, metavar="G", help="carbohydrates in grams, 0..300")
    sug.add_argument("--bg", type=int, metavar="MGDL", help="blood glucose, mg/dL (40..600)")

    tm = add("time", "the pump clock (local time)")
    tmsp = group(tm, "time_cmd", "show|set")
    add("show", "show the pump's local time", tmsp)
    add("set", "set the pump's local time", tmsp).add_argument("when", metavar="YYYY-MM-DDTHH:MM[:SS]")

    hist = add("history", "the pump's event history (newest 32 records are kept)")
    hist.add_argument("--since", type=int, default=0, metavar="SEQ", help="records after this sequence number")
    hist.add_argument("--type", metavar="NAME", help="only this record type: " + ", ".join(render.RECORD_CODE))
    hist.add_argument("--limit", type=int, metavar="N", help="at most N records (default 16)")
    hist.add_argument("--all", action="store_true", help="every record after --since")
    hsp = group(hist, "history_cmd", "export", required=False)
    exp = add("export", "write every record as CSV or JSON, amounts decoded to mU", hsp)
    exp.add_argument("--since", type=int, default=argparse.SUPPRESS, metavar="SEQ", help="records after this one")
    exp.add_argument("--type", default=argparse.SUPPRESS, metavar="NAME", help="only this record type")
    exp.add_argument("--format", choices=("csv", "json"), default="csv")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")

    lim = add("limits", "show or set the therapy limits")
    lsp = group(lim, "limits_cmd", "show|set")
    add("show", "show the limits", lsp)
    lset = add("set", "change limits atomically", lsp)
    lset.description = ("Names: max_bolus (U), max_basal (U/h), max_hour (U in any 60 min), max_day (U in any "
                        "24 h), max_iob (U on board, calculator), bolus_speed (U/min), bolus_increment (U); "
                        "protocol keys such as max_bolus_mU=10000 take raw integers.")
    lset.add_argument("changes", nargs="+", metavar="NAME=VALUE", help="e.g. max_bolus=10 max_hour=15")

    ev = add("events", "follow the live event stream (until Ctrl-C, --count or --for)")
    ev.add_argument("--count", type=int, default=None, metavar="N", help="stop after N events")
    ev.add_argument("--for", dest="for_s", type=float, default=None, metavar="SECONDS",
                    help="stop after this many seconds")

    from host import cgm  # `pumpctl cgm scan|watch`: Bluetooth CGM sensors via bleak (host/cgm.py)
    cgm.add_parser(sp, add, group)
    return p


# ---- main ---------------------------------------------------------------------------------------
def open_client(url: str, timeout: float) -> PumpClient:
    try:
        pump = PumpClient(url, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        text = str(e)
        raise TransportError(text if url in text else f"cannot open port {url}: {text}") from None
    # The pump replays its cached reply to a request whose id and body match one of its last 3
    # (within 30 s), across reconnections too. PumpClient numbers from 1 on every connection, so
    # two quick runs of `pumpctl bolus 1` would both send {"id":1,...}: the second would get the
    # first's reply replayed and nothing delivered. Start each run at a random id instead.
    pump._next_id = secrets.randbelow(65535)
    return pump


def run(a: argparse.Namespace, out: Out) -> int:
    if a.command == "cgm":  # no pump port: talks Bluetooth (host/cgm.py)
        from host import cgm
        try:
            cgm.run(a, out)
        except ValueError as e:
            raise LocalError(str(e)) from None
        except cgm.CgmError as e:
            raise TransportError(str(e)) from None
        return EXIT_OK
    prepare(a)  # LocalError before any byte is sent
    if not a.port:
        raise LocalError("no port: give --port URL or set BASALT_PORT")
    pump = open_client(a.port, a.timeout)
    try:
        a.action(Session(pump, a), out)
        return EXIT_OK
    finally:
        pump.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2) and --help (0): return, don't raise, for callers
        return e.code if isinstance(e.code, int) else EXIT_REFUSED
    if a.port is None:
        a.port = os.environ.get("BASALT_PORT") or None
    out = Out(a.json)
    try:
        return run(a, out)
    except LocalError as e:
        _err(f"error: {e} (nothing was sent)")
        return EXIT_REFUSED
    except PumpError as e:
        _err(f"refused by the pump: {e.code}: {e.msg}")
        if e.code == "duplicate":
            _err("the pump had already executed this request; run `pumpctl status` to see its effect")
        if out.json:
            out.doc({"ok": False, "err": e.code, "msg": e.msg})
        return EXIT_REFUSED
    except TransportError as e:
        _err(str(e))
        return EXIT_TRANSPORT
    except KeyboardInterrupt:
        # Stopping `events` with Ctrl-C is the normal way to end it.
        return EXIT_OK if a.command == "events" or getattr(a, "cgm_cmd", None) == "watch" else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
