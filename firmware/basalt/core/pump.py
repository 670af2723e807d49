# The pump: its state machine and the therapy it owes. Pure logic - the HAL objects it uses
# (motor, storage) are handed in, and time reaches it only as calls to tick(), one per second.
#
# States:   SUSPENDED --resume--> RUNNING --suspend / reservoir empty--> SUSPENDED
# A fresh pump boots SUSPENDED with no reservoir; it delivers only after a reservoir is loaded
# and the user resumes. Every command validates everything before it changes anything.
import json

from .basal import BasalSchedule
from .delivery import Delivery
from .errors import Refused, check_int
from .limits import Limits

RUNNING = "running"
SUSPENDED = "suspended"

PROGRESS_EVERY_S = 5  # bolus progress events while a bolus runs
SETTINGS_FILE = "settings.json"
DEFAULT_BASAL = [[0, 0]]  # a new pump owes nothing until it is programmed


class Pump:
    def __init__(self, motor, storage, mech, emit=None):
        self.mech = mech
        self.storage = storage
        self.delivery = Delivery(motor, mech)
        self.emit = emit or (lambda name, data: None)
        self.limits = Limits()
        self.schedule = BasalSchedule.parse(DEFAULT_BASAL, self.limits.max_basal_mUh)
        self.bolus_inc_steps = mech.steps_from_mu(self.limits.bolus_increment_mU)
        self.state = SUSPENDED
        self.suspend_reason = "boot"
        self.uptime_s = 0
        self.clock_offset_s = 0  # time of day at uptime 0, seconds after midnight
        self.reservoir_steps = 0
        self.basal_steps = 0  # lifetime totals since boot, in steps
        self.bolus_steps = 0
        self.bolus_req = 0  # active normal bolus: requested steps (0 = none)
        self.bolus_done = 0  # ... steps emitted so far
        self.bolus_id = 0
        self._load_settings()

    # ---- time -------------------------------------------------------------------------
    def minute_of_day(self):
        return ((self.clock_offset_s + self.uptime_s) // 60) % 1440

    def basal_rate(self):
        return self.schedule.rate_at(self.minute_of_day()) if self.state == RUNNING else 0

    def tick(self):
        """One control period. Account the last train, then command the next one."""
        self._account(*self.delivery.settle())
        self.uptime_s += 1
        if self.state != RUNNING:
            return
        if self.reservoir_steps == 0:
            self._stop_delivery("reservoir_empty")
            return
        d = self.delivery
        basal = d.accrue_basal(self.schedule.rate_at(self.minute_of_day()))
        bolus = 0
        if self.bolus_req:
            bolus = d.accrue_bolus(self.limits.bolus_speed_mU_min, self.bolus_req - self.bolus_done)
        if basal + bolus > self.reservoir_steps:
            # Deliver what is left; the next tick finds the reservoir empty and stops.
            basal = min(basal, self.reservoir_steps)
            bolus = min(bolus, self.reservoir_steps - basal)
        d.start(basal, bolus)
        if self.bolus_req and self.uptime_s % PROGRESS_EVERY_S == 0:
            self.emit("bolus", self._bolus_info("progress"))

    def _account(self, basal, bolus, extra):
        if basal + bolus + extra == 0:
            return
        self.basal_steps += basal
        self.bolus_steps += bolus + extra
        self.bolus_done += bolus
        used = basal + bolus + extra
        self.reservoir_steps = self.reservoir_steps - used if used < self.reservoir_steps else 0
        if self.bolus_req and self.bolus_done >= self.bolus_req and not self.delivery.in_flight():
            self.emit("bolus", self._bolus_info("complete"))
            self._clear_bolus()

    def _stop_delivery(self, reason):
        """Stop the motor now, account exactly, cancel any bolus, and suspend."""
        self._account(*self.delivery.settle(stop=True))
        cancelled = None
        if self.bolus_req:
            cancelled = self._bolus_info("cancelled")
            self.emit("bolus", cancelled)
            self._clear_bolus()
        if self.state != SUSPENDED:
            self.state = SUSPENDED
            self.suspend_reason = reason
            self.emit("state", {"state": SUSPENDED, "reason": reason})
            if reason == "reservoir_empty":
                self.emit("alarm", {"alarm": "reservoir_empty", "priority": "high"})
        return cancelled

    # ---- bolus ------------------------------------------------------------------------
    def _bolus_info(self, phase):
        m = self.mech
        return {"id": self.bolus_id, "phase": phase,
                "requested_mU": m.mu_from_steps(self.bolus_req), "delivered_mU": m.mu_from_steps(self.bolus_done),
                "requested_steps": self.bolus_req, "delivered_steps": self.bolus_done}

    def _clear_bolus(self):
        self.bolus_req = 0
        self.bolus_done = 0
        self.delivery.end_bolus()

    def bolus(self, mu):
        lim = self.limits
        check_int(mu, "bolus", 1, 1 << 30)
        if mu > lim.max_bolus_mU:
            raise Refused("limit", "max_bolus_mU: %d mU exceeds the max bolus of %d mU" % (mu, lim.max_bolus_mU))
        if mu % lim.bolus_increment_mU:
            raise Refused("range", "bolus must be a multiple of %d mU" % lim.bolus_increment_mU)
        steps = self.mech.steps_from_mu(mu, "bolus")
        if self.state != RUNNING:
            raise Refused("state", "pump is suspended (%s)" % self.suspend_reason)
        if self.bolus_req:
            raise Refused("busy", "a bolus is already running; cancel it first")
        if steps > self.reservoir_steps - self.delivery.in_flight():
            raise Refused("reservoir", "bolus does not fit in the reservoir")
        self.bolus_id += 1
        self.bolus_req = steps
        self.bolus_done = 0
        info = self._bolus_info("started")
        self.emit("bolus", info)
        return info

    def bolus_cancel(self):
        if not self.bolus_req:
            raise Refused("state", "no bolus is running")
        # Stop the motor mid-train and read its counter: the report is what was emitted.
        self._account(*self.delivery.settle(stop=True))
        if not self.bolus_req:  # the last steps landed in that very train
            raise Refused("state", "no bolus is running")
        info = self._bolus_info("cancelled")
        self.emit("bolus", info)
        self._clear_bolus()
        return info

    # ---- state ------------------------------------------------------------------------
    def suspend(self):
        if self.state == SUSPENDED:
            raise Refused("state", "already suspended (%s)" % self.suspend_reason)
        cancelled = self._stop_delivery("user")
        return {"state": SUSPENDED, "bolus_cancelled": cancelled}

    def resume(self):
        if self.state == RUNNING:
            raise Refused("state", "already running")
        if self.reservoir_steps == 0:
            raise Refused("reservoir", "no insulin in the reservoir; load a reservoir first")
        self.state = RUNNING
        self.suspend_reason = ""
        self.emit("state", {"state": RUNNING, "reason": "user"})
        return {"state": RUNNING}

    def reservoir_load(self, mu):
        if self.state != SUSPENDED:
            raise Refused("state", "suspend before changing the reservoir")
        check_int(mu, "reservoir", 0, self.mech.mu_from_steps(self.mech.capacity_steps))
        self.reservoir_steps = self.mech.steps_from_mu(mu, "reservoir")
        return self._reservoir_info()

    def _reservoir_info(self):
        return {"reservoir_mU": self.mech.mu_from_steps(self.reservoir_steps), "reservoir_steps": self.reservoir_steps}

    # ---- settings ---------------------------------------------------------------------
    def basal_set(self, segments):
        sched = BasalSchedule.parse(segments, self.limits.max_basal_mUh)
        self.schedule = sched  # the carried accumulator remainder is kept: no loss, no double
        self._save_settings()
        self.emit("basal", {"segments": sched.to_list()})
        return {"segments": sched.to_list()}

    def limits_set(self, changes):
        self.bolus_inc_steps = self.limits.update(changes, self.mech, self.schedule.max_rate())
        self._save_settings()
        return self.limits.to_dict()

    def _save_settings(self):
        if self.storage is None:
            return
        doc = {"basal": self.schedule.to_list(), "limits": self.limits.to_dict()}
        self.storage.write_atomic(SETTINGS_FILE, json.dumps(doc).encode())

    def _load_settings(self):
        raw = self.storage.read(SETTINGS_FILE) if self.storage is not None else None
        if not raw:
            return
        try:
            doc = json.loads(raw)
            limits = Limits()
            limits.update(doc["limits"], self.mech, 0)
            sched = BasalSchedule.parse(doc["basal"], limits.max_basal_mUh)
        except Exception:  # noqa: BLE001 - unreadable settings: keep safe defaults, say so
            self.emit("alarm", {"alarm": "settings_lost", "priority": "medium"})
            return
        self.limits, self.schedule = limits, sched

    def fault(self, detail):
        """Internal error: stop the motor without trusting any other state, suspend, alarm."""
        self.delivery.motor.stop()
        self.delivery.train_basal = self.delivery.train_bolus = 0
        self._clear_bolus()
        self.state = SUSPENDED
        self.suspend_reason = "fault"
        self.emit("alarm", {"alarm": "fault", "priority": "high", "detail": detail})

    # ---- reports ----------------------------------------------------------------------
    def status(self):
        m = self.mech
        st = {"state": self.state, "reason": self.suspend_reason, "uptime_s": self.uptime_s,
              "minute_of_day": self.minute_of_day(), "basal_mUh": self.basal_rate(),
              "basal_delivered_mU": m.mu_from_steps(self.basal_steps),
              "bolus_delivered_mU": m.mu_from_steps(self.bolus_steps),
              "delivered_steps": self.basal_steps + self.bolus_steps,
              "bolus": self._bolus_info("running") if self.bolus_req else None}
        st.update(self._reservoir_info())
        return st


