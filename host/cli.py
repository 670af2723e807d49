"""pumpctl: control a Basalt pump from the command line over its console protocol.

    pumpctl --port socket://127.0.0.1:7000 status
    pumpctl --port /dev/ttyUSB0 bolus 2.5
    BASALT_PORT=rfc2217://rig:4000 pumpctl --json events --count 10

--port takes any pyserial URL (default: $BASALT_PORT). Amounts are typed and shown in units
(U, U/h, U/min) and converted to the protocol's integer milliunits exactly; an amount that
needs more precision than 0.001 U is refused here, before anything is sent.

Exit status: 0 done; 2 refused (by the pump - its error code and message go to stderr - or by
pumpctl's own checks before sending, e.g. a bad unit string or no port); 3 transport problem
(cannot open the port, no reply, connection lost); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable

import serial
from rich.console import Console

from host import render
from host.client import PumpClient, PumpError
from host.units import UnitError, parse_segments, to_mu

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_TRANSPORT = 3
EXIT_INTERRUPTED = 130


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


def prepare(a: argparse.Namespace) -> None:
    """Validate and convert the command's arguments into a.request = (cmd, args)."""
    c = a.command
    if c == "basal":
        if a.basal_cmd == "show":
            a.request = ("basal_get", {})
        else:
            try:
                a.request = ("basal_set", {"segments": parse_segments(a.segments)})
            except UnitError as e:
                raise LocalError(str(e)) from None
    elif c == "bolus":
        a.request = ("bolus", {"mU": units_arg(a.units, "bolus")})
    elif c == "cancel":
        a.request = ("bolus_cancel", {})
    elif c == "reservoir":
        a.request = ("reservoir_load", {"mU": units_arg(a.units, "reservoir")})
    elif c == "limits":
        a.request = ("limits_get", {}) if a.limits_cmd == "show" else ("limits_set", limit_changes(a.changes))
    elif c == "events":
        if a.count is not None and a.count < 1:
            raise LocalError("--count must be at least 1")
        if a.for_s is not None and a.for_s < 0:
            raise LocalError("--for must not be negative")
        a.request = ("ping", {})
    else:  # ping, status, suspend, resume: the protocol name is the command name
        a.request = (c, {})


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


def show_reply(a: argparse.Namespace, out: Out, data: dict, rtt_ms: float) -> None:
    c = a.command
    if c == "ping":
        out.show(data, render.ping(data, rtt_ms))
    elif c == "status":
        out.show(data, render.status(data))
    elif c == "basal":
        out.show(data, render.basal(data.get("segments", []), data.get("basal_mUh")))
    elif c == "bolus":
        out.show(data, f"Bolus #{data.get('id', '?')} started: {render.amount(data.get('requested_mU', 0))} "
                       f"({data.get('requested_steps', 0)} steps)")
    elif c == "cancel":
        out.show(data, f"Bolus #{data.get('id', '?')} cancelled: delivered "
                       f"{render.amount(data.get('delivered_mU', 0))} of {render.amount(data.get('requested_mU', 0))} "
                       f"requested ({data.get('delivered_steps', 0)} of {data.get('requested_steps', 0)} steps)")
    elif c == "suspend":
        text = "Suspended."
        if data.get("bolus_cancelled"):
            text += " Running bolus cancelled: " + render.bolus_line(data["bolus_cancelled"])
        out.show(data, text)
    elif c == "resume":
        out.show(data, f"Pump is {data.get('state', '?')}.")
    elif c == "reservoir":
        out.show(data, render.reservoir(data))
    elif c == "limits":
        out.show(data, render.limits(data))
    else:
        out.show(data, json.dumps(data))


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

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sp.add_parser(name, help=help, description=help, parents=[common])

    add("ping", "check that the pump answers; show its version and link counters")
    add("status", "state, basal rate, reservoir, delivered totals and the running bolus")

    basal = add("basal", "show or set the 24-hour basal schedule")
    bsp = basal.add_subparsers(dest="basal_cmd", metavar="show|set", required=True)
    bsp.add_parser("show", help="show the schedule", parents=[common])
    bset = bsp.add_parser("set", help="replace the schedule: HH:MM=U/h ...; starts on 30-minute boundaries, first 00:00",
                          parents=[common])
    bset.add_argument("segments", nargs="+", metavar="HH:MM=RATE", help="segment start and rate in U/h, e.g. 06:30=1.25")

    bolus = add("bolus", "start a normal bolus")
    bolus.add_argument("units", metavar="UNITS", help="amount in units, e.g. 2.5")
    add("cancel", "cancel the running bolus and report exactly what was delivered")
    add("suspend", "stop all delivery (cancels a running bolus)")
    add("resume", "resume delivery")

    res = add("reservoir", "reservoir commands")
    rsp = res.add_subparsers(dest="reservoir_cmd", metavar="load", required=True)
    rload = rsp.add_parser("load", help="record a newly loaded reservoir (pump must be suspended)", parents=[common])
    rload.add_argument("units", metavar="UNITS", help="insulin in the reservoir, in units, e.g. 300")

    lim = add("limits", "show or set the therapy limits")
    lsp = lim.add_subparsers(dest="limits_cmd", metavar="show|set", required=True)
    lsp.add_parser("show", help="show the limits", parents=[common])
    lset = lsp.add_parser("set", help="change limits atomically", parents=[common],
                          description="Names: max_bolus (U), max_basal (U/h), bolus_speed (U/min), bolus_increment (U); "
                                      "protocol keys such as max_bolus_mU=10000 take raw integers.")
    lset.add_argument("changes", nargs="+", metavar="NAME=VALUE", help="e.g. max_bolus=10 max_basal=3")

    ev = add("events", "follow the live event stream (until Ctrl-C, --count or --for)")
    ev.add_argument("--count", type=int, default=None, metavar="N", help="stop after N events")
    ev.add_argument("--for", dest="for_s", type=float, default=None, metavar="SECONDS",
                    help="stop after this many seconds")
    return p


# ---- main ---------------------------------------------------------------------------------------
def _err(msg: str) -> None:
    print(f"pumpctl: {msg}", file=sys.stderr, flush=True)


def open_client(url: str, timeout: float) -> PumpClient:
    try:
        pump = PumpClient(url, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        text = str(e)
        raise TransportError(text if url in text else f"cannot open port {url}: {text}") from None
    # The pump replays its cached reply to a request whose id and body match one of its last 8,
    # across reconnections too. PumpClient numbers from 1 on every connection, so two runs of
    # `pumpctl bolus 1` would both send {"id":1,...}: the second would get the first's reply
    # replayed and nothing delivered. Start each run at a random id instead.
    pump._next_id = secrets.randbelow(65535)
    return pump


def run(a: argparse.Namespace, out: Out) -> int:
    prepare(a)  # LocalError before any byte is sent
    if not a.port:
        raise LocalError("no port: give --port URL or set BASALT_PORT")
    pump = open_client(a.port, a.timeout)
    try:
        cmd, args = a.request
        t0 = time.monotonic()
        try:
            data = pump.request(cmd, args)
        except TimeoutError:
            raise TransportError(f"no reply from the pump at {a.port} to {cmd!r} "
                                 f"({pump.retries + 1} tries, {a.timeout:g} s each)") from None
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"lost the connection to {a.port}: {e}") from None
        rtt_ms = (time.monotonic() - t0) * 1000
        if a.command == "events":
            follow_events(pump, a, out)
        else:
            show_reply(a, out, data, rtt_ms)
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
        if out.json:
            out.doc({"ok": False, "err": e.code, "msg": e.msg})
        return EXIT_REFUSED
    except TransportError as e:
        _err(str(e))
        return EXIT_TRANSPORT
    except KeyboardInterrupt:
        # Stopping `events` with Ctrl-C is the normal way to end it.
        return EXIT_OK if a.command == "events" else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
