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

from hil.scenario.model import Check, Compare, Scenario, Step, fmt_dec, fmt_time, show_value
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

    def __init__(self, micropython: str | None = None, heap: str | None = None):
        from hil.sim.firmware import SimPump

        kw: dict[str, Any] = {"micropython": micropython}
        if heap:
            kw["heap"] = heap
        self.sim = SimPump(**kw)
        self.client: PumpClient | None = None
        try:
            self.sim.start()
            self.client = PumpClient(self.sim.console_url)
        except BaseException:
            self.sim.close()
            raise

    @property
    def plant(self):
        return self.sim.plant

    def start_clock(self) -> None:
        pass  # virtual time starts at 0 with the firmware and has not moved during setup

    def now_ms(self) -> int:
        return self.sim.now_ms

    def advance_to(self, t_ms: int) -> None:
        if t_ms > self.sim.now_ms:
            # A simulated day takes about a second; minutes without progress mean a stuck firmware.
            self.sim.run_until(t_ms, timeout=ADVANCE_TIMEOUT_S)

    def heap(self) -> dict | None:
        return self.sim.heap()

    def close(self) -> None:
        if self.client:
            self.client.close()
        self.sim.close()


class BoardTarget:
    """A real pump on a serial URL: time is the wall clock, measured from the end of setup."""

    is_sim = False
    plant = None

    def __init__(self, url: str):
        self.name = url
        self.client = PumpClient(url, timeout=3.0)
        self.t0 = time.monotonic()

    def start_clock(self) -> None:
        self.t0 = time.monotonic()

    def now_ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def advance_to(self, t_ms: int) -> None:
        while (left := t_ms / 1000 - (time.monotonic() - self.t0)) > 0:
            time.sleep(min(left, 1.0))

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
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}={Decimal(r) / 1000:f}".rstrip("0").rstrip(".") for s, r in segs)


def _record(check: Check | str, what: str, expected: str, actual: str, result: str, **extra) -> dict:
    key = check.key if isinstance(check, Check) else check
    return {"check": key, "what": what, "expected": expected, "actual": actual, "result": result, **extra}


def _event_doc(ev) -> dict:
    return {"name": ev.name, "seq": ev.seq, "t_s": ev.t, "data": ev.data}


def _event_text(ev: dict) -> str:
    d = ev["data"]
    keys = [k for k in ("phase", "state", "reason", "alarm", "delivered_mU", "requested_mU") if k in d]
    inner = " ".join(f"{k}={d[k]}" for k in keys)
    return f"{ev['name']}({inner}) at {fmt_time(ev['t_s'] * 1000)}" if inner else \
        f"{ev['name']} at {fmt_time(ev['t_s'] * 1000)}"


_MISSING = object()


def _event_field(data: dict, key: str) -> Any:
    """An event data field; 'delivered' reads delivered_mU in units."""
    if key in data:
        v = data[key]
        return Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v
    if key + "_mU" in data and isinstance(data[key + "_mU"], int):
        return u(data[key + "_mU"])
    return _MISSING


def _field_matches(cmp: Compare, actual: Any) -> bool:
    if actual is _MISSING:
        return False
    if cmp.kind == "eq":
        want = cmp.value
        if isinstance(actual, Decimal) and not isinstance(want, bool):
            try:
                return actual == Decimal(str(want))
            except ArithmeticError:
                return False
        return actual == want
    return isinstance(actual, Decimal) and cmp.test(actual)


# ---- the runner ---------------------------------------------------------------------------------
class ScenarioRun:
    def __init__(self, scenario: Scenario, target):
        self.scn = scenario
        self.t = target
        self.client: PumpClient = target.client
        self.events_dropped = 0
        self._status: dict | None = None
        self._limits: dict | None = None

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
        keep = ("state", "reason", "reservoir_mU", "basal_delivered_mU", "bolus_delivered_mU") if self.t.is_sim \
            else ("state", "reason")
        snap = {k: st.get(k) for k in keep}
        bolus = st.get("bolus") or {}
        snap["bolus"] = {k: bolus.get(k) for k in (("id", "requested_mU", "delivered_mU") if self.t.is_sim
                                                  else ("id", "requested_mU"))} if bolus else None
        snap["limits"] = self._request("limits_get")
        snap["basal"] = self._request("basal_get").get("segments")
        return snap

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self) -> list[dict]:
        s = self.scn.setup
        log: list[dict] = []

        def do(cmd: str, **args) -> None:
            doc = self.client.request_doc(cmd, args)
            log.append({"cmd": cmd, "args": args, "ok": bool(doc.get("ok")),
                        **({} if doc.get("ok") else {"error": f"{doc.get('err')}: {doc.get('msg')}"})})
            if not doc.get("ok"):
                raise Aborted(f"setup: the pump refused {cmd} {args}: {doc.get('err')}: {doc.get('msg')}")

        try:
            if self._request("status")["state"] != "suspended":
                do("suspend")
            if s.limits:
                doc = self.client.request_doc("limits_set", s.limits)
                if not doc.get("ok") and doc.get("err") == "limit" and s.segments:
                    do("basal_set", segments=s.segments)  # the old schedule blocks the new max_basal
                    do("limits_set", **s.limits)
                elif not doc.get("ok"):
                    do("limits_set", **s.limits)  # records and reports the refusal
                else:
                    log.append({"cmd": "limits_set", "args": s.limits, "ok": True})
            if s.segments is not None:
                do("basal_set", segments=s.segments)
            if s.reservoir_mu is not None:
                do("reservoir_load", mU=s.reservoir_mu)
            if s.state == "running":
                do("resume")
        except TimeoutError as e:
            raise Aborted(f"setup: the pump stopped answering ({e})") from None
        self._sync()
        self.client.drain_events()
        return log

    # ---- steps ----------------------------------------------------------------------------------
    def step(self, step: Step) -> dict:
        rec: dict[str, Any] = {"index": step.index, "at": step.at, "t_ms": step.t_ms, "time": fmt_time(step.t_ms),
                               "line": step.line, "label": step.label, "note": step.note, "action": None,
                               "checks": [], "events": [], "result": PASS}
        self.t.advance_to(step.t_ms)
        rec["reached_ms"] = self.t.now_ms()
        self._status = self._limits = None
        self._sync()
        events = [_event_doc(e) for e in self.client.drain_events()]
        checks: list[dict] = rec["checks"]
        if step.action:
            checks.extend(self._act(step, rec))
            # Events a command causes are sent before its reply, so they are all here already.
            events += [_event_doc(e) for e in self.client.drain_events()]
        rec["events"] = events
        for chk in step.checks:
            try:
                checks.append(self._check(chk, step, events))
            except PumpError as e:
                checks.append(_record(chk, chk.label, chk.cmp.describe() if chk.cmp else "", f"pump refused the "
                                      f"query: {e}", FAIL))
        if any(c["result"] == FAIL for c in checks):
            rec["result"] = FAIL
        return rec

    def _act(self, step: Step, rec: dict) -> list[dict]:
        a = step.action
        before = self._snapshot() if step.expect_refused else None
        try:
            doc = self.client.request_doc(a.cmd, a.args)
        except TimeoutError as e:
            raise Aborted(f"step {step.index}: no reply to {a.cmd} ({e})") from None
        ok = bool(doc.get("ok"))
        act = {"cmd": a.cmd, "args": a.args, "ok": ok}
        if ok:
            act["reply"] = doc.get("data")
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
    def _check(self, chk: Check, step: Step, events: list[dict]) -> dict:
        k = chk.key
        if k in ("state", "reason", "bolus_running", "basal_rate", "reservoir",
                 "delivered_basal", "delivered_bolus", "delivered_total"):
            st = self.status()
            actual: Any = {
                "state": lambda: st["state"],
                "reason": lambda: st["reason"],
                "bolus_running": lambda: st.get("bolus") is not None,
                "basal_rate": lambda: u(st["basal_mUh"]),
                "reservoir": lambda: u(st["reservoir_mU"]),
                "delivered_basal": lambda: u(st["basal_delivered_mU"]),
                "delivered_bolus": lambda: u(st["bolus_delivered_mU"]),
                "delivered_total": lambda: u(st["basal_delivered_mU"] + st["bolus_delivered_mU"]),
            }[k]()
            return self._cmp(chk, actual)
        if k == "limits":
            return self._cmp(chk, u(self.limits()[chk.params["key"]]))
        if k == "basal_schedule":
            segs = self._request("basal_get")["segments"]
            ok = segs == chk.cmp.value
            return _record(chk, chk.label, _segments_text(chk.cmp.value), _segments_text(segs), PASS if ok else FAIL)
        if k in ("event", "no_event"):
            return self._check_event(chk, events)
        # The rest is measured on the plant.
        if self.t.plant is None:
            return _record(chk, chk.label, chk.cmp.describe() if chk.cmp else "", "needs the simulator's plant",
                           SKIP)
        if k == "plant_delivered":
            n = self._plant_steps(chk.params["from_ms"], chk.params["to_ms"])
            return self._cmp(chk, self._steps_u(n), f"{fmt_dec(self._steps_u(n))} U ({n} steps)")
        if k == "pump_matches_plant":
            st = self.status()
            pump_steps = st["delivered_steps"]
            plant_steps = self._plant_steps(None, self.t.now_ms())
            ok = pump_steps == plant_steps
            return _record(chk, chk.label, f"pump reports {fmt_dec(self._steps_u(pump_steps))} U ({pump_steps} steps)",
                           f"plant delivered {fmt_dec(self._steps_u(plant_steps))} U ({plant_steps} steps)",
                           PASS if ok else FAIL)
        if k == "bolus_speed":
            return self._check_speed(chk)
        raise AssertionError(k)

    def _cmp(self, chk: Check, actual: Any, actual_text: str | None = None) -> dict:
        ok = chk.cmp.test(actual)
        text = actual_text if actual_text is not None else show_value(actual, chk.cmp.unit)
        return _record(chk, chk.label, chk.cmp.describe(), text, PASS if ok else FAIL)

    def _steps_u(self, steps: int) -> Decimal:
        return Decimal(steps * self.t.plant.nl_per_step) / 10_000

    def _plant_steps(self, from_ms: int | None, to_ms: int) -> int:
        """Net plunger steps with from < t <= to (a step at exactly `to` counts; one at `from` does not)."""
        total = 0
        for direction, sign in ((1, 1), (-1, -1)):
            times = self.t.plant.step_times_us(direction)
            hi = bisect.bisect_right(times, to_ms * 1000)
            lo = 0 if from_ms is None else bisect.bisect_right(times, from_ms * 1000)
            total += sign * (hi - lo)
        return total

    def _check_speed(self, chk: Check) -> dict:
        times = self.t.plant.step_times_us(1)
        a = bisect.bisect_right(times, chk.params["from_ms"] * 1000)
        b = bisect.bisect_right(times, chk.params["to_ms"] * 1000)
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
        text = (f"{fmt_dec(speed)} U/min ({len(best)} steps from {fmt_time(best[0] // 1000)} "
                f"over {Decimal(span_us) / 1_000_000:.1f} s)")
        return _record(chk, chk.label, chk.cmp.describe(), text, PASS if chk.cmp.test(speed) else FAIL)

    def _check_event(self, chk: Check, events: list[dict]) -> dict:
        spec = chk.params
        named = [e for e in events if e["name"] == spec["name"]]
        hits = [e for e in named if all(_field_matches(c, _event_field(e["data"], f)) for f, c in spec["fields"].items())]
        fields = ", ".join(f"{f}={c.describe()}" for f, c in spec["fields"].items())
        want = spec["name"] + (f"({fields})" if fields else "")
        if chk.cmp is None:  # at least one
            exp, ok = f"{want} since the previous step", bool(hits)
        else:
            ok = chk.cmp.test(Decimal(len(hits)))
            exp = (f"no {want}" if chk.key == "no_event" else f"{chk.cmp.describe()} x {want}") + \
                " since the previous step"
        if hits:
            act = f"{len(hits)} matching: " + "; ".join(_event_text(e) for e in hits[:3]) + (" ..." if len(hits) > 3
                                                                                            else "")
        elif named:
            act = "none matching; seen: " + "; ".join(_event_text(e) for e in named[:4]) + (" ..." if len(named) > 4
                                                                                            else "")
        else:
            seen = sorted({e["name"] for e in events})
            act = f"no {spec['name']!r} events" + (f" (seen: {', '.join(seen)})" if seen else " (no events at all)")
        return _record(chk, chk.label, exp, act, PASS if ok else FAIL)

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
                           "reservoir_U": float(u(st["reservoir_mU"]))}
        except (Aborted, PumpError, OSError) as e:
            out["pump"] = {"error": str(e)}
        plant = self.t.plant
        if plant is not None:
            net = plant.net_steps()
            out["plant"] = {"steps": net, "delivered_U": float(self._steps_u(net)), "trains": len(plant.trains),
                            "trains_cut_short": sum(1 for t in plant.trains if t.emitted < t.n),
                            "nl_per_step": plant.nl_per_step}
        out["link"] = {"events_dropped": self.events_dropped, "event_gaps": self.client.event_gaps,
                       "bad_frames": self.client.bad_frames}
        return out


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
