# SFLOAT (IEEE 11073-20601 16-bit float), as used by the Bluetooth CGM Service.
#
#   raw = exponent (4-bit signed, high nibble) << 12 | mantissa (12-bit signed)
#   value = mantissa * 10**exponent
#
# Special values (none of them is a number): 0x07FF NaN, 0x0800 NRes, 0x07FE +INF, 0x0802 -INF,
# 0x0801 reserved. A real mantissa lies in -2045..+2045, so any raw whose mantissa field is one of
# 0x7FE..0x802 is treated as not-a-value whatever its exponent (conservative: no such raw is a
# valid number either way).
#
# No floats on the pump: scaled(raw, n=1) gives the value as an exact integer scaled by 10**n
# (n=1: tenths), rounded half away from zero, None for a special value. Results are kept inside
# the MicroPython small-int range (no heap allocation): magnitudes that would exceed it saturate
# at +-SAT (999999999). scaled lives in basalt.cgm.rx (the pump's receive path, which does not
# load this module) and is re-exported here; the encoders and to_float() are for the host, the
# simulated sensor and the CGM emulator.
try:
    from micropython import const
except ImportError:  # CPython: const() is a no-op, and every _NAME constant is also readable as NAME
    from basalt.lib.cpython import const, exports

    __getattr__ = exports(globals())

from basalt.cgm.rx import scaled  # noqa: F401 - the decoder is the pump's: rx.scaled(raw, n=1)

_NAN = const(0x07FF)
_NRES = const(0x0800)
_PINF = const(0x07FE)
_NINF = const(0x0802)
_RSVD = const(0x0801)
_MANT_MAX = const(2045)
_SAT = const(999999999)


def special(raw):
    # the special code (_NAN/_NRES/_PINF/_NINF/_RSVD) if raw is not a number, else 0
    m = raw & 0x0FFF
    return m if 0x07FE <= m <= 0x0802 else 0


def encode(mantissa, exponent=0):
    # raw SFLOAT from an integer mantissa (-2045..2045) and exponent (-8..7)
    if not (-_MANT_MAX <= mantissa <= _MANT_MAX) or not (-8 <= exponent <= 7):
        raise ValueError("sfloat range")
    return ((exponent & 15) << 12) | (mantissa & 0x0FFF)


def from_scaled(v, digits=1):
    # raw SFLOAT for the value v * 10**-digits (v an int, e.g. tenths with digits=1), keeping
    # as much precision as 12 bits allow; rounds half away from zero only when it must.
    a = v if v >= 0 else -v
    e = -digits
    d = 1
    while (a + d // 2) // d > _MANT_MAX:
        d *= 10
        e += 1
    q = (2 * a + d) // (2 * d)
    return encode(q if v >= 0 else -q, e)


def from_int(mgdl):
    return from_scaled(mgdl, 0)


def from_tenths(t):
    return from_scaled(t, 1)


def to_float(raw):
    # host convenience: float value or None for a special value
    m = raw & 0x0FFF
    if 0x07FE <= m <= 0x0802:
        return None
    if m >= 0x0800:
        m -= 0x1000
    e = (raw >> 12) & 15
    if e >= 8:
        e -= 16
    return m * 10.0 ** e if e >= 0 else m / 10.0 ** -e
