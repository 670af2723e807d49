# Basal profiles: up to MAX_PROFILES named 24-hour profiles, each stored as 48 half-hour slot
# rates (mU/h) in an array, so the per-tick lookup is one index. The protocol speaks segments
# ([start_min, rate]); basalt/cmd/basal.py converts and validates (it is an overlay).
from array import array

MAX_PROFILES = 6
SLOTS = 48


class Profiles:
    def __init__(self):
        self.names = ["default"]
        self.rates = [array("H", bytes(2 * SLOTS))]  # a new pump owes nothing until programmed
        self.active = 0

    def rate_at(self, minute_of_day):
        return self.rates[self.active][minute_of_day // 30]
