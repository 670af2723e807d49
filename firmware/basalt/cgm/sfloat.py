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
# No floats on the pump: values come out as exact integers scaled by 10**digits (digits=1 gives
# tenths), rounded half away from zero, None for a special value. Results are kept inside the
# MicroPython small-int range (no heap allocation): magnitudes that would exceed it saturate at
# +-SAT (999999999). to_float() is a host-side convenience only.
try:
    from micropython import const
except ImportError:  # CPython: const() is a no-op, and every _NAME constant is also readable as NAME
    from ..lib.cpython import const, exports

    __getattr__ = exports(globals())

_NAN = const(0x07FF)
_NRES = const(0x0800)
_PINF = const(0x07FE)
_NINF = const(0x0802)
_RSVD = const(0x0801)
_MANT_MAX = const(2045)
_SAT = const(999999999)

_P10 = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)


def special(raw):
    # the special code (_NAN/_NRES/_PINF/_NINF/_RSVD) if raw is not a number, else 0
    m = raw & 0x0FFF
    return m if 0x07FE <= m <= 0x0802 else 0


def scaled(raw, digits=1):
    # value * 10**digits as an int (rounded half away from zero), None if not a number
    m = raw & 0x0FFF
    if 0x07FE <= m <= 0x0802:
        return None
    if m >= 0x0800:
        m -= 0x1000
    e = ((raw >> 12) & 15) + digits
    if raw & 0x8000:
        e -= 16
    if m == 0:
        return 0
    a = m if m > 0 else -m
    if e >= 0:
        if e > 9 or a > _SAT // _P10[e]:
            return _SAT if m > 0 else -_SAT
        return m * _P10[e]
    d = _P10[-e] if e >= -9 else 0
    if not d:
        return 0
    q = (2 * a + d) // (2 * d)
    return q if m > 0 else -q


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
