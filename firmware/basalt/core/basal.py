# A 24-hour basal schedule: segments that start on 30-minute boundaries, each with a rate in
# mU/h. rate_at() is called once per tick, so it is a plain scan over at most 48 pairs.
from .errors import Refused, check_int

MAX_SEGMENTS = 48
DAY_MIN = 1440


class BasalSchedule:
    def __init__(self, starts, rates):
        self.starts = starts  # minutes after midnight, ascending, first is 0
        self.rates = rates  # mU/h

    @staticmethod
    def parse(segments, max_rate_muh):
        """Validate [[start_min, rate_mUh], ...] into a schedule; refuse anything malformed."""
        if type(segments) is not list or not segments:
            raise Refused("bad_arg", "segments must be a non-empty list of [start_min, rate_mUh]")
        if len(segments) > MAX_SEGMENTS:
            raise Refused("range", "at most %d segments" % MAX_SEGMENTS)
        starts, rates = [], []
        prev = -1
        for seg in segments:
            if type(seg) is not list or len(seg) != 2:
                raise Refused("bad_arg", "each segment is [start_min, rate_mUh]")
            start = check_int(seg[0], "segment start", 0, DAY_MIN - 30)
            rate = check_int(seg[1], "basal rate", 0, max_rate_muh)
            if start % 30:
                raise Refused("range", "segment start %d is not on a 30-minute boundary" % start)
            if start <= prev:
                raise Refused("range", "segment starts must ascend")
            if not starts and start != 0:
                raise Refused("range", "the first segment must start at 0 (midnight)")
            starts.append(start)
            rates.append(rate)
            prev = start
        return BasalSchedule(starts, rates)

    def rate_at(self, minute_of_day):
        rate = self.rates[0]
        for i in range(1, len(self.starts)):
            if self.starts[i] > minute_of_day:
                break
            rate = self.rates[i]
        return rate

    def max_rate(self):
        return max(self.rates)

    def to_list(self):
        return [[s, r] for s, r in zip(self.starts, self.rates)]
