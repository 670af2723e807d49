# The core's building blocks, the pump's parts (core/pump.py is the pump itself, core/history.py
# its history): the refusal every command raises, the mechanism's insulin <-> steps arithmetic,
# the therapy limits, the basal profiles, the delivery engine and its rolling windows. They live
# in the package itself, which is loaded anyway: modules of their own cost ~0.4 KB of module
# overhead and three interned names each (docs/memory.md).
from array import array

TICK_MS = 1000
DELIVER = 1
RETRACT = -1
# The settings files in storage (written by lib/save.py, read back at boot by cmd/settings.py)
FILE = "settings.json"  # active profile, limits, calculator, clock, CGM pairing and alerts
PROFILES = "profiles.json"  # the rate tables: rewritten only when a profile changes


class Refused(Exception):
    """A refused command. The protocol turns it into an error reply; the pump's state is
    untouched whenever it is raised (validate, then act)."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code  # short machine-readable reason: "range", "limit", "state", ...
        self.msg = msg


class Mechanics:
    """Insulin <-> motor steps, exactly. Amounts cross the protocol in milliunits (mU) and rates in
    mU/h; inside the core everything is whole motor steps plus carried integer remainders.
    U-100 insulin: 1 nL = 0.1 mU = 100 uU, so a step of N nL is N*100 micro-units (uU)."""

    def __init__(self, nl_per_step, capacity_steps, max_hz):
        if nl_per_step <= 0 or capacity_steps <= 0 or max_hz <= 0:
            raise ValueError("board mechanics must be positive")
        self.uu_per_step = nl_per_step * 100
        self.capacity_steps = capacity_steps
        self.max_hz = max_hz
        # mU per step as a reduced fraction num/den, so conversions stay small integers
        a, b = self.uu_per_step, 1000
        while b:
            a, b = b, a % b
        self._num = self.uu_per_step // a
        self._den = 1000 // a

    def mu_from_steps(self, steps):
        """mU delivered by `steps` (rounded down when a step is not a whole mU)."""
        return steps * self._num // self._den

    def steps_floor(self, mu):
        """Whole steps within mu milliunits (rounded down: for caps)."""
        return mu * self._den // self._num

    def steps_from_mu(self, mu, name="amount"):
        """Exact steps for mu milliunits; refuse an amount the mechanism cannot deliver exactly."""
        if (mu * self._den) % self._num:
            raise Refused("range", "%s %d mU is not a whole number of %d uU steps" % (name, mu, self.uu_per_step))
        return mu * self._den // self._num


class Limits:
    """Therapy limits, enforced in the firmware. The settable ranges and their validation live
    with the commands (basalt/cmd/_limits.py and limits.py, overlays). Its attributes are the
    limits and nothing else: commands read them all as dict(limits.__dict__)."""

    def __init__(self):
        self.max_bolus_mU = 10000  # 10 U (commercial 0.1-30 U)
        self.max_basal_mUh = 3000  # 3 U/h, Omnipod 5's default
        self.max_hour_mU = 15000  # any 60 minutes: a max bolus plus most of an hour's max basal
        self.max_day_mU = 120000  # any 24 hours: well above a typical 40-60 U daily dose
        self.max_iob_mU = 15000  # the calculator never suggests past this insulin on board
        self.bolus_speed_mU_min = 1500  # 1.5 U/min, Medtronic's standard speed
        self.bolus_increment_mU = 10  # 0.01 U (commercial 0.01-0.1 U)


class Profiles:
    """Up to 6 named 24-hour basal profiles, each 48 half-hour slot rates (mU/h) in an array, so
    the per-tick lookup is one index. Profile i is names[i] with rates[i]. All 6 arrays are
    allocated here, once, and profiles are written into them in place: arrays made by a command
    would stay behind among its garbage and fragment the heap. So len(rates) is the most
    profiles there can be, and len(rates[0]) the slots per profile. The protocol speaks segments
    ([start_min, rate]); basalt/cmd/basal.py converts and validates."""

    def __init__(self):
        self.names = ["default"] * 6
        del self.names[1:]  # one profile, and room for all: the list never grows into a new block
        self.rates = [array("H", bytes(2 * 48)) for _ in range(6)]  # a new pump owes nothing
        self.active = 0

    def rate_at(self, minute_of_day):
        return self.rates[self.active][minute_of_day // 30]


# ---- the delivery engine --------------------------------------------------------------------
# The delivery engine: each 1 s control tick it turns the insulin owed since the last tick into
# one step train, then on the next tick reads back what the motor's counter says it emitted.
#
# Owed insulin is integrated in integer accumulators whose remainders are always carried, so
# nothing is lost or doubled and every value stays a small int even on a 32-bit board:
#   basal     acc += rate[mU/h] * 1000 ms per tick (x pct/100 for a percentage temp basal:
#             acc += rate * pct * 10); one step per uu_per_step * 3600 in acc
#   normal    acc += speed[mU/min] * 1000 ms per tick; one step per uu_per_step * 60 in acc
#   extended  acc += total steps per tick; one step per duration[s] in acc
#
# Within a train the order is basal, extended, normal. When a train is cut short (suspend,
# cancel) the basal steps it did not emit go back into the basal accumulator; unemitted bolus
# steps stay owed by their bolus (or die with it when it is cancelled).
#
# Windows, below, keeps the rolling sums of what was delivered, for the limits.


class Delivery:
    def __init__(self, motor, mech):
        self.motor = motor
        self.mech = mech
        self.basal_unit = mech.uu_per_step * 3600
        self.bolus_unit = mech.uu_per_step * 60
        self.basal_acc = 0
        self.normal_acc = 0
        self.ext_acc = 0
        # the train in flight: steps owed to each purpose
        self.t_basal = 0
        self.t_ext = 0
        self.t_normal = 0
        self.t_service = 0  # prime, cannula fill or rewind: never therapy
        self.direction = DELIVER

    def in_flight(self):
        return self.t_basal + self.t_ext + self.t_normal + self.t_service

    def settle(self, stop=False):
        """Account the current train from the motor's own counter.
        Returns (basal, ext, normal, service, extra): emitted steps per purpose, and any steps
        emitted beyond what was commanded."""
        n = self.in_flight()
        if n == 0:
            return 0, 0, 0, 0, 0
        e = self.motor.stop() if stop or self.motor.busy() else self.motor.count()
        extra = e - n if e > n else 0
        e -= extra
        if self.t_service:
            r = (0, 0, 0, e, extra)
        else:
            b = e if e < self.t_basal else self.t_basal
            e -= b
            x = e if e < self.t_ext else self.t_ext
            r = (b, x, e - x, 0, extra)
            self.basal_acc += (self.t_basal - b) * self.basal_unit  # owed basal stays owed
        self.t_basal = self.t_ext = self.t_normal = self.t_service = 0
        return r

    def accrue_basal(self, rate, pct):
        """rate in mU/h; pct < 0: that rate, else pct percent of it."""
        self.basal_acc += rate * TICK_MS if pct < 0 else rate * pct * 10
        n = self.basal_acc // self.basal_unit
        self.basal_acc -= n * self.basal_unit
        return n

    def accrue_normal(self, rate, remaining):
        """rate: the bolus speed, mU/min."""
        self.normal_acc += rate * TICK_MS
        n = self.normal_acc // self.bolus_unit
        self.normal_acc -= n * self.bolus_unit
        return n if n < remaining else remaining

    def accrue_ext(self, total, duration_s, remaining, overdue):
        """Square wave: `total` steps over `duration_s` ticks; once overdue, the rest at once."""
        if overdue:
            return remaining
        self.ext_acc += total
        n = self.ext_acc // duration_s
        self.ext_acc -= n * duration_s
        return n if n < remaining else remaining

    def start(self, basal, ext, normal):
        """Emit therapy steps spread evenly over the coming tick."""
        n = basal + ext + normal
        if n > 0:
            self.t_basal, self.t_ext, self.t_normal = basal, ext, normal
            self.direction = DELIVER
            self.motor.start(n, n * 1000 // TICK_MS, DELIVER)

    def service(self, n, direction):
        """Prime, fill or rewind: n steps (at most the motor's rate) this tick."""
        if n > 0:
            self.t_service = n
            self.direction = direction
            self.motor.start(n, n * 1000 // TICK_MS, direction)


class Windows:
    """Rolling delivery windows for the hourly and daily limits, and recent bolus insulin for the
    bolus calculator's insulin on board. Bucketed, so the sums are conservative: the "hour" is
    the current minute plus the 60 before it, the "day" the current quarter-hour plus the 96
    before it. A limit checked against them holds for every true 60-minute / 24-hour window.
    Each array's length is its bucket count."""

    def __init__(self):
        self.hour = array("i", bytes(4 * 61))  # 1-minute buckets
        self.day = array("i", bytes(4 * 97))  # 15-minute buckets
        self.bolus5 = array("i", bytes(4 * 96))  # 5-minute buckets of bolus insulin: 8 hours, the longest action allowed
        self.minute = 0  # minutes since boot of the current buckets
        self.hour_sum = 0
        self.day_sum = 0

    def advance(self, uptime_s):
        """Call once per tick: start new buckets when a minute begins."""
        m = uptime_s // 60
        while self.minute < m:
            self.minute += 1
            i = self.minute % len(self.hour)
            self.hour_sum -= self.hour[i]
            self.hour[i] = 0
            if self.minute % 15 == 0:
                j = (self.minute // 15) % len(self.day)
                self.day_sum -= self.day[j]
                self.day[j] = 0
            if self.minute % 5 == 0:
                self.bolus5[(self.minute // 5) % len(self.bolus5)] = 0

    def add(self, steps, bolus):
        """steps delivered this tick, bolus of them for a bolus."""
        m = self.minute
        self.hour[m % len(self.hour)] += steps
        self.hour_sum += steps
        self.day[(m // 15) % len(self.day)] += steps
        self.day_sum += steps
        self.bolus5[(m // 5) % len(self.bolus5)] += bolus
