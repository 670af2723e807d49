# Is a parsed CGM reading fit to act on? The rules live in basalt.cgm.rx (check(), on a
# caller-owned state array: what the pump runs). Validator wraps them for the host tools, the
# simulator and tests: one state array, readings given as cgms.Reading objects. Rules and their
# order are in docs/cgms.md ("Reading validity").
#
# Times: the pump's own clock in whole seconds (any monotonic epoch, e.g. uptime). The session
# mapping (set_session) says which pump time corresponds to CGM time offset 0; a reading's time
# is then session_start + 60 * time_offset.
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is a no-op, and every _NAME constant is also readable as NAME
    from basalt.lib.cpython import const, exports

    __getattr__ = exports(globals())

from basalt.cgm import rx

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

# rx state slots (docs/cgms.md)
_NONE = const(-0x40000000)
_SESSION = const(13)
_LAST = const(14)
_LO = const(16)
_HI = const(17)
_MAX_AGE = const(18)
_MAX_AHEAD = const(19)
_BLOCK = const(20)
_COUNTS = const(29)


class Validator:
    def __init__(self, lo=400, hi=4000, max_age_s=720, max_ahead_s=300, block=_BLOCK_DEFAULT):
        # lo/hi: accepted glucose range in tenths of mg/dL, inclusive (default 40..400 mg/dL)
        self.state = s = rx.state()
        s[_LO] = lo
        s[_HI] = hi
        s[_MAX_AGE] = max_age_s
        s[_MAX_AHEAD] = max_ahead_s
        s[_BLOCK] = block
        self.counts = memoryview(s)[_COUNTS:_COUNTS + _N_REASONS]  # counts[reason], a view

    @property
    def session(self):
        v = self.state[_SESSION]
        return None if v == _NONE else v

    @property
    def last(self):
        return self.state[_LAST]  # last accepted time offset, -1 none

    def set_session(self, start_s):
        # pump time (s) of CGM time offset 0, or None while unknown; forgets the offset history
        # (a new session restarts its offsets from 0)
        rx.reset(self.state, start_s)

    def reset_counts(self):
        c = self.counts
        for i in range(_N_REASONS):
            c[i] = 0

    def classify(self, rec, now_s):
        # reason code for rec at pump time now_s, without counting or remembering it (on a copy)
        return rx.check(array("i", self.state), rec.err, rec.glucose, rec.time_offset, rec.status, now_s)

    def check(self, rec, now_s):
        # classify, count, and remember rec's time offset if accepted; returns the reason code
        return rx.check(self.state, rec.err, rec.glucose, rec.time_offset, rec.status, now_s)
