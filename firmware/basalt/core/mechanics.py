# Insulin <-> motor steps, exactly. Amounts cross the protocol in milliunits (mU) and rates in
# mU/h; inside the core everything is whole motor steps plus carried integer remainders.
# U-100 insulin: 1 nL = 0.1 mU = 100 uU, so a step of N nL is N*100 micro-units (uU).
from .errors import Refused


class Mechanics:
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
