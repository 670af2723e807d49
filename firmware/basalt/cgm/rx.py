# The pump's CGM receive path, and nothing else: parse one CGM Measurement notification (0x2AA7;
# one or more records, E2E-CRC when the sensor's Feature says so, SFLOAT special values) and
# decide for each record whether it is fit to act on. Built to be imported for one call (an
# overlay) and dropped: no class, no public constant (not even on CPython), every argument name a
# built-in or already resident one; the caller owns the only long-lived object, the array state()
# returns. docs/cgms.md ("The pump's receive path") has the API, the slot table and every rule;
# the pump declares the slot numbers it reads as its own _X = const(...).
#
# Numbers are integers, never floats: glucose and trend in tenths of mg/dL and (mg/dL)/min,
# quality in tenths of a percent; _NONE (-2**30, a small int on 32-bit boards too) stands for "no
# value" (field absent, or an SFLOAT special value: NaN, NRes, +-INF, reserved).
from array import array

try:
    from micropython import const
except ImportError:  # CPython. No lib.cpython exports here: its two names would be the pump's too
    const = int

from basalt.lib import crc16

_NONE = const(-0x40000000)  # "no value" in any slot
_SAT = const(999999999)  # |scaled()| saturates here (stays a small int)

# Record slots (record() refills 0-12 for every record)
_ERR = const(0)  # E_* below
_START = const(1)  # offset of the record in the notification
_SIZE = const(2)
_FLAGS = const(3)
_GLUCOSE_RAW = const(4)  # SFLOAT word, -1 if absent
_GLUCOSE = const(5)  # tenths of mg/dL, _NONE if a special value
_TIME_OFFSET = const(6)  # minutes since session start
_STATUS = const(7)  # 24 annunciation bits: Status | Cal/Temp << 8 | Warning << 16
_TREND_RAW = const(8)
_TREND = const(9)  # tenths of (mg/dL)/min, _NONE if absent or special
_QUALITY_RAW = const(10)
_QUALITY = const(11)  # tenths of a percent, _NONE if absent or special
_CRC = const(12)  # received E2E-CRC, -1 if none
_NF = const(13)

# Validator slots (state() sets them; check() and reset() keep them)
_SESSION = const(13)  # pump time (s) of time offset 0, _NONE while unknown
_LAST = const(14)  # last accepted time offset, -1 none
_RI = const(15)  # next ring slot
_LO = const(16)  # accepted glucose range, tenths of mg/dL, inclusive (40..400 mg/dL)
_HI = const(17)
_MAX_AGE = const(18)  # s: older is stale (oref0: 12 min)
_MAX_AHEAD = const(19)  # s: further ahead is in the future (oref0: 5 min)
_BLOCK = const(20)  # annunciation bits rejected as R_ANNUNC
_RING = const(21)  # 8 slots: the last accepted time offsets (-1 empty), for the duplicate check
_NRING = const(8)
_COUNTS = const(29)  # 15 slots: counts[reason], counts[0] = accepted
_N = const(44)

# Record errors (slot _ERR) = cgms.E_*
_E_SIZE = const(1)  # Size < 6 or past the buffer: parsing stops
_E_LAYOUT = const(2)  # Size disagrees with the flags / E2E-CRC presence: parsing stops
_E_CRC = const(3)  # E2E-CRC mismatch: fields decoded, parsing continues

# Reasons (check's result) = validity.R_*
_R_OK = const(0)
_R_MALFORMED = const(1)
_R_CRC = const(2)
_R_SPECIAL = const(3)
_R_ERROR_CODE = const(4)
_R_RANGE = const(5)
_R_SESSION_STOPPED = const(6)
_R_MALFUNCTION = const(7)
_R_CAL_REQUIRED = const(8)
_R_ANNUNC = const(9)
_R_NO_SESSION = const(10)
_R_FUTURE = const(11)
_R_STALE = const(12)
_R_DUPLICATE = const(13)
_R_NOT_MONOTONIC = const(14)

# Wrong sensor type, general device fault, temperature too high / too low, below / above the
# device's range: rejected besides session stopped (bit 0), malfunction (3), calibration required (11)
_BLOCK_DEFAULT = const((1 << 2) | (1 << 5) | (1 << 12) | (1 << 13) | (1 << 22) | (1 << 23))


def state(s=None):
    # A new state array (44 x int32, docs/cgms.md), or s made one: the record slots (no record
    # yet: r[0] is E_SIZE), then the validator's, with the default rules and the session unknown.
    # The caller keeps it across imports of this module: it is a plain array, it keeps nothing
    # else alive.
    if s is None:
        s = array("i", (0,) * _N)
    record(b"", 0, 0, 0, s)
    reset(s)
    s[_LO] = 400
    s[_HI] = 4000
    s[_MAX_AGE] = 720
    s[_MAX_AHEAD] = 300
    s[_BLOCK] = _BLOCK_DEFAULT
    return s


def reset(s, start=None):
    # New session mapping: start = pump time (s) of CGM time offset 0, None while unknown.
    # Forgets the accepted offsets (a new session restarts them at 0); keeps the counts.
    s[_SESSION] = _NONE if start is None else start
    s[_LAST] = -1
    s[_RI] = 0
    for i in range(_RING, _RING + _NRING):
        s[i] = -1


def scaled(raw, n=1):
    # SFLOAT -> value * 10**n as an int, rounded half away from zero; None for a special value
    m = raw & 0x0FFF
    if 0x07FE <= m <= 0x0802:
        return None
    if m >= 0x0800:
        m -= 0x1000
    e = ((raw >> 12) & 15) + n
    if raw & 0x8000:
        e -= 16
    if m == 0:
        return 0
    a = m if m > 0 else -m
    if e < 0:  # a / 10**-e, rounded half away from zero
        if e < -4:  # |m| <= 2045: below 0.03, so 0
            return 0
        d = 1
        while e:
            d *= 10
            e += 1
        a = (2 * a + d) // (2 * d)
    else:  # a * 10**e, exact, unless it passes _SAT
        while e:
            if a > _SAT // 10:
                return _SAT if m > 0 else -_SAT
            a *= 10
            e -= 1
    return a if m > 0 else -a


def record(buf, off, end, crc, r):
    # Parse the record at buf[off:end] into r's slots 0-12 (r: a state() array, or any
    # array('i') of 13+). crc: True when the Feature has E2E-CRC, False when not, 2 (E2E_AUTO) to
    # take a CRC whenever the Size says one is there. Returns the next record's offset, or -1 when
    # framing is lost (r[0] says why). Allocates nothing.
    r[_ERR] = r[_SIZE] = r[_FLAGS] = r[_TIME_OFFSET] = r[_STATUS] = 0
    r[_GLUCOSE_RAW] = r[_TREND_RAW] = r[_QUALITY_RAW] = r[_CRC] = -1
    r[_GLUCOSE] = r[_TREND] = r[_QUALITY] = _NONE
    r[_START] = off
    if end < 0:
        end = len(buf)
    if off >= end:
        r[_ERR] = _E_SIZE
        return -1
    n = buf[off]
    r[_SIZE] = n
    if n < 6 or n > end - off:
        r[_ERR] = _E_SIZE
        return -1
    fl = buf[off + 1]
    r[_FLAGS] = fl
    # 6 + 2 trend + 2 quality + 1 per annunciation octet (reserved bits 0x1C add nothing)
    p = 6 + ((fl & 1) << 1) + (fl & 2) + (fl >> 7) + ((fl >> 6) & 1) + ((fl >> 5) & 1)
    c = n == p + 2 if crc == 2 else crc
    if n != (p + 2 if c else p):
        r[_ERR] = _E_LAYOUT
        return -1
    end = off + n
    if c:
        c = buf[end - 2] | (buf[end - 1] << 8)
        r[_CRC] = c
        if crc16(buf, off, end - 2) != c:
            r[_ERR] = _E_CRC
    c = buf[off + 2] | (buf[off + 3] << 8)
    r[_GLUCOSE_RAW] = c
    c = scaled(c)
    if c is not None:
        r[_GLUCOSE] = c
    r[_TIME_OFFSET] = buf[off + 4] | (buf[off + 5] << 8)
    p = off + 6
    c = 0
    if fl & 0x80:  # Status octet: bits 0-7 (spec order Status, Cal/Temp, Warning)
        c = buf[p]
        p += 1
    if fl & 0x40:  # Cal/Temp: bits 8-15
        c |= buf[p] << 8
        p += 1
    if fl & 0x20:  # Warning: bits 16-23
        c |= buf[p] << 16
        p += 1
    r[_STATUS] = c
    if fl & 1:  # trend
        c = buf[p] | (buf[p + 1] << 8)
        r[_TREND_RAW] = c
        c = scaled(c)
        if c is not None:
            r[_TREND] = c
        p += 2
    if fl & 2:  # quality
        c = buf[p] | (buf[p + 1] << 8)
        r[_QUALITY_RAW] = c
        c = scaled(c)
        if c is not None:
            r[_QUALITY] = c
    return end


def check(s, err, value, minutes, status, now):
    # Reason code (0 = accept) for one record: err (E_*), value (glucose, tenths of mg/dL; _NONE
    # or None for no value), minutes (time offset), status (24 annunciation bits), now (pump
    # time, s). Counts it in s[29 + reason]; an accepted one becomes the last accepted offset.
    if err:
        why = _R_CRC if err == _E_CRC else _R_MALFORMED
    elif value is None or value == _NONE:
        why = _R_SPECIAL
    elif value <= 100 or value == 380:  # oref0: <= 10 mg/dL or exactly 38 (sensor error codes)
        why = _R_ERROR_CODE
    elif value < s[_LO] or value > s[_HI]:
        why = _R_RANGE
    elif status & 1:
        why = _R_SESSION_STOPPED
    elif status & 8:
        why = _R_MALFUNCTION
    elif status & 0x800:
        why = _R_CAL_REQUIRED
    elif status & s[_BLOCK]:
        why = _R_ANNUNC
    elif s[_SESSION] == _NONE:
        why = _R_NO_SESSION
    else:
        age = now - s[_SESSION] - 60 * minutes  # s
        if -age > s[_MAX_AHEAD]:
            why = _R_FUTURE
        elif age > s[_MAX_AGE]:
            why = _R_STALE
        else:
            why = _R_OK
            for i in range(_RING, _RING + _NRING):
                if s[i] == minutes:
                    why = _R_DUPLICATE
            if not why and minutes < s[_LAST]:
                why = _R_NOT_MONOTONIC
    s[_COUNTS + why] += 1
    if not why:
        s[_LAST] = minutes
        i = s[_RI]
        s[_RING + i] = minutes
        s[_RI] = (i + 1) % _NRING
    return why


def parse(buf, s, cb, crc, now, end=-1):
    # Every record of one notification, each parsed into s and checked at pump time now; calls
    # cb(s, reason) per record, framing errors included (an empty notification gives one call
    # with s[0] = E_SIZE). Stops at a framing error, not at a CRC error. Returns the number of
    # records accepted. cb may be None.
    if end < 0:
        end = len(buf)
    off = 0
    n = 0
    while True:
        off = record(buf, off, end, crc, s)
        why = check(s, s[_ERR], s[_GLUCOSE], s[_TIME_OFFSET], s[_STATUS], now)
        if not why:
            n += 1
        if cb is not None:
            cb(s, why)
        if off < 0 or off >= end:
            return n
