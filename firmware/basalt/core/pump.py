# The pump: its state machine and the therapy it owes, resident and driven one tick a second.
# Commands that configure it live in basalt/cmd (overlays loaded per command); this module
# holds only what every tick needs, and the few actions the safety paths must always reach.
#
# States      SUSPENDED <-> RUNNING. Delivery happens only while RUNNING, and RUNNING is only
#             reachable when the reservoir workflow is complete (res_state == READY).
# Reservoir   NONE/READY --rewind--> REWINDING --(home)--> REWOUND --insert--> INSERTED
#             --prime_start--> PRIMING --prime_stop--> PRIMED --cannula_fill--> FILLING --> READY
# Therapy     basal from the active profile at local time of day, or a temp basal; one normal
#             and one extended bolus at a time (a combo is one of each). Every emitted step is
#             accounted from the motor's counter; totals, reservoir and plunger are exact.
from ..lib import overlay
from .delivery import RETRACT, Delivery
from .history import (
    ALARM,
    BOLUS_CANCEL,
    BOLUS_DONE,
    LIMIT_HOLD,
    SUSPEND,
    TEMP_END,
    History,
)
from .limits import Limits
from .profiles import Profiles
from .window import Windows

RUNNING = "running"
SUSPENDED = "suspended"

# reservoir workflow
NONE = "none"
REWINDING = "rewinding"
REWOUND = "rewound"
INSERTED = "inserted"
PRIMING = "priming"
PRIMED = "primed"
FILLING = "filling"
READY = "ready"

# suspend reasons (history code = index)
REASONS = ("boot", "user", "reservoir_empty", "fault", "reservoir")

PROGRESS_EVERY_S = 5  # bolus progress events while a bolus runs
PRIME_HZ = 40  # 12 U/min: tubing prime speed
PRIME_MAX_STEPS = 6000  # 30 U: a prime that long means something is wrong; stop it
CANNULA_FILL_MU = 300  # 0.3 U, the soft-cannula fill volume of common infusion sets


class Pump:
    def __init__(self, motor, mech, emit=None, annunciator=None):
        self.mech = mech
        self.delivery = Delivery(motor, mech)
        self.emit = emit or (lambda name, data: None)
        self.annunciator = annunciator  # buzzer + LED (HAL); the alarm system (next issue) drives more
        self.storage = None  # the storage HAL, for the settings overlays (cmd/_save.py, cmd/settings.py)
        self.limits = Limits()
        self.profiles = Profiles()
        self.win = Windows()
        self.history = History()
        self.calc = None  # bolus calculator settings (cmd/calc_cfg.py), None until set
        self.state = SUSPENDED
        self.reason = 0
        self.res_state = NONE
        self.uptime_s = 0
        self.clock_offset_s = 0  # local time (s since 2000-01-01) minus uptime
        self.reservoir_steps = 0
        self.plunger_steps = 0  # forward travel since the plunger was last home
        self.basal_steps = 0  # lifetime totals, in steps
        self.bolus_steps = 0
        self.prime_steps = 0
        self.extra_steps = 0  # emitted beyond any command (motor fault)
        self.prime_run = 0  # steps of the prime/fill in progress
        self.fill_target = 0
        self.bolus_id = 0
        self.nb_req = self.nb_done = 0  # normal bolus: requested / emitted steps (0 = none)
        self.nb_id = 0
        self.xb_req = self.xb_done = 0  # extended bolus
        self.xb_dur = self.xb_start = self.xb_id = 0
        self.tb_end = 0  # temp basal: end uptime (0 = none)
        self.tb_pct = -1  # percent of the profile, or -1 for an absolute rate
        self.tb_rate = 0
        self.tb_min = 0
        self.tb_steps = 0
        self.train_in_temp = False
        self.holding = False  # the limit backstop is withholding delivery
        self.cap_hour = self.cap_day = 0
        self.set_caps()

    # ---- time -------------------------------------------------------------------------
    def local_s(self):
        return self.clock_offset_s + self.uptime_s

    def minute_of_day(self):
        return (self.local_s() // 60) % 1440

    def basal_rate(self):
        """The basal rate in force now, mU/h (0 when not running)."""
        if self.state != RUNNING:
            return 0
        r = self.profiles.rate_at(self.minute_of_day())
        if self.tb_end:
            return self.tb_rate if self.tb_pct < 0 else r * self.tb_pct // 100
        return r

    def set_caps(self):
        m = self.mech
        self.cap_hour = m.steps_floor(self.limits.max_hour_mU)
        self.cap_day = m.steps_floor(self.limits.max_day_mU)

    # ---- the control tick ---------------------------------------------------------------
    def tick(self):
        """One control period. The train it starts covers the second [u, u+1) of uptime u, at
        the rates in force at its start: a segment or temp basal that begins at u owns it."""
        self._settle(False)
        u = self.uptime_s
        minute = self.minute_of_day()
        self.uptime_s = u + 1
        self.win.advance(u)
        if self.tb_end and u >= self.tb_end:
            self.end_temp(1)
        if self.res_state in (REWINDING, PRIMING, FILLING):
            # Reservoir change (suspended): the rewind/prime/fill step lives in an overlay, as it
            # runs only for the minutes a reservoir change takes.
            overlay.call("service", "tick", self)
            return
        if self.state != RUNNING:
            return
        if self.reservoir_steps == 0:
            self.stop_delivery(2)
            return
        d = self.delivery
        if self.tb_end and self.tb_pct < 0:
            basal = d.accrue_basal(self.tb_rate, -1)
        else:
            basal = d.accrue_basal(self.profiles.rate_at(minute), self.tb_pct if self.tb_end else -1)
        ext = normal = 0
        if self.xb_req:
            ext = d.accrue_ext(self.xb_req, self.xb_dur, self.xb_req - self.xb_done, u - self.xb_start >= self.xb_dur)
        if self.nb_req:
            normal = d.accrue_normal(self.limits.bolus_speed_mU_min, self.nb_req - self.nb_done)
        n = basal + ext + normal
        room = self.cap_hour - self.win.hour_sum
        if self.cap_day - self.win.day_sum < room:
            room = self.cap_day - self.win.day_sum
        if n > room:
            # Backstop: commands are checked against these limits before they are accepted,
            # so this only fires if that check was wrong. Withhold bolus first, then basal.
            held = n - (room if room > 0 else 0)
            for_normal = normal if normal < held else held
            normal -= for_normal
            held -= for_normal
            for_ext = ext if ext < held else held
            ext -= for_ext
            held -= for_ext
            basal -= held  # withheld basal is dropped, not owed later: the limit wins
            if not self.holding:  # latched: one alarm per episode, however long it holds
                self.holding = True
                self.record(LIMIT_HOLD, n - basal - ext - normal)
                self.alarm("limit_hold")
        elif self.holding and n and self.win.hour_sum + n <= self.cap_hour // 2:
            self.holding = False  # clear once well inside the limit again
        if basal + ext + normal > self.reservoir_steps:
            left = self.reservoir_steps
            basal = basal if basal < left else left
            ext = ext if ext < left - basal else left - basal
            normal = normal if normal < left - basal - ext else left - basal - ext
        self.train_in_temp = self.tb_end != 0
        d.start(basal, ext, normal)
        if (self.nb_req or self.xb_req) and self.uptime_s % PROGRESS_EVERY_S == 0:
            if self.nb_req:
                self.emit("bolus", self.bolus_info(1, "progress"))
            if self.xb_req and self.uptime_s % 60 == 0:
                self.emit("bolus", self.bolus_info(2, "progress"))

    def _settle(self, stop):
        direction = self.delivery.direction
        basal, ext, normal, service, extra = self.delivery.settle(stop)
        if basal + ext + normal + service + extra == 0:
            return
        if direction == RETRACT:
            self.plunger_steps -= service + extra
            self.prime_run += service
            return
        used = basal + ext + normal + service + extra
        self.plunger_steps += used
        self.reservoir_steps = self.reservoir_steps - used if used < self.reservoir_steps else 0
        self.basal_steps += basal
        self.bolus_steps += ext + normal
        self.prime_steps += service
        self.prime_run += service
        self.extra_steps += extra
        if self.train_in_temp:  # only trains accrued under the temp basal count as its delivery
            self.tb_steps += basal
        self.nb_done += normal
        self.xb_done += ext
        self.win.add(basal + ext + normal + extra, ext + normal)
        if self.nb_req and self.nb_done >= self.nb_req:
            self._bolus_end(1, "complete")
        if self.xb_req and self.xb_done >= self.xb_req:
            self._bolus_end(2, "complete")

    # ---- boluses ----------------------------------------------------------------------
    def bolus_info(self, kind, phase):
        m = self.mech
        if kind == 1:
            bid, req, done = self.nb_id, self.nb_req, self.nb_done
        else:
            bid, req, done = self.xb_id, self.xb_req, self.xb_done
        info = {"id": bid, "kind": "normal" if kind == 1 else "extended", "phase": phase,
                "requested_mU": m.mu_from_steps(req), "delivered_mU": m.mu_from_steps(done),
                "requested_steps": req, "delivered_steps": done}
        if kind == 2:
            info["minutes"] = self.xb_dur // 60
        return info

    def _bolus_end(self, kind, phase):
        info = self.bolus_info(kind, phase)
        if phase == "complete":
            self.record(BOLUS_DONE, info["delivered_steps"], kind)
        else:
            req = info["requested_steps"]
            self.record(BOLUS_CANCEL, info["delivered_steps"], req if kind == 1 else -req)
        self.emit("bolus", info)
        if kind == 1:
            self.nb_req = self.nb_done = 0
            self.delivery.normal_acc = 0
        else:
            self.xb_req = self.xb_done = 0
            self.delivery.ext_acc = 0
        return info

    # ---- temp basal -------------------------------------------------------------------
    def end_temp(self, how):
        """End the temp basal: how 1 = ran its course (at a tick, trains already accounted),
        2 = cancelled/replaced/suspended (first account the train in flight, which is its)."""
        if not self.tb_end:
            return None
        if how == 2:
            self._settle(True)
        info = {"phase": "ended" if how == 1 else "cancelled", "percent": self.tb_pct, "rate_mUh": self.tb_rate,
                "minutes": self.tb_min, "delivered_mU": self.mech.mu_from_steps(self.tb_steps),
                "delivered_steps": self.tb_steps}
        self.record(TEMP_END, self.tb_steps, how)
        self.tb_end = 0
        self.tb_pct = -1
        self.emit("temp_basal", info)
        return info

    # ---- state ------------------------------------------------------------------------
    def stop_delivery(self, reason):
        """Stop the motor now, account exactly, end boluses and any temp basal, and suspend."""
        self._settle(True)
        out = {"state": SUSPENDED, "bolus_cancelled": None, "extended_cancelled": None, "temp_cancelled": None}
        if self.nb_req:
            out["bolus_cancelled"] = self._bolus_end(1, "cancelled")
        if self.xb_req:
            out["extended_cancelled"] = self._bolus_end(2, "cancelled")
        out["temp_cancelled"] = self.end_temp(2)
        if self.state != SUSPENDED:
            self.state = SUSPENDED
            self.reason = reason
            self.record(SUSPEND, reason)
            self.emit("state", {"state": SUSPENDED, "reason": REASONS[reason]})
            self.show("warn")
            if reason == 2:
                self.alarm("reservoir_empty")
        return out

    def show(self, led, buzzer=None):
        """Tell the user through the annunciator HAL: LED pattern, and a buzzer pattern if given."""
        a = self.annunciator
        if a is not None:
            a.led(led)
            if buzzer:
                a.buzzer(buzzer)

    def alarm(self, name, detail=None):
        self.show("alarm", "alarm")
        self.record(ALARM, ALARMS.index(name) if name in ALARMS else 0)
        ev = {"alarm": name, "priority": "high"}
        if detail:
            ev["detail"] = detail
        self.emit("alarm", ev)

    def fault(self, detail):
        """Internal error: stop the motor without trusting other state, account what the counter
        says if it still can, suspend, alarm."""
        try:
            self.stop_delivery(3)
        except Exception:  # noqa: BLE001 - the state itself may be what is broken
            self.delivery.motor.stop()
            self.delivery.t_basal = self.delivery.t_ext = self.delivery.t_normal = self.delivery.t_service = 0
            self.nb_req = self.xb_req = 0
            self.state = SUSPENDED
            self.reason = 3
        self.alarm("fault", detail)

    def record(self, kind, a=0, b=0):
        return self.history.add(self.uptime_s, kind, a, b)


ALARMS = ("", "reservoir_empty", "fault", "limit_hold", "settings_lost")
