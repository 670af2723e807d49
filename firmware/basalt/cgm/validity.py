# Is a parsed CGM reading fit to act on? A stateful Validator classifies each cgms.Reading as
# accepted (reason 0) or rejected with one reason code, and counts every outcome per reason in a
# fixed array. Rules and their order are in docs/cgms.md ("Reading validity").
#
# Times: the pump's own clock in whole seconds (any monotonic epoch, e.g. uptime). The session
# mapping (set_session) says which pump time corresponds to CGM time offset 0; a reading's time
# is then session_start + 60 * time_offset.
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is a no-op, and every _NAME constant is also readable as NAME
    from ..lib.cpython import const, exports

    __getattr__ = exports(globals())

_R_OK = const(0)
_R_MALFORMED = const(1)  # record framing error (Size / flags)
_R_CRC = const(2)  # E2E-CRC mismatch
_R_SPECIAL = const(3)  # glucose is NaN / NRes / +-INF / reserved
_R_ERROR_CODE = const(4)  # oref0: value <= 10 mg/dL or exactly 38 mg/dL (sensor error codes)
_R_RANGE = const(5)  # outside lo..hi (default 40..400 mg/dL)
_R_SESSION_STOPPED = const(6)  # annunciation: session stopped
_R_MALFUNCTION = const(7)  # annunciation: sensor malfunction
_R_CAL_REQUIRED = const(8)  # annunciation: calibration required
_R_ANNUNC = const(9)  # another annunciation in the validator's block mask
_R_NO_SESSION = const(10)  # no session start mapping yet
_R_FUTURE = const(11)  # more than max_ahead_s in the future
_R_STALE = const(12)  # older than max_age_s
_R_DUPLICATE = const(13)  # time offset equal to one recently accepted
_R_NOT_MONOTONIC = const(14)  # time offset before the last accepted one
_N_REASONS = const(15)

# Annunciation bits blocked by default besides the three with their own reason: wrong sensor type,
# general device fault, temperature too high / too low, result below / above the device's range.
_BLOCK_DEFAULT = const((1 << 2) | (1 << 5) | (1 << 12) | (1 << 13) | (1 << 22) | (1 << 23))

_E_OK = const(0)  # = cgms.E_OK
_E_CRC = const(3)  # = cgms.E_CRC
_A_SESSION_STOPPED = const(1 << 0)
_A_MALFUNCTION = const(1 << 3)
_A_CAL_REQUIRED = const(1 << 11)
_RING = const(8)  # accepted time offsets remembered for the duplicate check


class Validator:
    def __init__(self, lo=400, hi=4000, max_age_s=720, max_ahead_s=300, block=_BLOCK_DEFAULT):
        # lo/hi: accepted glucose range in tenths of mg/dL, inclusive (default 40..400 mg/dL)
        self.lo = lo
        self.hi = hi
        self.max_age_s = max_age_s
        self.max_ahead_s = max_ahead_s
        self.block = block
        self.counts = array("I", [0] * _N_REASONS)
        self._ring = array("i", [-1] * _RING)
        self.set_session(None)

    def set_session(self, start_s):
        # pump time (s) of CGM time offset 0, or None while unknown; forgets the offset history
        # (a new session restarts its offsets from 0)
        self.session = start_s
        self.last = -1  # last accepted time offset
        self._ri = 0
        r = self._ring
        for i in range(_RING):
            r[i] = -1

    def reset_counts(self):
        c = self.counts
        for i in range(_N_REASONS):
            c[i] = 0

    def classify(self, rec, now_s):
        # reason code for rec at pump time now_s, without counting or remembering it
        if rec.err != _E_OK:
            return _R_CRC if rec.err == _E_CRC else _R_MALFORMED
        g = rec.glucose
        if g is None:
            return _R_SPECIAL
        if g <= 100 or g == 380:
            return _R_ERROR_CODE
        if g < self.lo or g > self.hi:
            return _R_RANGE
        st = rec.status
        if st:
            if st & _A_SESSION_STOPPED:
                return _R_SESSION_STOPPED
            if st & _A_MALFUNCTION:
                return _R_MALFUNCTION
            if st & _A_CAL_REQUIRED:
                return _R_CAL_REQUIRED
            if st & self.block:
                return _R_ANNUNC
        if self.session is None:
            return _R_NO_SESSION
        to = rec.time_offset
        age = now_s - (self.session + 60 * to)
        if -age > self.max_ahead_s:
            return _R_FUTURE
        if age > self.max_age_s:
            return _R_STALE
        r = self._ring
        for i in range(_RING):
            if r[i] == to:
                return _R_DUPLICATE
        if to < self.last:
            return _R_NOT_MONOTONIC
        return _R_OK

    def check(self, rec, now_s):
        # classify, count, and remember rec's time offset if accepted; returns the reason code
        why = self.classify(rec, now_s)
        self.counts[why] += 1
        if why == _R_OK:
            to = rec.time_offset
            self.last = to
            self._ring[self._ri] = to
            self._ri = (self._ri + 1) % _RING
        return why
