# The pump clock, the history, and reading the limits.
import struct

from ..core.history import FMT, REC, RING, TIME_SET
from ..lib.crc16 import crc16
from . import _save
from ._util import arg, check_int, only, opt


def time_get(pump, args):
    only(args)
    return {"local_s": pump.local_s(), "minute_of_day": pump.minute_of_day(), "uptime_s": pump.uptime_s}


def time_set(pump, args):
    """{local_s: seconds since 2000-01-01 00:00 local time}. Basal is owed per elapsed second
    at the rate of the local-time segment then in force, so a clock change only changes which
    segment applies from the next tick: it never repeats delivery or skips insulin owed."""
    only(args, "local_s")
    new = check_int(arg(args, "local_s"), "local_s", 0, 0x7FFFFFFF)  # history keeps it as int32 (to 2068)
    old = pump.local_s()
    old_offset = pump.clock_offset_s
    pump.clock_offset_s = new - pump.uptime_s

    def undo():
        pump.clock_offset_s = old_offset
    _save.commit(pump, undo)
    pump.record(TIME_SET, new, old)
    pump.emit("time", {"local_s": new, "previous_s": old})
    return {"local_s": new, "previous_s": old, "minute_of_day": pump.minute_of_day()}


def history(pump, args):
    """{since: seq (records after it), limit: 1..32, type: record type, from_s/to_s: uptime range}.
    Records are [seq, t, type, a, b]; amounts a/b are in steps (see core/history.py)."""
    only(args, "since", "limit", "type", "from_s", "to_s")
    h = pump.history
    since = check_int(opt(args, "since", 0), "since", 0, 1 << 30)
    limit = check_int(opt(args, "limit", 16), "limit", 1, 32)
    kind = check_int(opt(args, "type", 0), "type", 0, 255)
    t0 = check_int(opt(args, "from_s", 0), "from_s", 0, 1 << 30)
    t1 = check_int(opt(args, "to_s", 1 << 30), "to_s", 0, 1 << 30)
    out = []
    seq = since + 1
    oldest = h.seq - RING + 1
    if seq < oldest:
        seq = oldest if oldest > 1 else 1
    while seq <= h.seq and len(out) < limit:
        r = record(h, seq)
        if r and (not kind or r[2] == kind) and t0 <= r[1] <= t1:
            out.append(list(r))
        seq += 1
    return {"records": out, "next": seq - 1, "newest": h.seq, "oldest": oldest if oldest > 1 else 1,
            "uu_per_step": pump.mech.uu_per_step}




def record(h, seq):
    """(seq, t, type, a, b) of history record seq, or None if it left the ring or is corrupt."""
    if seq < 1 or seq > h.seq or seq <= h.seq - RING:
        return None
    off = (seq % RING) * REC
    if struct.unpack_from("<H", h.buf, off + 18)[0] != crc16(h.buf, off, off + 18):
        return None
    s, t, k, _, a, b = struct.unpack_from(FMT, h.buf, off)
    return (s, t, k, a, b)


def limits_get(pump, args):
    only(args)
    return pump.limits.to_dict()
