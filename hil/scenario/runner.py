"""Run a validated scenario against a pump and record every expectation as pass/fail.

The simulator (SimPump, lockstep) is the main target: time moves only when a step asks for it,
and plant expectations are measured on the plant's own step log. A real board (--port) runs the
same file in wall-clock time; expectations that need the plant are skipped there.
"""
from __future__ import annotations

import bisect
import time
from decimal import Decimal
from typing import Any

from hil.scenario.model import (
    CGM_FIELDS,
    CGM_REASONS,
    HISTORY_TYPES,
    STATUS_FIELDS,
    STATUS_OBJECTS,
    CgmSetup,
    Check,
    Compare,
    Scenario,
    Step,
    fmt_clock,
    fmt_dec,
    fmt_time,
    pairs,
    show_value,
)
from host.client import PumpClient, PumpError

BURST_GAP_US = 1_000_000  # a bolus burst ends at the first gap between steps longer than one tick
ADVANCE_TIMEOUT_S = 120.0
PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"


class Aborted(RuntimeError):
    """The run cannot go on: the pump died, stopped answering, or setup was refused."""


# ---- targets ------------------------------------------------------------------------------------
class SimTarget:
    """The firmware under the MicroPython Unix port against the simulated hardware, in lockstep."""

    is_sim = True
    name = "simulator"

    def __init__(self, micropython: str | None = None, heap: str | None = None, cgm: CgmSetup | None = None):
        from hil.sim.firmware import SimPump

        kw: dict[str, Any] = {"micropython": micropython}
        if heap:
            kw["heap"] = heap
        self.sim = SimPump(**kw)
        self.t0 = 0
        self.client: PumpClient | None = None
        self.bridge = None  # hil.ble.bridge.BleBridge: the pump's radio, with the simulated sensors
        self.sensor = None  # the scenario's CGM sensor (hil.ble.sensor.SimulatedCgmSensor)
        self.cgm = cgm
        self._glucose_t0_min: float | None = None  # scenario 00:00 in harness minutes, once setup is done
        try:
            if cgm is not None:
                self._cgm_start(cgm)
            self.sim.start()
            self.client = PumpClient(self.sim.console_url)
        except BaseException:
            self.close()
            raise

    @property
    def plant(self):
        return self.sim.plant

    def _cgm_start(self, cgm: CgmSetup) -> None:
        """The pump's radio and the scenario's sensor, advertising before the firmware boots (it
        sees a radio only if one is attached when it starts). The sensor's glucose source follows
        scenario time: it holds its 00:00 value until setup ends (start_clock)."""
        from hil.ble.bridge import BleBridge

        self.bridge = BleBridge()
        self.bridge.attach(self.sim)
        self.sensor = self.add_sensor(cgm.address, cgm.glucose.at, noise=cgm.noise, seed=cgm.seed)

    def add_sensor(self, address: str, bg, name: str = "Basalt SimCGM", noise: bool = True, seed: int = 0):
        """A simulated sensor powered up now; bg(scenario minute) -> blood glucose (mg/dL)."""
        t0 = self.bridge.now_ms / 60000  # its session starts now: session minute 0

        def profile(t_min: float) -> float:
            return bg(0.0 if self._glucose_t0_min is None else t_min + t0 - self._glucose_t0_min)
        kw: dict[str, Any] = {"noise": None, "seed": seed} if noise else {"noise": False}
        return self.bridge.add_sensor(address, name=name, profile=profile, **kw)

    def start_clock(self) -> None:
        self.t0 = self.sim.now_ms  # scenario 00:00: the end of setup (the reservoir change takes time)
        self._glucose_t0_min = self.t0 / 60000

    def now_ms(self) -> int:
        """Scenario time: virtual ms since the end of setup."""
        return self.sim.now_ms - self.t0

    def abs_ms(self) -> int:
        """The simulator's own virtual time (the plant's time base)."""
        return self.sim.now_ms

    def advance_to(self, t_ms: int) -> None:
        if t_ms + self.t0 > self.sim.now_ms:
            # A simulated day takes about a second; minutes without progress mean a stuck firmware.
            self.sim.run_until(t_ms + self.t0, timeout=ADVANCE_TIMEOUT_S)

    def wait(self, ms: int) -> None:
        self.sim.advance(ms, timeout=ADVANCE_TIMEOUT_S)

    def heap(self) -> dict | None:
        return self.sim.heap()

    def close(self) -> None:
        if self.client:
            self.client.close()
        try:
            self.sim.close()
        finally:
            if self.bridge is not None:
                self.bridge.close()


class BoardTarget:
    """A real pump on a serial URL: time is the wall clock, measured from the end of setup."""

    is_sim = False
    plant = None
    bridge = sensor = None  # a board's radio meets real sensors: nothing simulated to inject into

    def __init__(self, url: str):
        self.name = url
        self.client = PumpClient(url, timeout=3.0)
        self.t0 = time.monotonic()

    def start_clock(self) -> None:
        self.t0 = time.monotonic()

    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def abs_ms(self) -> int:
        return self.now_ms()

    def advance_to(self, t_ms: int) -> None:
        while (left := t_ms / 1000 - (time.monotonic() - self.t0)) > 0:
            time.sleep(min(left, 1.0))

    def wait(self, ms: int) -> None:
        time.sleep(ms / 1000)

    def heap(self) -> dict | None:
        return None

    def close(self) -> None:
        self.client.close()


# ---- helpers ------------------------------------------------------------------------------------
def u(mu: int) -> Decimal:
    return Decimal(mu) / 1000


def _u_text(mu: int) -> str:
    return f"{fmt_dec(u(mu))} U"


def _segments_text(segs: list) -> str:
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}={Decimal(r) / 1000:f}".rstrip("0").rstrip(".") for s, r in pairs(segs))


def _record(check: Check | str, what: str, expected: str, actual: str, result: str, **extra) -> dict:
    key = check.key if isinstance(check, Check) else check
    return {"check": key, "what": what, "expected": expected, "actual": actual, "result": result, **extra}


def _event_doc(ev, t0_s: int = 0) -> dict:
    """t_s: the pump's uptime; time: scenario time (uptime less the setup)."""
    return {"name": ev.name, "seq": ev.seq, "t_s": ev.t, "time": fmt_time(max(ev.t - t0_s, 0) * 1000),
            "data": ev.data}


def _show_field(v: Any) -> str:
    if v is _MISSING:
        return "missing"
    if isinstance(v, Decimal):
        return f"{v:f}"
    return str(v)


def _event_text(ev: dict) -> str:
    d = ev["data"]
    keys = [k for k in ("kind", "phase", "state", "reason", "alarm", "percent", "rate_mUh", "minutes",
                        "delivered_mU", "requested_mU", "link", "glucose_mgdl", "trend", "rejected", "offset_min")
            if k in d]
    inner = " ".join(f"{k}={d[k]}" for k in keys)
    return f"{ev['name']}({inner}) at {ev['time']}" if inner else f"{ev['name']} at {ev['time']}"


_MISSING = object()


def _reason(code: Any) -> str:
    """A CGM rejection reason code -> its name (docs/cgms.md)."""
    return CGM_REASONS[code] if isinstance(code, int) and 0 <= code < len(CGM_REASONS) else f"code {code}"


def _event_field(data: Any, key: str) -> Any:
    """A field of an event, reply or status object; 'delivered' reads delivered_mU in units (and
    'rate' rate_mUh in U/h); 'normal.delivered' looks inside a nested object."""
    if "." in key:
        head, rest = key.split(".", 1)
        return _event_field(data.get(head), rest) if isinstance(data, dict) and isinstance(data.get(head), dict) \
            else _MISSING
    if not isinstance(data, dict):
        return _MISSING
    if key in data:
        v = data[key]
        return Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v
    for suffix in ("_mU", "_mUh"):
        if key + suffix in data and isinstance(data[key + suffix], int):
            return u(data[key + suffix])
    if key + "_mgdl" in data:  # glucose: 120 matches glucose_mgdl: 120
        v = data[key + "_mgdl"]
        return Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v
    return _MISSING


def _field_matches(cmp: Compare, actual: Any) -> bool:
    if actual is _MISSING:
        return False
    if cmp.kind == "eq":
        want = cmp.value
        if isinstance(actual, list) and not isinstance(want, list):
            want = [want]  # capped_by: max_iob_mU matches ["max_iob_mU"]
        if isinstance(actual, Decimal) and not isinstance(want, bool):
            try:
                return actual == Decimal(str(want))
            except ArithmeticError:
                return False
        return actual == want
    return isinstance(actual, Decimal) and cmp.test(actual)


# ---- the runner ---------------------------------------------------------------------------------
SERVICE_WAIT_LIMIT_S = 900  # a rewind or cannula fill that takes longer than this is stuck

# Reply fields of bolus_calc under friendlier names (besides the _mU rule).
CALC_ALIASES = {"carb_ratio": ("carb_ratio_g_per_U_x10", 10), "sensitivity": ("isf_mgdl_per_U", 1)}


class ScenarioRun:
    def __init__(self, scenario: Scenario, target):
        self.scn = scenario
        self.t = target
        self.client: PumpClient = target.client
        self.events_dropped = 0
        self._status: dict | None = None
        self._limits: dict | None = None
        # Reservoir changes, in the simulator's own ms: (rewind accepted, resume accepted or None).
        # Every train started in (rewind, resume] is priming or cannula fill, never therapy: a
        # train started at the rewind's instant is the therapy the suspend before it cut short,
        # and one started at the resume's instant is the last prime train (therapy starts on the
        # tick after the resume).
        self.service: list[list[int | None]] = []
        self._plant_cache: tuple | None = None
        self._uses_history = any(c.key in ("history", "no_history") for st in scenario.steps for c in st.checks)
        self._hist_seq = 0
        self._cgm: dict | None = None  # the pump's `cgm` reply at this step
        # The CGM as the events told it (every step's, setup's included) and what was injected
        self.cgm_seen: dict[str, Any] = {"readings": 0, "link_up": 0, "link_down": 0, "rejected": {}, "alarms": {},
                                         "last": None}
        self.cgm_injected: dict[str, int] = {}

    # ---- the CGM sensor and its link (hil/ble) -------------------------------------------------
    def _inject_cgm(self, a) -> None:
        """A fault of the simulated sensor or its link, now (the firmware is paused at this step)."""
        from hil.ble import sensor as S

        bridge, sensor, what = self.t.bridge, self.t.sensor, a.args["what"]
        self.cgm_injected[what] = self.cgm_injected.get(what, 0) + 1
        if what == "cgm_link_loss":
            bridge.link_loss(a.args["ms"], sensor.address)
        elif what in ("cgm_drop", "cgm_corrupt", "cgm_duplicate"):
            attr = what[4:]
            setattr(sensor, attr, getattr(sensor, attr) + a.args["n"])
        elif what == "cgm_glucose":
            if a.args["mgdl"] is None:
                sensor.core.force(raw=0x07FF)  # SFLOAT NaN
            else:
                sensor.core.force(a.args["mgdl"])
        elif what == "cgm_status":
            sensor.core.force(status=a.args["bits"])
        elif what == "cgm_session_stop":
            core = sensor.core
            core.force(status=S.A_SESSION_STOPPED)  # the last reading says so ...
            if core.running:  # ... and then the sensor falls silent
                last = round(core.session_t0_s * 1000) + core.next_offset * 60000
                bridge.schedule(last + 1, core.stop_session)
        elif what == "cgm_second_sensor":
            g = a.args["mgdl"]
            self.t.add_sensor(a.args["address"], lambda _t: g, name="Other CGM", seed=len(bridge.sensors))
        else:
            raise AssertionError(what)

    def _note_cgm(self, events: list[dict]) -> None:
        seen = self.cgm_seen
        for e in events:
            d = e["data"]
            if e["name"] == "alarm" and d.get("state") == "active" and str(d.get("alarm")).startswith(("cgm_", "glucose_")):
                seen["alarms"][d.get("alarm")] = seen["alarms"].get(d.get("alarm"), 0) + 1
            if e["name"] != "cgm":
                continue
            if "glucose_mgdl" in d:
                seen["readings"] += 1
                seen["last"] = {"glucose_mgdl": d["glucose_mgdl"], "trend": d.get("trend"), "time": e["time"]}
            elif d.get("link") in ("up", "down"):
                seen["link_" + d["link"]] += 1
            elif "rejected" in d:
                r = _reason(d["rejected"])
                seen["rejected"][r] = seen["rejected"].get(r, 0) + 1

    def cgm_status(self) -> dict:
        if self._cgm is None:
            self._cgm = self._request("cgm")
        return self._cgm

    def _check_cgm(self, chk: Check) -> dict:
        p = chk.params
        f = p["field"]
        if f == "alarm":
            active = p["alarm"] in self.status().get("alarms", [])
            return self._cmp(chk, active, "active" if active else "not active")
        st = self.cgm_status()
        counts = st.get("counts") or []
        if f == "readings":
            actual: Any = Decimal(counts[0]) if counts else None
        elif f == "rejected":
            r = p["reason"]
            actual = Decimal(sum(counts[1:]) if r is None else counts[r] if r < len(counts) else 0)
            if r is None and counts:
                by = ", ".join(f"{_reason(i)} {n}" for i, n in enumerate(counts) if i and n)
                return self._cmp(chk, actual, f"{actual}" + (f" ({by})" if by else ""))
        else:
            v = st.get(CGM_FIELDS[f][0])
            actual = Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if actual is None:
            return self._cmp(chk, None, "none")
        return self._cmp(chk, actual)

    # ---- hardware faults ------------------------------------------------------------------------
    def _inject(self, a, rec: dict) -> list[dict]:
        """A fault of the simulated hardware, at this step's time (the firmware is paused there)."""
        rec["action"] = {"inject": dict(a.args), "ok": True, "skipped": not self.t.is_sim}
        if not self.t.is_sim:
            return [_record("action", a.label, "injected", "needs the simulator's hardware", SKIP)]
        if a.args["what"].startswith("cgm_"):
            self._inject_cgm(a)
            return []
        hw = self.t.sim.hardware
        args = {k: v for k, v in a.args.items() if k != "what"}
        {"occlude": hw.occlude, "clear": hw.clear_occlusion, "remove": hw.remove_reservoir,
         "seat": hw.seat_reservoir, "drain": hw.battery_soc, "battery": hw.replace_battery,
         "stall": hw.stall, "motor_ok": hw.motor_ok, "runaway": hw.run_away, "missed": hw.missed_steps,
         "encoder": hw.encoder_fault, "encoder_ok": hw.encoder_ok}[a.args["what"]](**args)
        return []

    # ---- pump access ----------------------------------------------------------------------------
    def _request(self, cmd: str, **args) -> dict:
        try:
            return self.client.request(cmd, **args)
        except TimeoutError as e:
            raise Aborted(f"the pump stopped answering ({e})") from None

    def _sync(self) -> None:
        """A round trip: every event the pump sent before its reply has now been received."""
        info = self._request("ping")
        self.events_dropped = info.get("events_dropped", self.events_dropped)

    def status(self) -> dict:
        if self._status is None:
            self._status = self._request("status")
        return self._status

    def limits(self) -> dict:
        if self._limits is None:
            self._limits = self._request("limits_get")
        return self._limits

    def _snapshot(self) -> dict:
        st = dict(self._request("status"))
        keep = ["state", "reason", "reservoir_state", "profile", "temp_basal"]
        if self.t.is_sim:
            keep += ["reservoir_mU", "basal_delivered_mU", "bolus_delivered_mU", "prime_mU", "plunger_steps",
                     "local_s"]
        snap = {k: st.get(k) for k in keep}
        if snap["temp_basal"] and not self.t.is_sim:
            snap["temp_basal"] = {k: v for k, v in snap["temp_basal"].items() if k in ("percent", "rate_mUh",
                                                                                      "minutes")}
        for k in ("bolus", "extended"):
            b = st.get(k) or {}
            snap[k] = {f: b.get(f) for f in (("id", "requested_mU", "delivered_mU") if self.t.is_sim
                                             else ("id", "requested_mU"))} if b else None
        snap["limits"] = self._request("limits_get")
        snap["basal"] = self._request("basal_get").get("segments")
        snap["profiles"] = self._request("profile_list").get("profiles")
        calc = self.client.request_doc("calc_get", {})
        snap["calc"] = calc.get("data") if calc.get("ok") else None
        return snap

    def _track(self, cmd: str) -> None:
        """Note reservoir changes for the plant's therapy/priming split (after an accepted command)."""
        now = self.t.abs_ms()
        if cmd == "rewind" and not (self.service and self.service[-1][1] is None):
            self.service.append([now, None])
        elif cmd == "resume" and self.service and self.service[-1][1] is None:
            self.service[-1][1] = now

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self) -> list[dict]:
        s = self.scn.setup
        log: list[dict] = []

        def do(cmd: str, **args) -> dict:
            doc = self.client.request_doc(cmd, args)
            log.append({"cmd": cmd, "args": args, "ok": bool(doc.get("ok")), "t_ms": self.t.abs_ms(),
                        **({} if doc.get("ok") else {"error": f"{doc.get('err')}: {doc.get('msg')}"})})
            if not doc.get("ok"):
                raise Aborted(f"setup: the pump refused {cmd} {args}: {doc.get('err')}: {doc.get('msg')}")
            self._track(cmd)
            return doc.get("data") or {}

        def wait_for(state: str) -> None:
            for _ in range(SERVICE_WAIT_LIMIT_S):
                if self._request("status")["reservoir_state"] == state:
                    return
                self.t.wait(1000)
            raise Aborted(f"setup: the reservoir never reached {state!r}")

        def profiles() -> None:
            if s.segments is not None:
                do("profile_set", name="default", segments=s.segments)
            for name, segs in s.profiles.items():
                do("profile_set", name=name, segments=segs)
            active = s.active_profile or ("default" if s.segments is not None else None)
            if active:
                do("profile_select", name=active)

        profiles_done = False
        try:
            if self._request("status")["state"] != "suspended":
                do("suspend")
            if s.limits:
                doc = self.client.request_doc("limits_set", s.limits)
                if not doc.get("ok") and doc.get("err") == "limit" and (s.segments or s.profiles):
                    profiles()  # the old profiles block the new max_basal: replace them first
                    profiles_done = True
                    do("limits_set", **s.limits)
                elif not doc.get("ok"):
                    do("limits_set", **s.limits)  # records and reports the refusal
                else:
                    log.append({"cmd": "limits_set", "args": s.limits, "ok": True, "t_ms": self.t.abs_ms()})
            if not profiles_done:
                profiles()
            cgm = self.scn.cgm
            if cgm is not None:  # before the reservoir change: the link comes up meanwhile
                if cgm.pair:
                    do("cgm_pair", address=cgm.address)
                if cgm.settings:
                    do("cgm_set", **cgm.settings)
            if s.reservoir_mu is not None:
                do("rewind")
                wait_for("rewound")
                do("reservoir_insert", mU=s.reservoir_mu)
                do("prime_start")
                if s.prime_ms:
                    self.t.wait(s.prime_ms)
                do("prime_stop")
                do("cannula_fill", mU=s.cannula_mu)
                wait_for("ready")
            do("time_set", local_s=s.clock_s)
            if s.state == "running":
                do("resume")
        except TimeoutError as e:
            raise Aborted(f"setup: the pump stopped answering ({e})") from None
        self._sync()
        self._note_cgm([_event_doc(e) for e in self.client.drain_events()])
        if self._uses_history:
            self._hist_seq = self._request("status")["history_seq"]
        return log

    # ---- steps ----------------------------------------------------------------------------------
    def step(self, step: Step) -> dict:
        rec: dict[str, Any] = {"index": step.index, "at": step.at, "t_ms": step.t_ms, "time": fmt_time(step.t_ms),
                               "line": step.line, "label": step.label, "note": step.note, "action": None,
                               "checks": [], "events": [], "result": PASS}
        self.t.advance_to(step.t_ms)
        rec["reached_ms"] = self.t.now_ms()
        self._status = self._limits = self._cgm = None
        self._sync()
        t0_s = (self.t.abs_ms() - self.t.now_ms()) // 1000
        events = [_event_doc(e, t0_s) for e in self.client.drain_events()]
        checks: list[dict] = rec["checks"]
        if step.action:
            checks.extend(self._act(step, rec))
            # Events a command causes are sent before its reply, so they are all here already.
            events += [_event_doc(e, t0_s) for e in self.client.drain_events()]
        rec["events"] = events
        self._note_cgm(events)
        history = None
        for chk in step.checks:
            try:
                if chk.key in ("history", "no_history"):
                    if history is None:
                        history = self._history()
                    checks.append(self._check_history(chk, history))
                else:
                    checks.append(self._check(chk, step, events, rec))
            except PumpError as e:
                checks.append(_record(chk, chk.label, chk.cmp.describe() if chk.cmp else "", f"pump refused the "
                                      f"query: {e}", FAIL))
        if self._uses_history:
            try:
                self._hist_seq = self._request("status")["history_seq"]
            except PumpError as e:  # the next history check reports more records; record why
                checks.append(_record("history_seq", "history position for the next step", "a status reply",
                                      f"pump refused status: {e}", FAIL))
        if any(c["result"] == FAIL for c in checks):
            rec["result"] = FAIL
        return rec

    def _act(self, step: Step, rec: dict) -> list[dict]:
        a = step.action
        if a.key == "inject":
            return self._inject(a, rec)
        before = self._snapshot() if step.expect_refused else None
        try:
            doc = self.client.request_doc(a.cmd, a.args)
        except TimeoutError as e:
            raise Aborted(f"step {step.index}: no reply to {a.cmd} ({e})") from None
        ok = bool(doc.get("ok"))
        act = {"cmd": a.cmd, "args": a.args, "ok": ok}
        if ok:
            act["reply"] = doc.get("data")
            self._track(a.cmd)
        else:
            act["error"] = doc.get("err")
            act["message"] = doc.get("msg")
        rec["action"] = act
        refused_text = f"refused: {doc.get('err')}: {doc.get('msg')}"
        if not step.expect_refused:
            if ok:
                return []
            return [_record("action", f"{a.label} accepted", "accepted", refused_text, FAIL)]
        want = step.expect_refused
        exp = "refused" + ("" if want == "any" else f" ({want})")
        if ok:
            return [_record("expect_refused", f"{a.label} refused", exp, "accepted", FAIL)]
        good = want in ("any", doc.get("err"))
        out = [_record("expect_refused", f"{a.label} refused", exp, refused_text, PASS if good else FAIL)]
        after = self._snapshot()
        diff = [k for k in before if before[k] != after[k]]
        out.append(_record("unchanged", "nothing changed after the refusal", "no change",
                           "no change" if not diff else "changed: " + ", ".join(
                               f"{k} {before[k]} -> {after[k]}" for k in diff),
                           FAIL if diff else PASS))
        return out

    # ---- expectations ---------------------------------------------------------------------------
    def _check(self, chk: Check, step: Step, events: list[dict], rec: dict) -> dict:
        k = chk.key
        if k in STATUS_FIELDS:
            st = self.status()
            actual: Any = {
                "state": lambda: st["state"],
                "reason": lambda: st["reason"],
                "bolus_running": lambda: st.get("bolus") is not None,
                "extended_running": lambda: st.get("extended") is not None,
                "temp_basal_running": lambda: st.get("temp_basal") is not None,
                "basal_rate": lambda: u(st["basal_mUh"]),
                "reservoir": lambda: u(st["reservoir_mU"]),
                "delivered_basal": lambda: u(st["basal_delivered_mU"]),
                "delivered_bolus": lambda: u(st["bolus_delivered_mU"]),
                "delivered_total": lambda: u(st["basal_delivered_mU"] + st["bolus_delivered_mU"]),
                "profile": lambda: st["profile"],
                "reservoir_state": lambda: st["reservoir_state"],
                "prime": lambda: u(st["prime_mU"]),
                "plunger": lambda: self._steps_u(st["plunger_steps"], sim_only=False),
                "last_hour": lambda: u(st["last_hour_mU"]),
                "last_day": lambda: u(st["last_day_mU"]),
                "limit_hold": lambda: st["limit_hold"],
            }[k]()
            return self._cmp(chk, actual)
        if k == "clock":
            return self._cmp(chk, self.status()["local_s"])
        if k in STATUS_OBJECTS:
            obj = self.status().get("bolus" if k == "normal_bolus" else k)
            if chk.params["fields"] is None:
                return self._cmp(chk, obj is not None, "true" if obj is not None else "false")
            return self._check_fields(chk, obj, f"no {k.replace('_', ' ')} running")
        if k == "limits":
            return self._cmp(chk, u(self.limits()[chk.params["key"]]))
        if k == "basal_schedule":
            segs = self._request("basal_get")["segments"]
            ok = pairs(segs) == pairs(chk.cmp.value)
            return _record(chk, chk.label, _segments_text(chk.cmp.value), _segments_text(segs), PASS if ok else FAIL)
        if k == "profiles":
            doc = self.client.request_doc("profile_get", {"name": chk.params["name"]})
            if not doc.get("ok"):
                return _record(chk, chk.label, _segments_text(chk.cmp.value), f"{doc.get('err')}: {doc.get('msg')}",
                               FAIL)
            segs = doc["data"]["segments"]
            ok = pairs(segs) == pairs(chk.cmp.value)
            return _record(chk, chk.label, _segments_text(chk.cmp.value), _segments_text(segs), PASS if ok else FAIL)
        if k in ("reply", "calc"):
            act = rec.get("action") or {}
            if not act.get("ok"):
                return _record(chk, chk.label, chk.cmp.describe(), "the action was refused", FAIL)
            reply = dict(act.get("reply") or {})
            if k == "calc":
                for alias, (key, div) in CALC_ALIASES.items():
                    if key in reply:
                        reply.setdefault(alias, Decimal(reply[key]) / div)
                if "target_mgdl" in reply:
                    lo, hi = reply["target_mgdl"]
                    reply.setdefault("target", f"{lo}-{hi}")
            actual = _event_field(reply, chk.params["field"])
            return _record(chk, chk.label, chk.cmp.describe(), _show_field(actual),
                           PASS if _field_matches(chk.cmp, actual) else FAIL)
        if k in ("event", "no_event"):
            return self._check_event(chk, events)
        if k == "cgm":
            return self._check_cgm(chk)
        # The rest is measured on the plant.
        if self.t.plant is None:
            return _record(chk, chk.label, chk.cmp.describe() if chk.cmp else "", "needs the simulator's plant",
                           SKIP)
        t0 = self.t.abs_ms() - self.t.now_ms()  # scenario 00:00 on the plant's clock
        if k == "plant_delivered":
            kind = chk.params["kind"]
            t_from = chk.params["from_ms"]
            n = self._plant_steps(None if t_from is None else t_from + t0, chk.params["to_ms"] + t0, kind)
            return self._cmp(chk, self._steps_u(n), f"{fmt_dec(self._steps_u(n))} U ({n} steps)")
        if k == "pump_matches_plant":
            st = self.status()
            now = self.t.abs_ms()
            rows = [("delivered", st["delivered_steps"], self._plant_steps(None, now, "therapy")),
                     ("primed", st["prime_steps"], self._plant_steps(None, now, "service")),
                     ("plunger", st["plunger_steps"], self._plant_steps(None, now, "all"))]
            ok = all(a == b for _, a, b in rows)
            return _record(chk, chk.label,
                           "pump reports " + ", ".join(f"{w} {fmt_dec(self._steps_u(a))} U ({a} steps)"
                                                       for w, a, _ in rows),
                           "plant: " + ", ".join(f"{w} {fmt_dec(self._steps_u(b))} U ({b} steps)"
                                                 for w, _, b in rows),
                           PASS if ok else FAIL)
        if k == "bolus_speed":
            return self._check_speed(chk, t0)
        raise AssertionError(k)

    def _check_fields(self, chk: Check, data: Any, missing: str) -> dict:
        fields = chk.params["fields"]
        exp = ", ".join(f"{f}={c.describe()}" for f, c in fields.items())
        if data is None:
            return _record(chk, chk.label, exp, missing, FAIL)
        got = {f: _event_field(data, f) for f in fields}
        ok = all(_field_matches(c, got[f]) for f, c in fields.items())
        return _record(chk, chk.label, exp, ", ".join(f"{f}={_show_field(v)}" for f, v in got.items()),
                       PASS if ok else FAIL)

    def _cmp(self, chk: Check, actual: Any, actual_text: str | None = None) -> dict:
        ok = chk.cmp.test(actual)
        text = actual_text if actual_text is not None else show_value(actual, chk.cmp.unit)
        return _record(chk, chk.label, chk.cmp.describe(), text, PASS if ok else FAIL)

    def _steps_u(self, steps: int, sim_only: bool = True) -> Decimal:
        if self.t.plant is not None:
            return Decimal(steps * self.t.plant.nl_per_step) / 10_000
        st = self.status()  # a board: derive the step size from its own report
        per = Decimal(st["reservoir_mU"]) / st["reservoir_steps"] / 1000 if st.get("reservoir_steps") else Decimal(0)
        return steps * per

    # ---- the plant ------------------------------------------------------------------------------
    def _plant_times(self) -> dict[str, list[int]]:
        """Step times (us) by kind: therapy (forward, outside reservoir changes), service (forward,
        inside them: priming and cannula fill) and back (rewinds). Cached until the log changes."""
        trains = self.t.plant.trains
        key = (len(trains), trains[-1].emitted if trains else 0, tuple(tuple(w) for w in self.service))
        if self._plant_cache and self._plant_cache[0] == key:
            return self._plant_cache[1]
        out: dict[str, list[int]] = {"therapy": [], "service": [], "back": []}
        for tr in trains:
            if tr.direction < 0:
                kind = "back"
            elif any(a < tr.t0_ms and (b is None or tr.t0_ms <= b) for a, b in self.service):
                kind = "service"
            else:
                kind = "therapy"
            out[kind].extend(tr.step_times_us())
        for v in out.values():
            v.sort()
        self._plant_cache = (key, out)
        return out

    def _plant_steps(self, from_ms: int | None, to_ms: int, kind: str = "therapy") -> int:
        """Plant steps with from < t <= to (a step at exactly `to` counts; one at `from` does not):
        therapy or service steps forward, or (all) net plunger travel, forward minus back."""
        times = self._plant_times()

        def count(ts: list[int]) -> int:
            hi = bisect.bisect_right(ts, to_ms * 1000)
            return hi - (0 if from_ms is None else bisect.bisect_right(ts, from_ms * 1000))

        if kind == "all":
            return count(times["therapy"]) + count(times["service"]) - count(times["back"])
        return count(times[kind])

    def _check_speed(self, chk: Check, t0: int) -> dict:
        times = self._plant_times()["therapy"]
        a = bisect.bisect_right(times, (chk.params["from_ms"] + t0) * 1000)
        b = bisect.bisect_right(times, (chk.params["to_ms"] + t0) * 1000)
        window = times[a:b]
        best: list[int] = []
        run: list[int] = []
        for t in window:
            if run and t - run[-1] > BURST_GAP_US:
                if len(run) > len(best):
                    best = run
                run = []
            run.append(t)
        if len(run) > len(best):
            best = run
        if len(best) < 2:
            return _record(chk, chk.label, chk.cmp.describe(), f"no bolus burst in the window ({len(window)} steps)",
                           FAIL)
        span_us = best[-1] - best[0]
        speed = (Decimal((len(best) - 1) * self.t.plant.nl_per_step) / 10_000) / (Decimal(span_us) / 60_000_000)
        text = (f"{fmt_dec(speed)} U/min ({len(best)} steps from {fmt_time(best[0] // 1000 - t0)} "
                f"over {Decimal(span_us) / 1_000_000:.1f} s)")
        return _record(chk, chk.label, chk.cmp.describe(), text, PASS if chk.cmp.test(speed) else FAIL)

    # ---- events and history ---------------------------------------------------------------------
    def _check_event(self, chk: Check, events: list[dict]) -> dict:
        spec = chk.params
        named = [e for e in events if e["name"] == spec["name"]]

        def data(e: dict) -> dict:
            d = e["data"]
            if e["name"] == "cgm" and "rejected" in d:  # reason: crc matches rejected: 2
                return {**d, "reason": _reason(d["rejected"])}
            return d
        hits = [e for e in named if all(_field_matches(c, _event_field(data(e), f)) for f, c in spec["fields"].items())]
        return self._count_result(chk, "event", spec, named, hits, [e["name"] for e in events], _event_text)

    def _count_result(self, chk: Check, what: str, spec: dict, named: list, hits: list, all_names: list,
                      text) -> dict:
        fields = ", ".join(f"{f}={c.describe()}" for f, c in spec["fields"].items())
        want = spec["name"] + (f"({fields})" if fields else "")
        if chk.cmp is None:  # at least one
            exp, ok = f"{want} since the previous step", bool(hits)
        else:
            ok = chk.cmp.test(Decimal(len(hits)))
            exp = (f"no {want}" if chk.key.startswith("no_") else f"{chk.cmp.describe()} x {want}") + \
                " since the previous step"
        if hits:
            act = f"{len(hits)} matching: " + "; ".join(text(e) for e in hits[:3]) + (" ..." if len(hits) > 3 else "")
        elif named:
            act = "none matching; seen: " + "; ".join(text(e) for e in named[:4]) + (" ..." if len(named) > 4 else "")
        else:
            seen = sorted(set(all_names))
            act = f"no {spec['name']!r} {what}" + ("s" if what == "event" else " records") + \
                (f" (seen: {', '.join(seen)})" if seen else f" (no {what} at all)" if what == "history"
                 else " (no events at all)")
        return _record(chk, chk.label, exp, act, PASS if ok else FAIL)

    def _history(self) -> dict:
        """The history records added since the previous step, decoded by type."""
        since, recs, lost = self._hist_seq, [], False
        uu = 0
        while True:
            doc = self._request("history", since=since, limit=32)
            uu = doc.get("uu_per_step", uu)
            if doc["oldest"] > since + 1 and not recs:
                lost = True
            recs += doc["records"]
            if not doc["records"] or doc["next"] >= doc["newest"]:
                break
            since = doc["next"]
        return {"records": [_decode_record(r, uu) for r in recs], "lost": lost}

    def _check_history(self, chk: Check, history: dict) -> dict:
        spec = chk.params
        recs = history["records"]
        named = [r for r in recs if r["type"] == spec["name"]]
        hits = [r for r in named if all(_field_matches(c, _event_field(r, f)) for f, c in spec["fields"].items())]
        res = self._count_result(chk, "history", spec, named, hits, [r["type"] for r in recs], _record_text)
        if history["lost"]:
            res["actual"] += " (older records since the previous step are gone from the pump's ring)"
        return res

    # ---- totals ---------------------------------------------------------------------------------
    def totals(self) -> dict:
        out: dict[str, Any] = {}
        try:
            st = self._request("status")
            out["pump"] = {"state": st["state"], "reason": st["reason"],
                           "delivered_basal_U": float(u(st["basal_delivered_mU"])),
                           "delivered_bolus_U": float(u(st["bolus_delivered_mU"])),
                           "delivered_total_U": float(u(st["basal_delivered_mU"] + st["bolus_delivered_mU"])),
                           "delivered_steps": st["delivered_steps"],
                           "primed_U": float(u(st["prime_mU"])), "prime_steps": st["prime_steps"],
                           "plunger_steps": st["plunger_steps"],
                           "reservoir_U": float(u(st["reservoir_mU"]))}
        except (Aborted, PumpError, OSError) as e:
            out["pump"] = {"error": str(e)}
        plant = self.t.plant
        if plant is not None:
            now = self.t.abs_ms()
            steps = self._plant_steps(None, now, "therapy")
            primed = self._plant_steps(None, now, "service")
            out["plant"] = {"steps": steps, "delivered_U": float(self._steps_u(steps)),
                            "prime_steps": primed, "primed_U": float(self._steps_u(primed)),
                            "net_steps": plant.net_steps(), "trains": len(plant.trains),
                            "trains_cut_short": sum(1 for t in plant.trains if t.emitted < t.n),
                            "nl_per_step": plant.nl_per_step,
                            "reservoir_changes": [[a, b] for a, b in self.service]}
        out["link"] = {"events_dropped": self.events_dropped, "event_gaps": self.client.event_gaps,
                       "bad_frames": self.client.bad_frames}
        if self.scn.cgm is not None or self.cgm_seen["readings"] or self.cgm_injected:
            out["cgm"] = self.cgm_totals()
        return out

    def cgm_totals(self) -> dict:
        """The CGM at the end: the pump's view (`cgm`), its history (readings logged, backfilled ones
        included; rejections by reason), the events seen and the simulated radio's record."""
        seen = self.cgm_seen
        out: dict[str, Any] = {"sensor": self.scn.cgm.address if self.scn.cgm else None}
        try:
            st = self._request("cgm")
        except PumpError as e:
            return {**out, "error": str(e)}
        counts = st.get("counts") or [0]
        logged = self._history_records(22)
        rej = self._history_records(23)
        rejected = None if rej is None else {r[3]: sum(1 for x in rej if x[3] == r[3]) for r in rej}
        out.update({
            "paired": st.get("paired"), "link": st.get("link"),
            "readings": counts[0],  # accepted (the pump's counts[0])
            "logged": None if logged is None else len(logged),  # history records of readings, backfilled included
            "backfilled": _backfilled(logged),
            "glucose_mgdl": st.get("glucose_mgdl"), "trend": st.get("trend"), "age_s": st.get("age_s"),
            "rejected": {_reason(r): n for r, n in sorted(rejected.items())} if rejected is not None else None,
            "counts": {_reason(i): n for i, n in enumerate(counts) if n},
            "link_ups": seen["link_up"], "link_downs": seen["link_down"],
            "reconnects": max(seen["link_up"] - 1, 0),
            "alarms": dict(seen["alarms"]),
            "events_lost": st.get("events_lost"),
            "injected": dict(self.cgm_injected),
            "low_mgdl": st.get("low_mgdl"), "high_mgdl": st.get("high_mgdl"), "loss_min": st.get("loss_min"),
        })
        br = getattr(self.t, "bridge", None)
        if br is not None:
            hist = br.history
            out["radio"] = {
                "link_losses": sum(1 for h in hist if h[1] == "out"),
                "connects": {a: sum(1 for h in hist if h[1] == "connect" and h[2] == a)
                             for a in sorted({h[2] for h in hist if h[1] == "connect"})},
                "sensors": [s.address.upper() for s in br.sensors],
                "readings_made": br.stats["readings"], "errors": list(br.errors)}
        return out

    def _history_records(self, kind: int) -> list[list[int]] | None:
        """Every history record of a type the pump holds ([seq, t, type, a, b]), or None."""
        since, out = 0, []
        try:
            for _ in range(1000):
                doc = self._request("history", since=since, limit=32, type=kind)
                out += doc["records"]
                if doc["next"] >= doc["newest"] or doc["next"] <= since:
                    break
                since = doc["next"]
        except PumpError:
            return None
        return out


BACKFILL_LATE_S = 60  # a reading logged this long after it was made came by RACP, not live


def _backfilled(records: list[list[int]] | None) -> int | None:
    """Readings (history type 22: t = pump time logged, b = the sensor's time offset, min) that
    reached the pump late: fetched by RACP after a link loss or a reading lost on the air. A live
    reading is logged the instant it is made, so the earliest t - 60 b is the session's start on
    the pump's clock (one sensor session: the scenario's sensor never starts another)."""
    if not records:
        return None if records is None else 0
    t0 = min(t - 60 * off for _, t, _, _, off in records)
    return sum(1 for _, t, _, _, off in records if t - (t0 + 60 * off) > BACKFILL_LATE_S)


def _decode_record(r: list, uu: int) -> dict:
    seq, t, kind, a, b = r
    name = next((n for n, spec in HISTORY_TYPES.items() if spec[0] == kind), f"type_{kind}")
    out: dict[str, Any] = {"type": name, "seq": Decimal(seq), "t_s": Decimal(t), "a": Decimal(a), "b": Decimal(b)}
    spec = HISTORY_TYPES.get(name)
    if spec:
        for fld, v in ((spec[1], a), (spec[2], b)):
            if not fld:
                continue
            fname, how = fld
            if how == "U":
                out[fname] = Decimal(v * uu) / 1_000_000
            elif how == "U±":
                out[fname] = Decimal(abs(v) * uu) / 1_000_000
            elif how == "int":
                out[fname] = Decimal(v)
            elif how == "clock":
                out[fname] = fmt_clock(v)
            else:
                out[fname] = how[v] if 0 <= v < len(how) else str(v)
        if name == "bolus_cancel":
            out["kind"] = "normal" if b > 0 else "extended"
    return out


def _record_text(r: dict) -> str:
    spec = HISTORY_TYPES.get(r["type"])
    names = [f[0] for f in spec[1:] if f] + (["kind"] if r["type"] == "bolus_cancel" else []) if spec else ["a", "b"]
    inner = " ".join(f"{n}={_show_field(r[n])}" for n in names if n in r)
    return f"{r['type']}({inner}) #{r['seq']}"


def run_scenario(scn: Scenario, make_target) -> dict:
    """Run one scenario on a fresh target from make_target(); never raises for pump trouble."""
    wall0 = time.monotonic()
    res: dict[str, Any] = {"file": scn.path, "name": scn.name, "description": scn.description,
                           "result": PASS, "error": None, "setup": [], "steps": [],
                           "virtual_ms": 0, "virtual_time": fmt_time(0)}
    target = None
    try:
        target = make_target()
        res["target"] = target.name
        run = ScenarioRun(scn, target)
        try:
            res["setup"] = run.setup()
            target.start_clock()
            for step in scn.steps:
                res["steps"].append(run.step(step))
        except Aborted as e:
            res["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - the firmware died or the link broke: report, don't crash
            res["error"] = f"{type(e).__name__}: {e}"
        res["virtual_ms"] = target.now_ms()
        res["virtual_time"] = fmt_time(res["virtual_ms"])
        if res["error"] is None:
            res.update(run.totals())
            try:
                res["heap"] = target.heap()
            except Exception:  # noqa: BLE001 - a heap figure is nice to have, not a result
                res["heap"] = None
    except Exception as e:  # noqa: BLE001 - could not start the pump at all
        res["error"] = f"could not start the pump: {type(e).__name__}: {e}"
    finally:
        if target is not None:
            target.close()
    for step in scn.steps[len(res["steps"]):]:
        res["steps"].append({"index": step.index, "at": step.at, "t_ms": step.t_ms, "time": fmt_time(step.t_ms),
                             "line": step.line, "label": step.label, "note": step.note, "action": None,
                             "checks": [], "events": [], "result": NOT_RUN})
    checks = [c for s in res["steps"] for c in s["checks"]]
    res["counts"] = {r: sum(1 for c in checks if c["result"] == r) for r in (PASS, FAIL, SKIP)}
    res["counts"]["steps_not_run"] = sum(1 for s in res["steps"] if s["result"] == NOT_RUN)
    if res["error"] or res["counts"][FAIL]:
        res["result"] = FAIL
    res["wall_s"] = round(time.monotonic() - wall0, 3)
    return res
