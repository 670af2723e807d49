# Parsing a basal profile's segments (cmd/basal.py): run as an overlay of its own and dropped
# before the profile is saved, so the save has the heap without this code.
from array import array

from basalt.cmd import check_int
from basalt.core import Refused


def parse(pump, segments):
    """Flat [start_min, rate_mUh, start_min, rate_mUh, ...] on 30-minute boundaries -> an array of
    48 half-hour slot rates, or the first rate above the max basal (an int) for the caller to
    refuse. Flat, not [[start, rate], ...]: 48 nested pairs parse into ~3.8 KB of
    objects, the flat list into ~0.7 KB - the difference between fitting a 64 KB heap or not."""
    if type(segments) is not list or not 2 <= len(segments) <= 96 or len(segments) % 2:
        raise Refused("bad_arg", "segments must be a flat list of 1..48 start_min, rate_mUh pairs")
    max_basal = pump.limits.max_basal_mUh
    prev = -1
    for j in range(0, len(segments), 2):
        start = check_int(segments[j], "segment start", 0, 1410)
        rate = check_int(segments[j + 1], "segment rate", 0, 30000)
        if start % 30:
            raise Refused("range", "segment start %d is not on a 30-minute boundary" % start)
        if start <= prev or (j == 0 and start != 0):
            raise Refused("range", "segments start at 0 and ascend")
        if rate > max_basal:
            return rate  # the caller refuses it through the limit guard, once this is dropped
        prev = start
    rates = array("H", bytes(2 * 48))
    n = len(segments)
    for j in range(0, n, 2):
        end = segments[j + 2] if j + 2 < n else 1440
        for s in range(segments[j] // 30, end // 30):
            rates[s] = segments[j + 1]
    return rates
