# Rolling delivery windows for the hourly and daily limits, and recent bolus insulin for the
# bolus calculator's insulin on board. Bucketed, so the sums are conservative: the "hour" is
# the current minute plus the 60 before it, the "day" the current quarter-hour plus the 96
# before it. A limit checked against them holds for every true 60-minute / 24-hour window.
from array import array

_HOUR_B = 61  # 1-minute buckets
_DAY_B = 97  # 15-minute buckets
IOB_B = 96  # 5-minute buckets of bolus insulin: 8 hours, the longest insulin action allowed


class Windows:
    def __init__(self):
        self.hour = array("i", bytes(4 * _HOUR_B))
        self.day = array("i", bytes(4 * _DAY_B))
        self.bolus5 = array("i", bytes(4 * IOB_B))
        self.minute = 0  # minutes since boot of the current buckets
        self.hour_sum = 0
        self.day_sum = 0

    def advance(self, uptime_s):
        """Call once per tick: start new buckets when a minute begins."""
        m = uptime_s // 60
        while self.minute < m:
            self.minute += 1
            i = self.minute % _HOUR_B
            self.hour_sum -= self.hour[i]
            self.hour[i] = 0
            if self.minute % 15 == 0:
                j = (self.minute // 15) % _DAY_B
                self.day_sum -= self.day[j]
                self.day[j] = 0
            if self.minute % 5 == 0:
                self.bolus5[(self.minute // 5) % IOB_B] = 0

    def add(self, therapy_steps, bolus_steps):
        m = self.minute
        self.hour[m % _HOUR_B] += therapy_steps
        self.hour_sum += therapy_steps
        self.day[(m // 15) % _DAY_B] += therapy_steps
        self.day_sum += therapy_steps
        self.bolus5[(m // 5) % IOB_B] += bolus_steps
