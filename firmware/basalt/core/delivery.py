# The delivery engine: each 1 s control tick it turns the insulin owed since the last tick into
# one step train, then on the next tick reads back what the motor actually emitted.
#
# Owed insulin is integrated in integer accumulators whose remainders are always carried:
#   basal: acc += rate[mU/h] * 1000 ms per tick; one step per uu_per_step * 3600 in acc
#   bolus: acc += speed[mU/min] * 1000 ms per tick; one step per uu_per_step * 60 in acc
# (mU/h x ms = uU x 3600 / 3600000 ... i.e. the units line up so that no division ever drops
# a fraction; every value stays a small int even on a 32-bit board.)
#
# Within a train, basal steps go first. When a train is cut short (suspend, cancel) the basal
# steps it did not emit go back into the basal accumulator, so basal is never lost or doubled;
# unemitted bolus steps belong to the cancelled bolus and are simply not owed any more.

TICK_MS = 1000
DELIVER = 1


class Delivery:
    def __init__(self, motor, mech):
        self.motor = motor
        self.mech = mech
        self.basal_unit = mech.uu_per_step * 3600
        self.bolus_unit = mech.uu_per_step * 60
        self.basal_acc = 0
        self.bolus_acc = 0
        self.train_basal = 0  # steps of the current train owed to basal
        self.train_bolus = 0  # ... and to the bolus
        self.trains = 0

    def in_flight(self):
        return self.train_basal + self.train_bolus

    def settle(self, stop=False):
        """Account the current train from the motor's own counter. Returns (basal, bolus, extra):
        steps emitted for each, and any steps emitted beyond what was commanded."""
        n = self.train_basal + self.train_bolus
        if n == 0:
            return 0, 0, 0
        if stop or self.motor.busy():
            emitted = self.motor.stop()
        else:
            emitted = self.motor.count()
        basal = emitted if emitted < self.train_basal else self.train_basal
        bolus = emitted - basal
        extra = 0
        if bolus > self.train_bolus:
            extra = bolus - self.train_bolus
            bolus = self.train_bolus
        # Basal steps that were owed but not emitted stay owed.
        self.basal_acc += (self.train_basal - basal) * self.basal_unit
        self.train_basal = 0
        self.train_bolus = 0
        return basal, bolus, extra

    def accrue_basal(self, rate_muh):
        self.basal_acc += rate_muh * TICK_MS
        n = self.basal_acc // self.basal_unit
        self.basal_acc -= n * self.basal_unit
        return n

    def accrue_bolus(self, speed_mu_min, remaining_steps):
        self.bolus_acc += speed_mu_min * TICK_MS
        n = self.bolus_acc // self.bolus_unit
        self.bolus_acc -= n * self.bolus_unit
        return n if n < remaining_steps else remaining_steps

    def end_bolus(self):
        self.bolus_acc = 0

    def start(self, basal, bolus):
        """Emit basal+bolus steps spread evenly over the coming tick."""
        n = basal + bolus
        if n <= 0:
            return
        self.train_basal = basal
        self.train_bolus = bolus
        self.trains += 1
        self.motor.start(n, n * 1000 // TICK_MS or 1, DELIVER)
