"""`pumpctl cgm`: find and read Bluetooth CGM sensors (service 0x181F) with bleak.

    pumpctl cgm scan [--timeout S]
    pumpctl cgm watch ADDRESS [--count N]

Written against plain bleak (`BleakScanner`, `BleakClient`), so it works with a real adapter
(BlueZ, CoreBluetooth, WinRT) and any standard CGMS sensor or the CGM emulator board. Decoding is
the shared codec (basalt.cgm.cgms), the same source the pump runs.

The bleak backend is injectable: `--backend MODULE:NAME` (or $BASALT_BLEAK_BACKEND) names an
object that is a `BaseBleakClient` subclass, a `BaseBleakScanner` subclass, or a (possibly async)
callable returning a `(client class, scanner class)` pair; it is resolved inside the running
event loop, so a factory may start in-process peers there. Tests and demos use
`hil.ble.bleak_bumble:demo_backend` (a simulated sensor on bumble's virtual link); the functions
below also take the classes directly (`backend=`, `scanner_backend=`).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

from basalt.cgm import cgms, sfloat

CGMS_SERVICE = "0000181f-0000-1000-8000-00805f9b34fb"
CGM_MEASUREMENT = "00002aa7-0000-1000-8000-00805f9b34fb"
CGM_FEATURE = "00002aa8-0000-1000-8000-00805f9b34fb"
ENV_BACKEND = "BASALT_BLEAK_BACKEND"

ANNUNCIATIONS = {  # bit -> short name (docs/cgms.md)
    0: "session_stopped", 1: "battery_low", 2: "wrong_sensor_type", 3: "sensor_malfunction",
    4: "device_specific_alert", 5: "general_device_fault", 8: "time_sync_required", 9: "cal_not_allowed",
    10: "cal_recommended", 11: "cal_required", 12: "temp_too_high", 13: "temp_too_low",
    16: "below_patient_low", 17: "above_patient_high", 18: "below_hypo", 19: "above_hyper",
    20: "rate_decrease_exceeded", 21: "rate_increase_exceeded", 22: "below_device_range",
    23: "above_device_range",
}
ERRORS = {cgms.E_OK: "ok", cgms.E_SIZE: "size", cgms.E_LAYOUT: "layout", cgms.E_CRC: "crc"}


class CgmError(Exception):
    """Sensor not found, connection lost, not a CGMS sensor (pumpctl exit 3)."""


# ---- backend injection ----------------------------------------------------------------------------
async def resolve_backend(spec: str | None) -> tuple[type | None, type | None]:
    """'module:name' -> (client backend class or None, scanner backend class or None)."""
    if not spec:
        return None, None
    mod, _, name = spec.partition(":")
    try:
        obj: Any = getattr(importlib.import_module(mod), name or "backend")
    except (ImportError, AttributeError) as e:
        raise CgmError(f"cannot load bleak backend {spec!r}: {e}") from None
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

    if isinstance(obj, type):
        if issubclass(obj, BaseBleakClient):
            return obj, None
        if issubclass(obj, BaseBleakScanner):
            return None, obj
    if callable(obj):
        res = obj()
        if inspect.isawaitable(res):
            res = await res
        client, scanner = res
        return client, scanner
    raise CgmError(f"{spec!r} is neither a bleak backend class nor a factory")


def _kw(backend: type | None) -> dict:
    return {} if backend is None else {"backend": backend}


# ---- decoding -----------------------------------------------------------------------------------
def status_names(status: int) -> list[str]:
    return [n for b, n in ANNUNCIATIONS.items() if status >> b & 1]


def reading_dict(r: cgms.Reading) -> dict:
    """One decoded record as plain data (mg/dL as numbers; None for a not-a-value SFLOAT)."""
    d: dict[str, Any] = {"err": ERRORS.get(r.err, str(r.err)), "time_offset_min": r.time_offset,
                         "glucose_mgdl": None if r.glucose is None else r.glucose / 10}
    if r.err in (cgms.E_SIZE, cgms.E_LAYOUT):
        return d
    d["status"] = r.status
    d["annunciations"] = status_names(r.status)
    d["trend_mgdl_min"] = None if r.trend_raw < 0 else sfloat.to_float(r.trend_raw)
    d["quality_pct"] = None if r.quality_raw < 0 else sfloat.to_float(r.quality_raw)
    d["crc"] = None if r.crc < 0 else ("ok" if r.err == cgms.E_OK else "bad")
    return d


def decode_notification(data: bytes, e2e) -> list[dict]:
    out: list[dict] = []
    rec = cgms.Reading()
    cgms.parse(bytes(data), rec, lambda r: out.append(reading_dict(r)), e2e)
    return out


# ---- scan ---------------------------------------------------------------------------------------
async def scan(timeout: float = 5.0, backend: type | None = None, all_devices: bool = False) -> list[dict]:
    """Advertisers of the CGM service (all advertisers with all_devices), strongest first."""
    from bleak import BleakScanner

    kw = _kw(backend)
    if not all_devices:
        kw["service_uuids"] = [CGMS_SERVICE]
    found = await BleakScanner.discover(timeout, return_adv=True, **kw)
    rows = []
    for addr, (dev, adv) in found.items():
        cgm = CGMS_SERVICE in [u.lower() for u in adv.service_uuids]
        if all_devices or cgm:
            rows.append({"address": addr, "name": adv.local_name or dev.name, "rssi": adv.rssi, "cgms": cgm})
    rows.sort(key=lambda r: -(r["rssi"] if r["rssi"] is not None else -999))
    return rows


# ---- watch --------------------------------------------------------------------------------------
async def watch(address: str, count: int | None, on_reading: Callable[[dict], None], *, backend: type | None = None,
                timeout: float = 10.0, on_info: Callable[[dict], None] | None = None) -> int:
    """Connect, read the CGM Feature (it says whether records carry an E2E-CRC), subscribe to CGM
    Measurement and call on_reading(dict) per decoded record until count records (None: until
    cancelled or disconnected). Returns the number of records seen."""
    from bleak import BleakClient
    from bleak.exc import BleakError

    lost = asyncio.Event()
    q: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        client = BleakClient(address, lambda _c: lost.set(), timeout=timeout, **_kw(backend))
        await client.connect()
    except (BleakError, TimeoutError, OSError) as e:
        raise CgmError(f"cannot connect to {address}: {e}") from None
    n = 0
    try:
        if client.services.get_service(CGMS_SERVICE) is None:
            raise CgmError(f"{address} has no CGM service (0x181F)")
        feat = await client.read_gatt_char(CGM_FEATURE)
        try:
            features, typ, loc = cgms.parse_feature(feat)
            e2e: Any = bool(features & cgms.F_E2E_CRC)
        except ValueError as e:  # unreadable Feature: accept records with or without a CRC
            features, typ, loc, e2e = None, None, None, cgms.E2E_AUTO
            if on_info:
                on_info({"warning": f"CGM Feature {bytes(feat).hex()} rejected ({e}); CRC auto-detected"})
        if on_info:
            on_info({"address": address, "name": client.name, "features": features, "type": typ,
                     "location": loc, "e2e_crc": e2e is True})
        await client.start_notify(CGM_MEASUREMENT, lambda _c, data: q.put_nowait(bytes(data)))
        while count is None or n < count:
            get = asyncio.ensure_future(q.get())
            gone = asyncio.ensure_future(lost.wait())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                raise CgmError(f"{address} disconnected after {n} reading(s)")
            gone.cancel()
            for r in decode_notification(get.result(), e2e):
                on_reading(r)
                n += 1
                if count is not None and n >= count:
                    break
        return n
    except BleakError as e:
        raise CgmError(f"{address}: {e}") from None
    finally:
        if client.is_connected:
            try:
                await client.disconnect()
            except BleakError:
                pass


# ---- pumpctl glue -------------------------------------------------------------------------------
def add_parser(sp, add: Callable[..., argparse.ArgumentParser], group: Callable[..., Any]) -> None:
    """The `cgm` command group for pumpctl's parser (host/cli.py calls this)."""
    cgm = add("cgm", "find and read Bluetooth CGM sensors (CGMS 0x181F) - no pump port needed")
    cgm.add_argument("--backend", default=argparse.SUPPRESS, metavar="MODULE:NAME",
                     help=f"bleak backend (default: the platform's; ${ENV_BACKEND}); "
                          "hil.ble.bleak_bumble:demo_backend = a simulated sensor")
    csp = group(cgm, "cgm_cmd", "scan|watch")
    sc = add("scan", "list nearby CGM sensors", csp)
    sc.add_argument("--all", action="store_true", help="list every advertiser, not only CGM sensors")
    w = add("watch", "connect to a sensor and print its readings as they arrive", csp)
    w.add_argument("address", metavar="ADDRESS", help="the sensor's Bluetooth address (macOS: its UUID)")
    w.add_argument("--count", type=int, default=None, metavar="N", help="stop after N readings")
    for p in (sc, w):  # --backend before or after the subcommand
        p.add_argument("--backend", default=argparse.SUPPRESS, metavar="MODULE:NAME", help=argparse.SUPPRESS)


def _reading_line(r: dict) -> str:
    g = r.get("glucose_mgdl")
    text = f"+{r['time_offset_min']} min  " + ("---" if g is None else f"{g:g} mg/dL")
    if r.get("trend_mgdl_min") is not None:
        text += f"  trend {r['trend_mgdl_min']:+.1f} mg/dL/min"
    if r.get("quality_pct") is not None:
        text += f"  quality {r['quality_pct']:g}%"
    if r.get("annunciations"):
        text += "  [" + ", ".join(r["annunciations"]) + "]"
    if r["err"] != "ok":
        text += f"  ({r['err'].upper()} ERROR)"
    return text


def run(a: argparse.Namespace, out) -> None:
    """Execute `pumpctl cgm ...` (out: pumpctl's Out). Raises CgmError / ValueError."""
    if a.cgm_cmd == "watch" and a.count is not None and a.count < 1:
        raise ValueError("--count must be at least 1")
    spec = getattr(a, "backend", None) or os.environ.get(ENV_BACKEND) or None
    # --timeout (pumpctl's global option, default 2 s): how long `scan` listens; `watch` gives a
    # connection attempt at least 10 s (real adapters often need several seconds).
    timeout = a.timeout if a.cgm_cmd == "scan" else max(a.timeout, 10.0)

    async def main() -> None:
        client_cls, scanner_cls = await resolve_backend(spec)
        if a.cgm_cmd == "scan":
            rows = await scan(timeout, scanner_cls, a.all)
            if out.json:
                out.doc({"devices": rows})
            else:
                from rich.table import Table

                t = Table(title=f"CGM sensors ({timeout:g} s scan)", title_justify="left")
                for col in ("address", "name", "rssi", "CGMS"):
                    t.add_column(col)
                for r in rows:
                    t.add_row(r["address"], r["name"] or "", str(r["rssi"]), "yes" if r["cgms"] else "")
                out.console.print(t if rows else "No CGM sensor found.")
            return

        def info(d: dict) -> None:
            if out.json:
                return
            if "warning" in d:
                out.console.print(f"warning: {d['warning']}", markup=False)
            else:
                out.console.print(f"Connected to {d['name']} ({d['address']}); E2E-CRC "
                                  f"{'on' if d['e2e_crc'] else 'off'}; waiting for readings...", markup=False)

        def show(r: dict) -> None:
            if out.json:
                out.doc({"address": a.address, **r})
            else:
                out.console.print(_reading_line(r), markup=False)

        await watch(a.address, a.count, show, backend=client_cls, timeout=timeout, on_info=info)

    asyncio.run(main())
