"""The simulated CGM sensor: a Bluetooth CGM Service (0x181F) GATT server on bumble.

Three layers, each usable on its own (docs/ble.md):

* the noise model - `SensorNoise` (streaming) / `cgm_trace` (whole trace): blood glucose ->
  interstitial glucose (first-order lag, tau ~10 min) -> sensor reading (correlated noise whose
  size is set so the iCGM accuracy limits of 21 CFR 862.1355 hold with margin); `icgm_report`
  scores readings against the truth with those limits;
* `CgmSensorCore` - the sensor without a radio: glucose source (CSV trace or callable profile),
  session, record store, the bytes of every characteristic, RACP and a minimal SOCP. Pure and
  synchronous, driven by an injectable clock or explicit `next_reading()` calls;
* `SimulatedCgmSensor` - that core served over GATT by a bumble Device on a `VirtualRadio`
  (hil/ble/bleak_bumble.py): advertising 0x181F, notifications, indications, RACP streaming.

Measurement, Feature and RACP/SOCP bytes come from the shared codec (basalt.cgm.cgms), the same
source the pump runs. CGM Status, Session Start Time and Session Run Time have no encoder there
yet: their few bytes are built here (layouts in docs/ble.md) with the shared CRC.

Time: the sensor never reads a wall clock on its own. `clock` (seconds, any epoch; default
time.monotonic) only decides which readings are *due* in `advance()`; a harness running in
virtual time passes its clock and calls `await sensor.advance()` after each step, or calls
`await sensor.emit()` itself for strict lockstep. `run_in_background()` is the wall-clock
convenience (demo, manual use).
"""
from __future__ import annotations

import asyncio
import csv
import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from basalt.cgm import cgms, sfloat
from basalt.lib.crc16 import crc16

Profile = Callable[[float], float]  # minutes since session start -> blood glucose, mg/dL

UUID_SERVICE = 0x181F
UUID_MEASUREMENT = 0x2AA7
UUID_FEATURE = 0x2AA8
UUID_STATUS = 0x2AA9
UUID_SESSION_START = 0x2AAA
UUID_SESSION_RUN = 0x2AAB
UUID_RACP = 0x2A52
UUID_SOCP = 0x2AAC

SENSOR_MIN = 40  # mg/dL: the device's range; outside it the reading is clamped and annunciated
SENSOR_MAX = 400
A_BELOW_DEVICE_RANGE = 1 << 22
A_ABOVE_DEVICE_RANGE = 1 << 23
A_SESSION_STOPPED = 1 << 0

F_TREND = 1 << 15
F_QUALITY = 1 << 16
DEFAULT_FEATURES = ((1 << 6) | (1 << 8) | (1 << 9) | (1 << 11) | cgms.F_E2E_CRC | (1 << 14) | F_TREND)


# ==== glucose sources ============================================================================
def trace_profile(path: str | Path) -> Profile:
    """A CSV trace as a profile: the first column is minutes since session start, the second
    blood glucose in mg/dL (a header row and blank / '#' lines are skipped). Linear interpolation
    between points; the first and last values hold outside the trace."""
    ts: list[float] = []
    gs: list[float] = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                t, g = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if ts:
                    raise ValueError(f"{path}: bad row {row!r}") from None
                continue  # header
            if ts and t <= ts[-1]:
                raise ValueError(f"{path}: times must increase ({t} after {ts[-1]})")
            ts.append(t)
            gs.append(g)
    if not ts:
        raise ValueError(f"{path}: no data rows")
    return points_profile(ts, gs)


def points_profile(ts: Sequence[float], gs: Sequence[float]) -> Profile:
    ts, gs = list(ts), list(gs)

    def profile(t_min: float) -> float:
        if t_min <= ts[0]:
            return gs[0]
        if t_min >= ts[-1]:
            return gs[-1]
        i = bisect_right(ts, t_min)
        t0, t1, g0, g1 = ts[i - 1], ts[i], gs[i - 1], gs[i]
        return g0 + (g1 - g0) * (t_min - t0) / (t1 - t0)
    return profile


# ==== noise model ================================================================================
@dataclass(frozen=True)
class NoiseParams:
    """Sensor error model. Defaults: MARD about 8-9 % against blood glucose on a typical day,
    inside every iCGM limit with margin (tests/test_ble_sensor.py measures it)."""
    tau_min: float = 10.0  # interstitial lag, first order (minutes); 0 = none
    sd_abs: float = 4.0  # mg/dL: the noise floor that dominates at low glucose
    sd_rel: float = 0.06  # fraction of glucose: dominates above ~70 mg/dL
    corr_min: float = 15.0  # noise correlation time (AR(1)), minutes: errors drift, not jitter
    clip_sd: float = 3.0  # noise is a Gaussian clipped at this many SD (no wild outliers)


class SensorNoise:
    """Streaming error model: `step(bg, dt_min)` -> the sensor's (float) reading.

    1. Interstitial glucose follows blood glucose with a first-order lag:
       dIG/dt = (BG - IG) / tau, integrated exactly for BG linear between samples (a steady
       ramp of s mg/dL/min shows as a lag of s * tau mg/dL).
    2. Sensor noise: a stationary AR(1) process (correlation exp(-dt/corr_min)) of unit variance,
       clipped at +-clip_sd, scaled by sd(IG) = hypot(sd_abs, sd_rel * IG).
    Deterministic for a given seed."""

    def __init__(self, params: NoiseParams = NoiseParams(), seed: int | None = 0):
        self.p = params
        self.rng = random.Random(seed)
        self.ig: float | None = None
        self.bg: float | None = None
        self.z = self.rng.gauss(0.0, 1.0)

    def step(self, bg: float, dt_min: float) -> float:
        p = self.p
        if self.ig is None or dt_min <= 0:
            self.ig = bg if self.ig is None else self.ig
        elif p.tau_min > 0:
            a = math.exp(-dt_min / p.tau_min)
            s = (bg - self.bg) / dt_min
            self.ig = bg - s * p.tau_min + (self.ig - self.bg + s * p.tau_min) * a
        else:
            self.ig = bg
        self.bg = bg
        if dt_min > 0:
            phi = math.exp(-dt_min / p.corr_min) if p.corr_min > 0 else 0.0
            self.z = phi * self.z + math.sqrt(1 - phi * phi) * self.rng.gauss(0.0, 1.0)
        z = max(-p.clip_sd, min(p.clip_sd, self.z))
        ig = self.ig
        return ig + z * math.hypot(p.sd_abs, p.sd_rel * max(ig, 0.0))


def cgm_trace(bg: Sequence[float], dt_min: float = 5.0, params: NoiseParams = NoiseParams(),
              seed: int | None = 0) -> list[float]:
    """Sensor readings (floats, unclamped, unrounded) for blood glucose sampled every dt_min."""
    m = SensorNoise(params, seed)
    return [m.step(g, dt_min if i else 0.0) for i, g in enumerate(bg)]


def synthetic_bg(days: int, seed: int = 0, dt_min: float = 5.0) -> list[float]:
    """A plausible blood-glucose trace for tests: a slow AR(1) drift around 125 mg/dL, three
    meals a day (rises of 40-140 mg/dL peaking 60 min after the meal) and, on 60 % of days, a dip
    of 40-80 mg/dL peaking after 120 min (exercise, an over-bolus), clamped to 40..400. Rates of
    change: 95 % within 1.8 and 99 % within 3.2 mg/dL/min, about 2-3 % of the time below 70."""
    rng = random.Random(seed)
    events = []
    for d in range(days):
        for h in (7.5, 12.5, 19.0):
            events.append(((d * 24 + h + rng.gauss(0, 0.7)) * 60, rng.uniform(40, 140), 60.0))
        if rng.random() < 0.6:
            events.append(((d * 24 + rng.uniform(0, 24)) * 60, -rng.uniform(40, 80), 120.0))
    events.sort()
    starts = [e[0] for e in events]
    x = 0.0
    out = []
    for i in range(int(days * 1440 / dt_min)):
        t = i * dt_min
        x = 0.995 * x + rng.gauss(0, 2.0)
        g = 125 + x
        for tm, amp, peak in events[bisect_right(starts, t - 7 * 120):bisect_right(starts, t)]:
            u = t - tm
            if 0 < u < 7 * peak:
                g += amp * (u / peak) ** 2 * math.exp(2 * (1 - u / peak))
        out.append(min(400.0, max(40.0, g)))
    return out


# The iCGM limits as reference.md section 2 states them: (name, truth band, tolerance, required).
# A tolerance < 1 is relative (fraction of the truth), otherwise mg/dL.
ICGM_LIMITS = (
    ("below70_within15mgdl", (0, 70), 15, 0.85),
    ("70to180_within15pct", (70, 180), 0.15, 0.70),
    ("above180_within15pct", (180, 1e9), 0.15, 0.80),
    ("below70_within40mgdl", (0, 70), 40, 0.98),
    ("70to180_within40pct", (70, 180), 0.40, 0.99),
    ("above180_within40pct", (180, 1e9), 0.40, 0.99),
    ("overall_within20pct", (0, 1e9), 0.20, 0.87),
)


def _in_band(t: float, lo: float, hi: float) -> bool:
    # <70, 70..180 (both ends), >180, or everything
    if lo == 0:
        return t < hi if hi == 70 else True
    return lo <= t <= hi if lo == 70 else t > lo


def icgm_report(truth: Sequence[float], readings: Sequence[float]) -> dict:
    """Fraction of readings within each iCGM tolerance (truth bands: <70, 70..180, >180 mg/dL),
    the required fraction, pass/fail, the count of 'crossings' (reading < 70 while truth > 180, or
    reading > 180 while truth < 70: must be 0) and the MARD."""
    out: dict = {}
    for name, (lo, hi), tol, need in ICGM_LIMITS:
        pairs = [(t, r) for t, r in zip(truth, readings, strict=True) if _in_band(t, lo, hi)]
        ok = sum(1 for t, r in pairs if abs(r - t) <= (tol * t if tol < 1 else tol))
        frac = ok / len(pairs) if pairs else None
        out[name] = {"n": len(pairs), "fraction": frac, "required": need,
                     "pass": frac is None or frac > need}
    cross = sum(1 for t, r in zip(truth, readings, strict=True) if (t > 180 and r < 70) or (t < 70 and r > 180))
    out["crossings"] = cross
    out["mard"] = sum(abs(r - t) / t for t, r in zip(truth, readings, strict=True)) / max(1, len(truth))
    out["pass"] = cross == 0 and all(v["pass"] for k, v in out.items() if isinstance(v, dict))
    return out


# ==== the sensor without a radio =================================================================
@dataclass
class Stored:
    time_offset: int  # minutes since session start
    glucose_raw: int  # SFLOAT
    status: int  # 24 annunciation bits
    trend_raw: int = -1
    quality_raw: int = -1
    bg: float = 0.0  # the truth that produced it (for tests and logs; not transmitted)
    mgdl: int = 0  # the transmitted value in whole mg/dL


class RacpError(Exception):
    """A RACP/SOCP write refused at the ATT level (procedure in progress, CCCD not configured)."""

    def __init__(self, att_code: int):
        super().__init__(f"ATT error 0x{att_code:02X}")
        self.att_code = att_code


ATT_CCCD_IMPROPER = 0xFD
ATT_IN_PROGRESS = 0xFE


class CgmSensorCore:
    """A CGM sensor's state and every byte it sends, without a radio.

    profile:      minutes since session start -> blood glucose (mg/dL); see trace_profile().
    interval_min: minutes between readings (CGMS communication interval; SOCP can change it).
    noise:        a SensorNoise, None for the default seeded one, or False for exact readings.
    clock:        seconds, any epoch (default time.monotonic); only advance() looks at it.
    session_start: wall date/time reported in Session Start Time (default 2024-01-01 08:00).
    """

    def __init__(self, profile: Profile, *, interval_min: int = 5, noise: SensorNoise | None | bool = None,
                 seed: int | None = 0, features: int = DEFAULT_FEATURES, clock: Callable[[], float] = time.monotonic,
                 session_start: datetime = datetime(2024, 1, 1, 8, 0), quality: bool = False):
        self.profile = profile
        self.interval_min = interval_min
        self.noise = SensorNoise(seed=seed) if noise is None else (noise or None)
        self.features = features | (F_QUALITY if quality else 0)
        self.e2e = bool(self.features & cgms.F_E2E_CRC)
        self.clock = clock
        self.session_start = session_start
        self.records: list[Stored] = []
        self.status_inject = 0  # OR-ed into the next readings' annunciation (fault injection)
        self.running = False
        self.session_t0_s = 0.0  # clock() at session start
        self.next_offset = 0  # time offset of the next reading
        self._last_t: float | None = None
        self.start_session()

    # -- session -----------------------------------------------------------------------------------
    def start_session(self, at_s: float | None = None) -> None:
        self.running = True
        self.session_t0_s = self.clock() if at_s is None else at_s
        self.records.clear()
        self.next_offset = 0
        self._last_t = None

    def stop_session(self) -> None:
        self.running = False

    def minutes(self) -> float:
        return (self.clock() - self.session_t0_s) / 60.0

    def due(self) -> int:
        """How many readings are due by the clock and not yet made."""
        if not self.running:
            return 0
        return max(0, math.floor(self.minutes() / self.interval_min) + 1 - self.next_offset // self.interval_min)

    # -- readings ----------------------------------------------------------------------------------
    def next_reading(self) -> Stored:
        """Make the next reading (time offset next_offset, then advance by one interval), store it
        and return it. Independent of the clock: the lockstep entry point."""
        t = float(self.next_offset)
        bg = float(self.profile(t))
        if self.noise is not None:
            val = self.noise.step(bg, 0.0 if self._last_t is None else t - self._last_t)
        else:
            val = bg
        self._last_t = t
        status = self.status_inject
        g = int(math.floor(val + 0.5))
        if g < SENSOR_MIN:
            g, status = SENSOR_MIN, status | A_BELOW_DEVICE_RANGE
        elif g > SENSOR_MAX:
            g, status = SENSOR_MAX, status | A_ABOVE_DEVICE_RANGE
        trend = -1
        if self.features & F_TREND and self.records:
            prev = self.records[-max(1, min(3, len(self.records)))]
            dt = t - prev.time_offset
            trend = sfloat.from_tenths(round(10 * (g - prev.mgdl) / dt)) if dt > 0 else -1
        quality = sfloat.from_int(100) if self.features & F_QUALITY else -1
        rec = Stored(self.next_offset, sfloat.from_int(g), status, trend, quality, bg, g)
        self.records.append(rec)
        self.next_offset += self.interval_min
        return rec

    def backfill(self, n: int) -> None:
        """Pretend the session has been running: make n readings at once (stored, not notified)."""
        for _ in range(n):
            self.next_reading()
        self.session_t0_s = self.clock() - 60.0 * (self.next_offset - self.interval_min)

    def packet(self, rec: Stored) -> bytes:
        """The CGM Measurement record (shared codec), with its E2E-CRC when supported."""
        return cgms.record(rec.glucose_raw, rec.time_offset, rec.status, rec.trend_raw, rec.quality_raw, e2e=self.e2e)

    # -- characteristic values ---------------------------------------------------------------------
    def _crc(self, b: bytes) -> bytes:
        if not self.e2e:
            return b
        c = crc16(b)
        return b + bytes((c & 0xFF, c >> 8))

    def feature_value(self) -> bytes:
        return cgms.encode_feature(self.features)

    def status_value(self) -> bytes:
        """CGM Status: time offset u16 (now), Status / Cal-Temp / Warning octets, E2E-CRC."""
        off = int(self.minutes()) if self.running else (self.records[-1].time_offset if self.records else 0)
        st = (self.records[-1].status if self.records else 0) & ~A_SESSION_STOPPED
        if not self.running:
            st |= A_SESSION_STOPPED
        return self._crc(bytes((off & 0xFF, off >> 8 & 0xFF, st & 0xFF, st >> 8 & 0xFF, st >> 16 & 0xFF)))

    def session_start_value(self) -> bytes:
        """Session Start Time: Date Time (year u16, month, day, h, m, s), time zone (s8, 15 min
        units; 0 = UTC), DST offset (u8; 0 = standard time), E2E-CRC."""
        d = self.session_start
        return self._crc(bytes((d.year & 0xFF, d.year >> 8, d.month, d.day, d.hour, d.minute, d.second, 0, 0)))

    def session_run_value(self) -> bytes:
        """Session Run Time: expected run time in hours (u16), E2E-CRC. A 10-day sensor."""
        return self._crc(bytes((240, 0)))

    # -- RACP --------------------------------------------------------------------------------------
    def select(self, operator: int, lo: int = 0, hi: int = 0) -> list[Stored]:
        r = self.records
        if operator == cgms.OPR_ALL:
            return list(r)
        if operator == cgms.OPR_LE:
            return [x for x in r if x.time_offset <= lo]
        if operator == cgms.OPR_GE:
            return [x for x in r if x.time_offset >= lo]
        if operator == cgms.OPR_RANGE:
            return [x for x in r if lo <= x.time_offset <= hi]
        if operator == cgms.OPR_FIRST:
            return r[:1]
        if operator == cgms.OPR_LAST:
            return r[-1:]
        raise ValueError(operator)

    def racp(self, req: bytes) -> tuple[list[Stored], bytes]:
        """Handle one RACP request: (records to send as Measurement notifications, then the RACP
        indication). Response codes as in docs/cgms.md; abort is answered by the GATT layer when a
        report is running and here (success, nothing to abort) otherwise."""
        def rsp(op: int, code: int) -> tuple[list[Stored], bytes]:
            return [], bytes((cgms.RACP_RSP, cgms.OPR_NULL, op, code))

        if len(req) < 2:
            return rsp(req[0] if req else 0, 5)  # invalid operand
        op, operator = req[0], req[1]
        if op == cgms.RACP_ABORT:
            return rsp(op, 1 if operator == cgms.OPR_NULL else 3)
        if op not in (cgms.RACP_REPORT, cgms.RACP_DELETE, cgms.RACP_REPORT_NUM):
            return rsp(op, 2)  # op code not supported
        if operator == cgms.OPR_NULL:
            return rsp(op, 3)  # invalid operator
        if operator > cgms.OPR_LAST:
            return rsp(op, 4)  # operator not supported
        lo = hi = 0
        if operator in (cgms.OPR_LE, cgms.OPR_GE, cgms.OPR_RANGE):
            need = 5 if operator != cgms.OPR_RANGE else 7
            if len(req) < 3:
                return rsp(op, 5)
            if req[2] != cgms.FILTER_TIME_OFFSET:
                return rsp(op, 9)  # operand (filter type) not supported
            if len(req) != need:
                return rsp(op, 5)
            lo = req[3] | req[4] << 8
            hi = req[5] | req[6] << 8 if operator == cgms.OPR_RANGE else 0
            if operator == cgms.OPR_RANGE and lo > hi:
                return rsp(op, 5)
        elif len(req) != 2:
            return rsp(op, 5)
        sel = self.select(operator, lo, hi)
        if op == cgms.RACP_REPORT_NUM:
            return [], bytes((cgms.RACP_NUM_RSP, cgms.OPR_NULL, len(sel) & 0xFF, len(sel) >> 8 & 0xFF))
        if not sel:
            return rsp(op, 6)  # no records found
        if op == cgms.RACP_DELETE:
            gone = {id(x) for x in sel}
            self.records = [x for x in self.records if id(x) not in gone]
            return rsp(op, 1)
        return sel, bytes((cgms.RACP_RSP, cgms.OPR_NULL, op, 1))

    # -- SOCP (minimal: communication interval, start / stop session) -------------------------------
    def socp(self, req: bytes) -> bytes:
        def rsp(op: int, code: int) -> bytes:
            return cgms.socp_request(cgms.SOCP_RSP, bytes((op, code)), self.e2e)
        try:
            op, a, _ = cgms.socp_response(req, self.e2e)  # the same layout: op code + operand (+ CRC)
        except ValueError:
            return rsp(req[0] if req else 0, 3)
        if op == cgms.SOCP_INTERVAL:  # set interval (minutes)
            if not 1 <= a <= 255:
                return rsp(op, 5)
            self.interval_min = a
            self.next_offset = (self.next_offset + a - 1) // a * a
            return rsp(op, 1)
        if op == cgms.SOCP_INTERVAL + 1:  # get interval
            return cgms.socp_request(cgms.SOCP_INTERVAL + 2, bytes((self.interval_min,)), self.e2e)
        if op == cgms.SOCP_START_SESSION:
            self.start_session()
            return rsp(op, 1)
        if op == cgms.SOCP_STOP_SESSION:
            self.stop_session()
            return rsp(op, 1)
        return rsp(op, 2)


# ==== over GATT ==================================================================================
class SimulatedCgmSensor:
    """A CgmSensorCore served by a bumble Device on a VirtualRadio. Create with `start()`."""

    def __init__(self, core: CgmSensorCore, device, name: str):
        self.core = core
        self.device = device
        self.name = name
        self.address = str(device.random_address).split("/")[0]
        self.sent = 0  # live measurement notifications sent
        self._racp_task: asyncio.Task | None = None
        self._bg_task: asyncio.Task | None = None
        self._abort = False
        self._racp_busy = False
        self._build_gatt()

    @classmethod
    async def start(cls, radio, *, address: str = "C0:98:E5:49:00:01", name: str = "Basalt SimCGM",
                    profile: Profile | None = None, trace: str | Path | None = None, backfill: int = 0,
                    adv_interval_ms: float = 20.0, **core_kw) -> SimulatedCgmSensor:
        """Power a sensor up on `radio` and start advertising (connectable, 0x181F + name).
        profile or trace (CSV) give the blood glucose; core_kw go to CgmSensorCore."""
        if (profile is None) == (trace is None):
            raise ValueError("give exactly one of profile= or trace=")
        core = CgmSensorCore(profile or trace_profile(trace), **core_kw)
        if backfill:
            core.backfill(backfill)
        dev = radio.new_device(address, name)
        self = cls(core, dev, name)
        await dev.power_on()
        await self.advertise(adv_interval_ms)
        return self

    def _build_gatt(self) -> None:
        from bumble import att
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        P = Characteristic.Properties
        RW = Characteristic.READABLE | Characteristic.WRITEABLE
        core = self.core

        def c(uuid, props, value=b""):
            return Characteristic(f"{uuid:04X}", props, RW, value)

        self.c_meas = c(UUID_MEASUREMENT, P.NOTIFY)
        self.c_feature = c(UUID_FEATURE, P.READ, CharacteristicValue(read=lambda _c: core.feature_value()))
        self.c_status = c(UUID_STATUS, P.READ, CharacteristicValue(read=lambda _c: core.status_value()))
        self.c_start = c(UUID_SESSION_START, P.READ, CharacteristicValue(read=lambda _c: core.session_start_value()))
        self.c_run = c(UUID_SESSION_RUN, P.READ, CharacteristicValue(read=lambda _c: core.session_run_value()))
        self.c_racp = c(UUID_RACP, P.WRITE | P.INDICATE, CharacteristicValue(write=self._on_racp))
        self.c_socp = c(UUID_SOCP, P.WRITE | P.INDICATE, CharacteristicValue(write=self._on_socp))
        self._att_error = att.ATT_Error
        svc = Service(f"{UUID_SERVICE:04X}", [self.c_meas, self.c_feature, self.c_status, self.c_start,
                                              self.c_run, self.c_racp, self.c_socp])
        self.device.add_service(svc)

    async def advertise(self, interval_ms: float = 20.0) -> None:
        from bumble.core import AdvertisingData

        name = self.name.encode()
        ad = bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes((0x06,))),
            (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, UUID_SERVICE.to_bytes(2, "little")),
            (AdvertisingData.COMPLETE_LOCAL_NAME, name),
        ]))
        # own address: the random static address given at start() (a typical sensor's choice)
        await self.device.start_advertising(advertising_data=ad, auto_restart=True, advertising_interval_min=interval_ms,
                                            advertising_interval_max=interval_ms)

    def _cccd(self, connection, char) -> int:
        v = self.device.gatt_server.read_cccd(connection, char)
        return v[0] | v[1] << 8

    # -- live readings -----------------------------------------------------------------------------
    async def emit(self) -> Stored:
        """Make the next reading now (clock ignored) and notify it to every subscriber."""
        rec = self.core.next_reading()
        await self.device.notify_subscribers(self.c_meas, self.core.packet(rec))
        self.sent += 1
        return rec

    async def advance(self) -> list[Stored]:
        """Emit every reading the clock says is due (the virtual-time entry point)."""
        return [await self.emit() for _ in range(self.core.due())]

    def run_in_background(self, period_s: float | None = None, start_after_s: float | None = None) -> asyncio.Task:
        """Wall-clock loop: one reading every period_s seconds (default: the interval in real
        time). Returns the task; `stop()` cancels it."""
        period = self.core.interval_min * 60.0 if period_s is None else period_s

        async def loop():
            await asyncio.sleep(period if start_after_s is None else start_after_s)
            while True:
                if self.core.running:
                    await self.emit()
                await asyncio.sleep(period)
        self._bg_task = asyncio.get_running_loop().create_task(loop())
        return self._bg_task

    async def stop(self) -> None:
        for t in (self._bg_task, self._racp_task):
            if t is not None:
                t.cancel()
        await self.device.stop_advertising()
        for conn in list(self.device.connections.values()):
            try:
                await conn.disconnect()
            except Exception:  # noqa: BLE001
                pass

    # -- control points ----------------------------------------------------------------------------
    def _on_racp(self, connection, value: bytes) -> None:
        if not self._cccd(connection, self.c_racp) & 2:
            raise self._att_error(ATT_CCCD_IMPROPER)
        value = bytes(value)
        busy = self._racp_busy
        if busy and value[:1] != bytes((cgms.RACP_ABORT,)):
            raise self._att_error(ATT_IN_PROGRESS)
        if busy:
            self._abort = True
            return
        sel, rsp = self.core.racp(value)
        self._abort = False
        self._racp_busy = True
        self._racp_task = asyncio.get_running_loop().create_task(self._racp_run(connection, sel, rsp))

    async def _racp_run(self, connection, sel: Iterable[Stored], rsp: bytes) -> None:
        await asyncio.sleep(0)  # let the write response go first
        for rec in sel:
            if self._abort:
                rsp = bytes((cgms.RACP_RSP, cgms.OPR_NULL, cgms.RACP_ABORT, 1))
                break
            await self.device.notify_subscriber(connection, self.c_meas, self.core.packet(rec))
        self._racp_busy = False  # the procedure ends with its response indication
        await self.device.indicate_subscriber(connection, self.c_racp, rsp)

    def _on_socp(self, connection, value: bytes) -> None:
        if not self._cccd(connection, self.c_socp) & 2:
            raise self._att_error(ATT_CCCD_IMPROPER)
        rsp = self.core.socp(bytes(value))
        asyncio.get_running_loop().create_task(self.device.indicate_subscriber(connection, self.c_socp, rsp))
