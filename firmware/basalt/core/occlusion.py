# Occlusion detector: watches the force sensor between drive and stopper, one reading a tick.
#
# A forward train's reading is stopper friction + line pressure + sensor zero and drift. With the
# line open each step's pressure drains in about a second, so readings 1 s after a train sit on
# a baseline (friction and drift: per reservoir and slowly varying); with the line blocked every
# step adds 50 nL / C (~1-7 counts), so the reading climbs without end. The detector learns the
# baseline from forward readings only (idle ones relax toward a lower friction) and alarms when
# two forward readings in a row stand `limit` above it. A bolus raises the baseline by its steady
# pressure (flow x site resistance); each step in the train raises the threshold by limit / 15,
# and the baseline follows a rise by 1 count per 8 forward steps - slow next to an occlusion
# (>= 1.5 counts a step), quick enough for drift and the friction profile. It follows a fall at
# once (a quarter of it per reading), so a bolus's end or a new site does not leave it high.
#
# Back-off: the volume to take back is what was pushed into the blocked line. The detector counts
# the forward steps since the readings last sat at the baseline (the rise began there) and, on
# the alarm, sets `relief` to that count plus a margin for the steady bolus pressure stored in the
# line and the first steps lost in the noise; the pump retracts that many (in small trains). The
# reading cannot judge the back-off itself: retracting flips the stopper's friction, so the
# force drops by twice the glide force at once and, with a stiff stopper, clips at the ADC floor.
# Figures, sources and the trade-off: docs/occlusion.md. Integer-only, no allocation per tick.
try:
    from micropython import const
except ImportError:  # CPython: the benchmark sweeps this very file (hil/occlusion)
    const = int

# Never read: one object constant, because a loaded module with none whose name table ends on a
# heap block pins the next block for good - on a 32-bit board this module had that shape
# (docs/memory.md; tests/e2e/test_power_cut.py checks every target).
_ANCHOR = ("occlusion detector",)

_LIMIT_MN = const(800)  # alarm 0.8 N (~20 kPa) above the baseline: 120 counts on the sim board
_FLOW_DIV = const(15)  # threshold + limit/15 per forward step in the train (steady bolus pressure)
_UP = const(8)  # the baseline rises 1 count per this many forward steps while readings are above it
_DOWN = const(2)  # ... and falls a 1/2**_DOWN of the gap per reading below it
_HITS = const(2)  # consecutive forward readings over the threshold that raise the alarm
_LEARN = const(3)  # forward readings that set the baseline after reset()
_MARGIN = const(10)  # back-off steps beyond the count (+ 2 x the alarm train's steps: bolus pressure)


class Occlusion:
    def __init__(self, zero, gain):
        # zero: nominal sensor zero (counts) - unused, as the learnt baseline absorbs the unit's
        # own zero; gain: nominal counts per newton
        self.limit = _LIMIT_MN * gain // 1000
        self.reset()

    def reset(self):
        """Forget the baseline (a new reservoir or site, or resuming after an occlusion)."""
        self.base = 0  # learnt baseline, counts
        self.relief = 0  # steps to retract once an occlusion is detected (0 before)
        self.total = 0  # forward steps since the readings last sat at the baseline
        self.count = 0  # forward steps toward the baseline's next 1-count rise
        self.n = -_LEARN  # < 0 learning, then readings over the threshold in a row (_HITS: alarm)

    def update(self, raw, steps):
        """raw: this tick's force reading (counts); steps: forward steps the previous tick's train
        made (0: none or a retraction - an idle, maybe repeated reading). True while an occlusion
        is detected (latched until reset()); `relief` then says how many steps to back off."""
        n = self.n
        if n >= _HITS:
            return True
        if steps <= 0:
            return False
        if n < 0:
            self.base = raw if n == -_LEARN else (self.base + raw) >> 1
            self.n = n + 1
            return False
        e = raw - self.base
        over = e - steps * (self.limit // _FLOW_DIV)
        self.total = self.total + steps if over > 0 else 0
        if over > self.limit:
            n += 1
            self.n = n
            if n >= _HITS:
                self.relief = self.total + 2 * steps + _MARGIN
                return True
        else:
            self.n = 0
        if e < 0:
            self.base += e >> _DOWN
        else:
            c = self.count + steps
            self.base += c // _UP
            self.count = c % _UP
        return False
