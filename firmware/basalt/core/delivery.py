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

TICK_MS = 1000
DELIVER = 1
RETRACT = -1


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

    def accrue_basal(self, rate_muh, pct):
        """pct < 0: rate_muh is the rate; else pct percent of rate_muh."""
        self.basal_acc += rate_muh * TICK_MS if pct < 0 else rate_muh * pct * 10
        n = self.basal_acc // self.basal_unit
        self.basal_acc -= n * self.basal_unit
        return n

    def accrue_normal(self, speed_mu_min, remaining):
        self.normal_acc += speed_mu_min * TICK_MS
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
