# The history command, and reading the flash logs core/history.py appends to (recovery at boot
# shares the reader): a record is trusted only if its CRC holds and it carries the seq its place
# in the log says it has.
import struct

from basalt.core.history import FMT, LOGS, REC
from basalt.lib import crc16


def history(pump, args):
    """{since: seq (records after it), limit: 1..32, type: record type, from_s/to_s: pump-time
    range}. Records are [seq, t, type, a, b]; amounts a/b are in steps (see core/history.py).
    A reply holds what fits one frame and looks at 256 records at most: page on with since=next.
    A record that fails its checks is never returned; its seq is listed in skipped_corrupt."""
    from basalt.cmd import check_int, only, opt  # here: recovery at boot imports this module lean

    only(args, "since", "limit", "type", "from_s", "to_s")
    h = pump.history
    since = check_int(opt(args, "since", 0), "since", 0, 0xFFFFFFFF)
    limit = check_int(opt(args, "limit", 16), "limit", 1, 32)
    kind = check_int(opt(args, "type", 0), "type", 0, 255)
    t0 = check_int(opt(args, "from_s", 0), "from_s", 0, 0xFFFFFFFF)
    t1 = check_int(opt(args, "to_s", 0xFFFFFFFF), "to_s", 0, 0xFFFFFFFF)
    lo = oldest(h.seq)
    seq = since + 1 if since >= lo else lo
    out, bad = [], []
    room = 500  # bytes of records per reply: the frame stays under MAX_FRAME (768)
    last = seq - 1
    buf = bytearray(REC * 8)
    for s, off in records(pump.storage, "h", seq, seq + 256 if seq + 256 <= h.seq else h.seq + 1, buf):
        if len(out) == limit:
            break
        if off < 0:
            if len(bad) == 4:
                break  # the next page reports the rest
            bad.append(s)
        else:
            _, t, k, _, a, b = struct.unpack_from(FMT, buf, off)
            if (not kind or k == kind) and t0 <= t <= t1:
                room -= len("[%d, %d, %d, %d, %d], " % (s, t, k, a, b))
                if room < 0:
                    break  # this record starts the next page
                out.append((s, t, k, a, b))  # a tuple: a third lighter than a list (JSON: the same)
        last = s
    d = {"records": out, "next": last, "newest": h.seq, "oldest": lo, "uu_per_step": pump.mech.uu_per_step}
    if bad:
        d["skipped_corrupt"] = bad
    return d


def oldest(newest):
    """The oldest history seq the segment ring still holds while its newest is `newest`."""
    g = LOGS["h"]
    k = (newest - 1) // g[1] - g[2] + 1 if newest > 0 else 0
    return k * g[1] + 1 if k > 0 else 1


def records(store, log, seq, end, buf):
    """Read records seq..end-1 of a flash log a page (buf) at a time; yield (seq, offset in buf),
    offset -1 when that record is missing or corrupt: a CRC that fails, or a seq that is not
    the one its place in the log says (recovery at boot shares this)."""
    size, per = LOGS[log][0], LOGS[log][1]
    n = i = 0
    while seq < end:
        if i == n:  # the next page, within one segment
            k = (seq - 1) // per
            n = store.readinto(log + str(k), (seq - 1 - k * per) * size, buf) // size or 1
            i = 0
        off = i * size
        ok = (struct.unpack_from("<I", buf, off)[0] == seq
              and struct.unpack_from("<H", buf, off + size - 2)[0] == crc16(buf, off, off + size - 2))
        yield seq, off if ok else -1
        seq += 1
        i += 1
