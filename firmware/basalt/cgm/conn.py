# What the pump needs from the CGM Service when it connects or backfills, kept out of the
# per-notification path (basalt.cgm.rx): read the CGM Feature (0x2AA8) and talk RACP (0x2A52).
# Import it for the connection / backfill step and drop it again. docs/cgms.md has the layouts.
try:
    from micropython import const
except ImportError:  # CPython. No lib.cpython exports here: its two names would be the pump's too
    const = int

from basalt.lib import crc16

_F_E2E_CRC = const(1 << 12)  # = cgms.F_E2E_CRC
_RACP_ABORT = const(3)
_RACP_NUM_RSP = const(5)
_RACP_RSP = const(6)
_OPR_NULL = const(0)
_OPR_ALL = const(1)
_OPR_LE = const(2)
_OPR_GE = const(3)
_OPR_RANGE = const(4)
_FILTER_TIME_OFFSET = const(1)


def feature(buf):
    # CGM Feature value -> its 24 feature bits (bit 12: records carry an E2E-CRC), or -1 when it
    # is shorter than 6 bytes or, with E2E-CRC supported, its CRC (over the first 4 bytes) is wrong.
    # Type and sample location are buf[3] & 15 and buf[3] >> 4.
    if len(buf) < 6:
        return -1
    f = buf[0] | (buf[1] << 8) | (buf[2] << 16)
    if f & _F_E2E_CRC and crc16(buf, 0, 4) != buf[4] | (buf[5] << 8):
        return -1
    return f


def racp_request(code, mode=_OPR_ALL, lo=0, hi=0):
    # RACP request bytes: op code, operator (mode), and for <= / >= the filter (time offset) and
    # lo, for a range lo..hi inclusive. Abort always goes with the null operator. (code and mode
    # are built-in names: the pump interns no new one for them.)
    if code == _RACP_ABORT:
        return bytes((_RACP_ABORT, _OPR_NULL))
    if mode == _OPR_LE or mode == _OPR_GE:
        return bytes((code, mode, _FILTER_TIME_OFFSET, lo & 0xFF, (lo >> 8) & 0xFF))
    if mode == _OPR_RANGE:
        return bytes((code, mode, _FILTER_TIME_OFFSET, lo & 0xFF, (lo >> 8) & 0xFF,
                      hi & 0xFF, (hi >> 8) & 0xFF))
    return bytes((code, mode))


def racp_response(buf):
    # RACP indication -> (5, number_of_records, 0) or (6, request_op_code, response_code);
    # ValueError for anything else.
    if len(buf) == 4 and buf[1] == _OPR_NULL:
        if buf[0] == _RACP_NUM_RSP:
            return _RACP_NUM_RSP, buf[2] | (buf[3] << 8), 0
        if buf[0] == _RACP_RSP:
            return _RACP_RSP, buf[2], buf[3]
    raise ValueError("racp response")
