# The pump: its state machine and the therapy it owes, resident and driven one tick a second.
# Commands that configure it live in basalt/cmd (overlays loaded per command); this module
# holds only what every tick needs, and the few actions the safety paths must always reach.
#
# States      _SUSPENDED <-> _RUNNING. Delivery happens only while _RUNNING, and _RUNNING is only
#             reachable when the reservoir workflow is complete (res_state == _READY).
# Reservoir   _NONE/_READY --rewind--> _REWINDING --(home)--> _REWOUND --insert--> _INSERTED
#             --prime_start--> _PRIMING --prime_stop--> _PRIMED --cannula_fill--> _FILLING --> _READY
# Therapy     basal from the active profile at local time of day, or a temp basal; one normal
#             and one extended bolus at a time (a combo is one of each). Every emitted step is
#             accounted from the motor's counter; totals, reservoir and plunger are exact.
from micropython import const

from basalt import lib as overlay
from basalt.core import RETRACT

_SUSPEND = const(11)  # history record type (core/history.py)
_ALARM = const(13)  # history record type (core/history.py)
_LIMIT_HOLD = const(16)  # history record type (core/history.py)
_ALARM_CLEAR = const(17)  # history record type (core/history.py)
_BACKOFF = const(18)  # history record type (core/history.py)

_RUNNING = const("running")
_SUSPENDED = const("suspended")

# reservoir workflow
_NONE = const("none")
_REWINDING = const("rewinding")
_REWOUND = const("rewound")
_INSERTED = const("inserted")
_PRIMING = const("priming")
_PRIMED = const("primed")
_FILLING = const("filling")
_READY = const("ready")

# suspend reasons (history code = index)
REASONS = ("boot", "user", "reservoir_empty", "fault", "reservoir", "occlusion", "motor_fault", "battery_depleted",
           "auto_off", "reservoir_removed")

_PROGRESS_EVERY_S = const(5)  # bolus progress events while a bolus runs

# Hardware checks on every tick's readings (docs/alarms.md, docs/hazards.md)
_ENC_TOL = const(2)  # encoder counts of disagreement tolerated before a motor fault
_BACKOFF_PER_TICK = const(10)  # occlusion relief: steps retracted per tick ...
_BACKOFF_MAX = const(400)  # ... and at most this many (2 U): never draw back more than was pushed
_BATT_LOW_MV = const(3650)  # ~15 % of a Li-ion cell at rest: 1-2 days left (docs/plant.md)
_BATT_DEPLETED_MV = const(3450)  # ~5 %: stop delivery safely while the board still runs
_BATT_CLEAR_MV = const(3800)  # hysteresis: battery alarms clear above this (a new cell)
_BATT_DEBOUNCE = const(3)  # consecutive low readings before a battery alarm
_AUTO_OFF_GRACE_S = const(60)  # the auto-off alarm sounds this long before delivery stops


class Pump:
    def __init__(self, motor, mech, emit=None, annunciator=None):
        # Every attribute, with what it means, is set in basalt/cmd/_init.py: an overlay, run
        # once, so the constructor's bytecode does not stay in the heap with the class.
        overlay.call("_init", "pump", self, motor, mech, emit, annunciator)

    # ---- time -------------------------------------------------------------------------
    def local_s(self):
        return self.clock_offset_s + self.uptime_s

    def minute_of_day(self):
        return (self.local_s() // 60) % 1440

    def basal_rate(self):
        """The basal rate in force now, mU/h (0 when not running)."""
        if self.state != _RUNNING:
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
        self.fwd = 0
        self.settle(False)
        u = self.uptime_s
        minute = self.minute_of_day()
        self.uptime_s = u + 1
        self.win.advance(u)
        if self.hw is not None:
            self.check(self.hw.sense())
        if self.cgm is not None and (self.cgm.pair[0] or self.cgm.v[0]):
            self.cgm.tick(self, u)  # the CGM client (core/cgm.py), when paired or searching
        if self.remind and self.uptime_s >= self.remind:  # (a negative remind is due at once)
            try:
                overlay.call("alarm", "remind", self)
            except Exception:  # noqa: BLE001 - it could not load: sound anyway, try again soon
                self.show("alarm", "alarm")
                self.remind = self.uptime_s + 15
        if self.tb_end and u >= self.tb_end:
            self.end_temp(1)
        if self.relief:  # occlusion back-off: take back what was pushed into the blocked line
            if self.relief > 0:
                n = _BACKOFF_PER_TICK if _BACKOFF_PER_TICK < self.relief else self.relief
                self.relief = -n if n == self.relief else self.relief - n  # < 0: last train out
                self.delivery.service(n, RETRACT)
                return
            self.record(_BACKOFF, self.prime_run)
            self.emit("reservoir", {"state": "relieved", "backoff_steps": self.prime_run})
            self.relief = 0
        if self.res_state in (_REWINDING, _PRIMING, _FILLING):
            # Reservoir change (suspended): the rewind/prime/fill step lives in an overlay, as it
            # runs only for the minutes a reservoir change takes.
            overlay.call("service", "tick", self)
            return
        if self.state != _RUNNING:
            return
        if self.reservoir_steps == 0:
            self.halt(2, "reservoir_empty")
            return
        if u % 60 == 0:
            self.minute(u)
            if self.state != _RUNNING:
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
                self.record(_LIMIT_HOLD, n - basal - ext - normal)
                self.alarm("limit_hold")
        elif self.holding and n and self.win.hour_sum + n <= self.cap_hour // 2:
            self.holding = False  # clear once well inside the limit again
            self.clear_alarm(3)
        if basal + ext + normal > self.reservoir_steps:
            left = self.reservoir_steps
            basal = basal if basal < left else left
            ext = ext if ext < left - basal else left - basal
            normal = normal if normal < left - basal - ext else left - basal - ext
        self.train_in_temp = self.tb_end != 0
        self.history.sync(self, basal + ext + normal)  # snapshot first if this train could pass the bound
        d.start(basal, ext, normal)
        if (self.nb_req or self.xb_req) and self.uptime_s % _PROGRESS_EVERY_S == 0:
            if self.nb_req:
                self.emit("bolus", self.bolus_info(1, "progress"))
            if self.xb_req and self.uptime_s % 60 == 0:
                self.emit("bolus", self.bolus_info(2, "progress"))

    def settle(self, stop):
        direction = self.delivery.direction
        basal, ext, normal, service, extra = self.delivery.settle(stop)
        if basal + ext + normal + service + extra == 0:
            return
        self.history.unsaved += basal + ext + normal + service + extra  # not yet in a state snapshot
        if direction == RETRACT:
            self.plunger_steps -= service + extra
            self.prime_run += service
            if self.res_state == _READY:  # occlusion back-off: the insulin comes back
                self.reservoir_steps += service
            return
        used = basal + ext + normal + service + extra
        self.fwd = used
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
            self.bolus_end(1, "complete")
        if self.xb_req and self.xb_done >= self.xb_req:
            self.bolus_end(2, "complete")

    # ---- hardware checks ----------------------------------------------------------------
    def check(self, s):
        """The tick's readings: s = [force sensor, battery, flags, encoder] (HAL sense())."""
        # The encoder must agree with the steps the motor was told to make. enc0: the reading at
        # plunger 0 (None: take it from this reading; False: the driver is off, nothing to check).
        if self.enc_k and self.enc0 is not False:
            if self.enc0 is None:
                self.enc0 = s[3] - self.plunger_steps * self.enc_k
            d = s[3] - self.enc0 - self.plunger_steps * self.enc_k
            if d > _ENC_TOL or d < -_ENC_TOL:
                # the motor did not do what it was told: cut it off (a runaway stops here)
                moved = s[3] - self.enc_last if self.fwd else 0
                self.enc0 = False
                self.hw.enable(False)
                self.halt(6, "motor_fault", "%s (%+d counts)" % (("runaway" if self.fwd == 0 else "over_delivery") if d > 0 else
                          ("stall" if self.fwd and moved == 0 else "missed_steps"), d))
                self.relief = 0
            self.enc_last = s[3]
        if not s[2] & 1:  # the reservoir switch: nothing seated
            if self.res_state not in (_NONE, _REWINDING, _REWOUND):
                self.halt(9, "reservoir_removed")
                self.res_state = _NONE  # a full reservoir change is needed now
                self.reservoir_steps = 0
                self.relief = 0
        elif self.alarm_st[10]:
            self.clear_alarm(10)
        if self.batt_mv:
            mv = s[1] * self.batt_mv // 4095
            if mv < _BATT_LOW_MV:
                self.lowv += 1
                if self.lowv >= _BATT_DEBOUNCE:
                    if mv < _BATT_DEPLETED_MV:
                        if not self.alarm_st[8]:
                            self.halt(7, "battery_depleted", "%d mV" % mv)
                    elif not self.alarm_st[7]:
                        self.alarm("battery_low", "%d mV" % mv)
            else:
                self.lowv = 0
                if mv > _BATT_CLEAR_MV:
                    self.clear_alarm(7)
                    self.clear_alarm(8)
        if self.occ is not None and self.occ.update(s[0], self.fwd) and self.state == _RUNNING:
            self.halt(5, "occlusion")
            # now relieve the pressure, so that clearing the line cannot push a bolus; the
            # detector knows how many steps went into the blocked line
            r = self.occ.relief
            self.relief = r if r < _BACKOFF_MAX else _BACKOFF_MAX
            self.prime_run = 0  # counts the back-off

    def minute(self, u):
        """Once a minute while running: the low-reservoir alert and auto-off."""
        if not self.alarm_st[6]:
            mu = self.mech.mu_from_steps(self.reservoir_steps)
            if mu < (self.basal_rate() * self.res_low_h if self.res_low_h else self.res_low_mu):  # mU/h x h = mU
                self.alarm("reservoir_low", "%d mU left" % mu)
        if self.auto_off_s and u - self.user_t >= self.auto_off_s:
            if not self.alarm_st[11]:
                self.alarm("auto_off")
            elif u - self.alarm_t[11] >= _AUTO_OFF_GRACE_S:
                self.halt(8, "auto_off")  # the alarm is still raised: that halt adds the stop

    # ---- boluses and temp basal: their ends are cmd/therapy.py's ----------------------
    # (an overlay: they run when a bolus or temp basal ends, not every tick). A bolus's report is
    # resident: the bolus command, status and the progress events need it, and loading an overlay
    # for it beside the bolus command's is what used to set the firmware's peak heap.
    def bolus_info(self, kind, phase):
        if kind == 1:
            bid, req, done = self.nb_id, self.nb_req, self.nb_done
        else:
            bid, req, done = self.xb_id, self.xb_req, self.xb_done
        m = self.mech
        info = {"id": bid, "kind": "normal" if kind == 1 else "extended", "phase": phase,
                "requested_mU": m.mu_from_steps(req), "delivered_mU": m.mu_from_steps(done),
                "requested_steps": req, "delivered_steps": done}
        if kind == 2:
            info["minutes"] = self.xb_dur // 60
        return info

    def bolus_end(self, kind, phase):
        return overlay.call("therapy", "bolus_end", self, kind, phase)

    def end_temp(self, how):
        """End the temp basal: how 1 = ran its course (at a tick, trains already accounted),
        2 = cancelled/replaced/suspended (first account the train in flight, which is its)."""
        if not self.tb_end:
            return None
        if how == 2:
            self.settle(True)
        return overlay.call("therapy", "temp_end", self, how)

    # ---- state ------------------------------------------------------------------------
    def stop_delivery(self, reason):
        """Stop the motor now, account exactly, end boluses and any temp basal, and suspend."""
        self.settle(True)
        m = self.mech
        out = {"state": _SUSPENDED, "bolus_cancelled": None, "extended_cancelled": None, "temp_cancelled": None,
               "delivered_mU": m.mu_from_steps(self.basal_steps + self.bolus_steps),
               "last_hour_mU": m.mu_from_steps(self.win.hour_sum)}
        try:
            if self.nb_req:
                out["bolus_cancelled"] = self.bolus_end(1, "cancelled")
            if self.xb_req:
                out["extended_cancelled"] = self.bolus_end(2, "cancelled")
            out["temp_cancelled"] = self.end_temp(2)
        except Exception:  # noqa: BLE001 - the report could not load: stop them all the same
            self.nb_req = self.xb_req = self.tb_end = 0
        if self.state != _SUSPENDED:
            self.state = _SUSPENDED
            self.reason = reason
            self.record(_SUSPEND, reason)
            self.emit("state", {"state": _SUSPENDED, "reason": REASONS[reason]})
            self.show("warn")
        return out

    def show(self, led, buzzer=None):
        """Tell the user through the annunciator HAL: LED pattern, and a buzzer pattern if given."""
        a = self.annunciator
        if a is not None:
            a.led(led)
            if buzzer:
                a.buzzer(buzzer)

    # ---- alarms (docs/alarms.md) ------------------------------------------------------
    def alarm(self, name, detail=None, stopped=None):
        """Raise an alarm. It latches: raising an active alarm again changes nothing."""
        c = ALARMS.index(name) if name in ALARMS else 2
        if self.alarm_st[c]:
            if stopped is not None:  # already raised (e.g. auto-off): still say what stopped
                self.emit("alarm", {"alarm": name, "priority": LEVELS[PRIO[c]], "state": "stopped", "stopped": stopped})
            return
        self.alarm_st[c] = 1
        self.alarm_t[c] = self.uptime_s
        self.record(_ALARM, c, PRIO[c])
        ev = {"alarm": name, "priority": LEVELS[PRIO[c]], "state": "active"}
        if detail:
            ev["detail"] = detail
        if stopped is not None:
            ev["stopped"] = stopped
        self.emit("alarm", ev)
        # Sound it now, from resident code; repeats, escalation and the LED of several alarms
        # are the reminder's (cmd/alarm.py remind, run from the tick when due).
        p = PRIO[c]
        self.show("alarm" if p == 3 else "warn", ("", "chirp", "alert", "alarm")[p])
        due = self.uptime_s + (0, 900, 60, 15)[p]
        if not self.remind or due < self.remind:
            self.remind = due

    def halt(self, reason, name, detail=None):
        """Stop delivery and raise the alarm that says why, with what had been delivered."""
        self.alarm(name, detail, self.stop_delivery(reason))

    def clear_alarm(self, c, how=2):
        """End alarm c (how 2: its condition is gone or it was acknowledged; 1: acknowledged but
        its condition persists, so it stays active and silent)."""
        if not self.alarm_st[c] or self.alarm_st[c] == 2 and how == 1:
            return
        self.alarm_st[c] = 0 if how == 2 else 2
        self.record(_ALARM_CLEAR, c, how)
        self.emit("alarm", {"alarm": ALARMS[c], "priority": LEVELS[PRIO[c]],
                            "state": "cleared" if how == 2 else "acknowledged"})
        self.remind = -self.uptime_s  # next tick the reminder sorts out what still sounds (< 0: quietly)

    def fault(self, detail):
        """Internal error: stop the motor without trusting other state, account what the counter
        says if it still can, suspend, alarm."""
        try:
            self.stop_delivery(3)
        except Exception:  # noqa: BLE001 - the state itself may be what is broken
            self.delivery.motor.stop()
            self.delivery.t_basal = self.delivery.t_ext = self.delivery.t_normal = self.delivery.t_service = 0
            self.nb_req = self.xb_req = 0
            self.state = _SUSPENDED
            self.reason = 3
        self.relief = 0
        self.alarm("fault", detail)

    def record(self, kind, a=0, b=0):
        return self.history.add(self.storage, self.uptime_s, kind, a, b)


# Alarm codes (history _ALARM a = code) and their priorities (3 high, 2 medium, 1 low):
# docs/alarms.md has the rules and docs/hazards.md the hazards each one controls.
ALARMS = ("", "reservoir_empty", "fault", "limit_hold", "settings_lost", "occlusion", "reservoir_low",
          "battery_low", "battery_depleted", "motor_fault", "reservoir_removed", "auto_off",
          "unexpected_restart", "bolus_interrupted", "cgm_signal_loss", "cgm_session_ended", "cgm_sensor_error",
          "glucose_low", "glucose_high")
PRIO = b"\x00\x03\x03\x03\x02\x03\x01\x02\x03\x03\x03\x03\x02\x02\x02\x02\x02\x03\x02"
LEVELS = ("", "low", "medium", "high")


