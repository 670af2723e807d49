# CGMS codec and reading-validity tests. Run under MicroPython by tests/conftest.py, and also
# imported and run under CPython by tests/test_cgms_host.py, so they must work on both.
# Vectors from /work/shared/reference.md section 1 (Nordic Semiconductor's Android BLE library
# unit tests).
from basalt.cgm import cgms, conn, rx, sfloat, validity
from basalt.cgm.cgms import Reading
from basalt.cgm.validity import Validator
from basalt.lib import crc16
from mpyunit import raises

# Constants written out from the spec (docs/cgms.md), independently of the codec: on MicroPython
# the codec's own named constants are folded private const()s (they cost no RAM), so tests name
# their own. tests/test_cgms_host.py checks the codec's names against these on CPython.
NAN, NRES, PINF, NINF, RSVD = 0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801
SAT = 999999999
FL_TREND, FL_QUALITY, FL_WARNING, FL_CALTEMP, FL_STATUS = 0x01, 0x02, 0x20, 0x40, 0x80
A_SESSION_STOPPED = 1 << 0
A_BATTERY_LOW = 1 << 1
A_WRONG_SENSOR_TYPE = 1 << 2
A_SENSOR_MALFUNCTION = 1 << 3
A_DEVICE_SPECIFIC_ALERT = 1 << 4
A_GENERAL_DEVICE_FAULT = 1 << 5
A_TIME_SYNC_REQUIRED = 1 << 8
A_CAL_NOT_ALLOWED = 1 << 9
A_CAL_RECOMMENDED = 1 << 10
A_CAL_REQUIRED = 1 << 11
A_TEMP_TOO_HIGH = 1 << 12
A_TEMP_TOO_LOW = 1 << 13
A_BELOW_PATIENT_LOW = 1 << 16
A_ABOVE_PATIENT_HIGH = 1 << 17
A_BELOW_HYPO = 1 << 18
A_ABOVE_HYPER = 1 << 19
A_RATE_DECREASE_EXCEEDED = 1 << 20
A_RATE_INCREASE_EXCEEDED = 1 << 21
A_BELOW_DEVICE_RANGE = 1 << 22
A_ABOVE_DEVICE_RANGE = 1 << 23
F_CALIBRATION, F_TREND, F_QUALITY = 1 << 0, 1 << 15, 1 << 16
RACP_REPORT, RACP_DELETE, RACP_ABORT, RACP_REPORT_NUM, RACP_NUM_RSP, RACP_RSP = 1, 2, 3, 4, 5, 6
OPR_NULL, OPR_ALL, OPR_LE, OPR_GE, OPR_RANGE, OPR_FIRST, OPR_LAST = 0, 1, 2, 3, 4, 5, 6
RACP_NO_RECORDS = 6
SOCP_INTERVAL, SOCP_HYPO, SOCP_START_SESSION, SOCP_STOP_SESSION, SOCP_RSP = 1, 13, 26, 27, 28
SOCP_SUCCESS = 1
(R_OK, R_MALFORMED, R_CRC, R_SPECIAL, R_ERROR_CODE, R_RANGE, R_SESSION_STOPPED, R_MALFUNCTION,
 R_CAL_REQUIRED, R_ANNUNC, R_NO_SESSION, R_FUTURE, R_STALE, R_DUPLICATE, R_NOT_MONOTONIC) = range(15)
BLOCK_DEFAULT = (A_WRONG_SENSOR_TYPE | A_GENERAL_DEVICE_FAULT | A_TEMP_TOO_HIGH | A_TEMP_TOO_LOW
                 | A_BELOW_DEVICE_RANGE | A_ABOVE_DEVICE_RANGE)

# The pump's state array (rx.state(), docs/cgms.md): record slots, then the validator's
(S_ERR, S_START, S_SIZE, S_FLAGS, S_GLUCOSE_RAW, S_GLUCOSE, S_TIME_OFFSET, S_STATUS, S_TREND_RAW,
 S_TREND, S_QUALITY_RAW, S_QUALITY, S_CRC, S_SESSION, S_LAST, S_RI, S_LO, S_HI, S_MAX_AGE,
 S_MAX_AHEAD, S_BLOCK) = range(21)
S_RING, S_COUNTS, S_N = 21, 29, 44
NONE = -0x40000000  # "no value" in a slot
E2E_AUTO = 2

REC_PLAIN = bytes((0x06, 0x00, 0x0C, 0x10, 0x06, 0x00))
REC_FULL = bytes((0x0F, 0xE3, 0xD2, 0xE4, 0x05, 0x00, 0x02, 0x14, 0xFF, 0x02, 0xF0, 0xE5, 0xF3,
                  0x8E, 0x3F))
REC_BADCRC = bytes((0x08, 0x00, 0x0C, 0x10, 0x06, 0x00, 0x58, 0x6F))
SFLOAT_VECTORS = ((0x100C, 1200), (0xE4D2, 123), (0xF002, 2), (0xF3E5, 997), (0xFE94, -364))
SFLOAT_HUNDREDTHS = ((0x100C, 12000), (0xE4D2, 1234), (0xF002, 20), (0xF3E5, 9970), (0xFE94, -3640))


def parse_all(buf, e2e=False):
    # host-style helper for the tests: list of (err, glucose, time_offset, status) per record
    out = []
    rec = Reading()
    cgms.parse(buf, rec, lambda r: out.append((r.err, r.glucose, r.time_offset, r.status)), e2e)
    return out


# ---- CRC and SFLOAT ------------------------------------------------------------------------
def test_crc_vector():
    assert crc16(b"123456789") == 0x6F91


def test_sfloat_vectors():
    for raw, tenths in SFLOAT_VECTORS:
        assert sfloat.scaled(raw) == tenths, (hex(raw), sfloat.scaled(raw))
        assert sfloat.special(raw) == 0
    for raw, h in SFLOAT_HUNDREDTHS:
        assert sfloat.scaled(raw, 2) == h
    assert sfloat.scaled(0x100C, 0) == 120
    assert abs(sfloat.to_float(0xE4D2) - 12.34) < 1e-9
    assert abs(sfloat.to_float(0xFE94) + 36.4) < 1e-9


def test_sfloat_specials_are_not_values():
    for raw in (NAN, NRES, PINF, NINF, RSVD):
        assert sfloat.scaled(raw) is None
        assert sfloat.scaled(raw, 0) is None
        assert sfloat.to_float(raw) is None
        assert sfloat.special(raw) == raw
    # the special mantissas are never numbers, whatever the exponent
    for e in range(16):
        for m in range(0x7FE, 0x803):
            assert sfloat.scaled((e << 12) | m) is None
    assert sfloat.scaled(0x07FD) == 20450 and sfloat.scaled(0x0803) == -20450


def test_sfloat_rounding_and_saturation():
    assert sfloat.scaled(0xE005) == 1  # 0.05 -> 0.1 (half away from zero)
    assert sfloat.scaled(0xEFFB) == -1  # -0.05 -> -0.1
    assert sfloat.scaled(0xE004) == 0
    assert sfloat.scaled(0x8001) == 0  # 1e-8
    assert sfloat.scaled(0x77FD) == SAT  # 2045e7 saturates
    assert sfloat.scaled(0x7803) == -SAT
    assert sfloat.scaled(0x47FD) == 2045 * 100000
    assert sfloat.scaled(0x5001) == 1000000  # 1e5: big but exact
    assert sfloat.scaled(0x57FD, 0) == 204500000 and sfloat.scaled(0x67FD, 0) == SAT
    assert sfloat.scaled(0x7000) == 0


def test_sfloat_encode():
    assert sfloat.encode(12, 1) == 0x100C
    assert sfloat.encode(1234, -2) == 0xE4D2
    assert sfloat.encode(-364, -1) == 0xFE94
    assert sfloat.from_int(120) == 0x0078
    assert sfloat.from_tenths(997) == 0xF3E5
    assert sfloat.from_tenths(-364) == 0xFE94
    assert sfloat.from_tenths(2) == 0xF002
    for m in (2046, 2047, -2046, -2048, 5000):
        raises(ValueError, sfloat.encode, m, 0)
    raises(ValueError, sfloat.encode, 1, 8)
    raises(ValueError, sfloat.encode, 1, -9)
    raises(ValueError, sfloat.from_int, 2045 * 10 ** 8)


def test_sfloat_roundtrip():
    for e in range(-8, 8):
        for m in (-2045, -1000, -38, -1, 0, 1, 7, 38, 400, 999, 2045):
            raw = sfloat.encode(m, e)
            assert sfloat.special(raw) == 0
            if -1 <= e <= 4:
                assert sfloat.scaled(raw) == m * 10 ** (e + 1)
    # 12 bits of mantissa: tenths are exact up to 204.5, then rounded to whole units, then tens
    for t in range(-30000, 30001, 7):
        raw = sfloat.from_tenths(t)
        back = sfloat.scaled(raw)
        a = t if t >= 0 else -t
        tol = 0 if a <= 2045 else (5 if a <= 20454 else 50)
        assert abs(back - t) <= tol, (t, hex(raw), back)
        assert sfloat.from_tenths(back) == raw
    for v in range(0, 2046):
        assert sfloat.scaled(sfloat.from_int(v), 0) == v


# ---- measurement records ------------------------------------------------------------------
def test_record_plain_vector():
    rec = Reading()
    assert cgms.parse_record(REC_PLAIN, rec) == 6
    assert rec.err == cgms.E_OK and rec.size == 6 and rec.flags == 0
    assert rec.glucose == 1200 and rec.glucose_raw == 0x100C and rec.time_offset == 6
    assert rec.status == 0 and rec.trend is None and rec.quality is None and rec.crc == -1
    assert rec.trend_raw == -1 and rec.quality_raw == -1


def test_record_full_vector():
    rec = Reading()
    assert cgms.parse_record(REC_FULL, rec, 0, -1, True) == 15
    assert rec.err == cgms.E_OK
    assert rec.glucose == 123 and rec.time_offset == 5
    assert rec.trend == 2 and rec.quality == 997 and rec.crc == 0x3F8E
    # octets in spec order Status, Cal/Temp, Warning: 02 14 FF
    assert rec.status == 0xFF1402
    assert rec.status & A_BATTERY_LOW
    assert not rec.status & (A_SESSION_STOPPED | A_SENSOR_MALFUNCTION)
    assert rec.status & A_CAL_RECOMMENDED and rec.status & A_TEMP_TOO_HIGH
    assert not rec.status & A_CAL_REQUIRED
    for a in (A_BELOW_PATIENT_LOW, A_ABOVE_PATIENT_HIGH, A_BELOW_HYPO,
              A_ABOVE_HYPER, A_RATE_DECREASE_EXCEEDED, A_RATE_INCREASE_EXCEEDED,
              A_BELOW_DEVICE_RANGE, A_ABOVE_DEVICE_RANGE):
        assert rec.status & a
    # auto mode finds and checks the CRC too
    assert cgms.parse_record(REC_FULL, rec, 0, -1, cgms.E2E_AUTO) == 15 and rec.err == cgms.E_OK


def test_record_bad_crc_vector_rejected():
    rec = Reading()
    assert cgms.parse_record(REC_BADCRC, rec, 0, -1, True) == 8
    assert rec.err == cgms.E_CRC and rec.crc == 0x6F58
    assert crc16(REC_BADCRC, 0, 6) == 0x6F59
    assert cgms.parse_record(REC_BADCRC, rec, 0, -1, cgms.E2E_AUTO) == 8 and rec.err == cgms.E_CRC
    v = Validator()
    v.set_session(0)
    assert v.check(rec, 6 * 60) == R_CRC
    fixed = bytearray(REC_BADCRC)
    fixed[6] = 0x59
    assert cgms.parse_record(fixed, rec, 0, -1, True) == 8 and rec.err == cgms.E_OK
    assert v.check(rec, 6 * 60) == R_OK


def test_encode_reproduces_vectors():
    assert cgms.record(0x100C, 6) == REC_PLAIN
    assert cgms.record(0xE4D2, 5, 0xFF1402, 0xF002, 0xF3E5, True) == REC_FULL
    assert cgms.record(0x100C, 6, e2e=True) == bytes((0x08, 0x00, 0x0C, 0x10, 0x06, 0x00, 0x59, 0x6F))
    buf = bytearray(40)
    n = cgms.encode_record(buf, 3, 0x100C, 6)
    assert n == 9 and bytes(buf[3:9]) == REC_PLAIN


def test_octet_order_single_octets():
    rec = Reading()
    # one octet only: which group it belongs to comes from the flag, not its position
    cgms.parse_record(bytes((7, FL_STATUS, 0x78, 0, 1, 0, 0x08)), rec)
    assert rec.err == 0 and rec.status == A_SENSOR_MALFUNCTION
    cgms.parse_record(bytes((7, FL_CALTEMP, 0x78, 0, 1, 0, 0x08)), rec)
    assert rec.status == A_CAL_REQUIRED
    cgms.parse_record(bytes((7, FL_WARNING, 0x78, 0, 1, 0, 0x08)), rec)
    assert rec.status == A_ABOVE_HYPER
    # Status + Warning (no Cal/Temp): Status comes first
    cgms.parse_record(bytes((8, 0xA0, 0x78, 0, 1, 0, 0x01, 0x80)), rec)
    assert rec.status == A_SESSION_STOPPED | A_ABOVE_DEVICE_RANGE
    assert cgms.record(0x78, 1, A_SESSION_STOPPED | A_ABOVE_DEVICE_RANGE) == \
        bytes((8, 0xA0, 0x78, 0, 1, 0, 0x01, 0x80))


def test_annunciation_bits_decode_per_spec():
    # each of the 24 bits round-trips into the octet the spec gives it
    rec = Reading()
    for bit in range(24):
        b = cgms.record(0x78, 1, 1 << bit)
        assert b[1] == (FL_STATUS, FL_CALTEMP, FL_WARNING)[bit // 8] and b[6] == 1 << (bit % 8)
        cgms.parse_record(b, rec)
        assert rec.err == 0 and rec.status == 1 << bit
    assert cgms.F_E2E_CRC == 1 << 12


def test_codec_names_match_spec():
    # CPython only (tests/test_cgms_host.py runs this file there): the codec's names equal the
    # spec values written out above.
    if not hasattr(cgms, "A_SESSION_STOPPED"):
        return  # MicroPython: the named constants are folded away
    n = 0
    for name, val in sorted(globals().items()):
        if not isinstance(val, int) or name[:2] not in ("A_", "FL", "F_", "RA", "OP", "SO", "R_", "NA",
                                                       "NR", "PI", "NI", "RS", "SA", "BL"):
            continue
        mod = validity if name[:2] in ("R_", "BL") else (sfloat if len(name) <= 4 else cgms)
        assert getattr(mod, name) == val, name
        n += 1
    assert n > 60, n
    assert validity.E_OK == cgms.E_OK and validity.E_CRC == cgms.E_CRC  # validity's private copies
    assert validity.A_MALFUNCTION == A_SENSOR_MALFUNCTION


def test_roundtrip_every_layout():
    rec = Reading()
    buf = bytearray(15)
    for fl in range(256):
        if fl & 0x1C:
            continue  # reserved flag bits
        st = 0
        if fl & FL_STATUS:
            st |= 0x21
        if fl & FL_CALTEMP:
            st |= 0x0800
        if fl & FL_WARNING:
            st |= 0x400000
        tr = 0xF002 if fl & FL_TREND else -1
        q = 0xF3E5 if fl & FL_QUALITY else -1
        for e2e in (False, True):
            n = cgms.encode_record(buf, 0, 0xF000 | 1234, 4321, st, tr, q, e2e)
            assert n == cgms.layout_size(fl) + (2 if e2e else 0) and buf[1] == fl
            assert cgms.parse_record(buf, rec, 0, n, e2e) == n
            assert rec.err == 0 and rec.glucose == 1234 and rec.time_offset == 4321
            assert rec.status == st and rec.flags == fl
            assert rec.trend == (2 if tr >= 0 else None) and rec.quality == (997 if q >= 0 else None)
            assert rec.crc == (-1 if not e2e else buf[n - 2] | buf[n - 1] << 8)
            assert cgms.parse_record(buf, rec, 0, n, cgms.E2E_AUTO) == n and rec.err == 0
    # zero octets can be forced present
    b = cgms.record(0x78, 1, 0, octets=FL_CALTEMP)
    assert b == bytes((7, FL_CALTEMP, 0x78, 0, 1, 0, 0))


def test_multi_record_notification():
    buf = REC_PLAIN + cgms.record(0x0079, 7) + cgms.record(0x007A, 8, A_CAL_REQUIRED)
    assert parse_all(buf) == [(0, 1200, 6, 0), (0, 1210, 7, 0), (0, 1220, 8, A_CAL_REQUIRED)]
    crcbuf = REC_FULL + cgms.record(0x0078, 6, e2e=True) + REC_BADCRC + cgms.record(0x0080, 9, e2e=True)
    got = parse_all(crcbuf, True)
    assert [g[0] for g in got] == [0, 0, cgms.E_CRC, 0]  # a CRC error does not stop the rest
    assert [g[2] for g in got] == [5, 6, 6, 9]
    # bounded by end: the tail is not parsed
    assert len(parse_all(buf)) == 3
    rec = Reading()
    out = []
    assert cgms.parse(buf, rec, lambda r: out.append(r.time_offset), False, 12) == 2 and out == [6, 7]


def test_bad_sizes_rejected_without_exceptions():
    rec = Reading()
    assert parse_all(b"") == [(cgms.E_SIZE, None, 0, 0)]
    for size in (0, 1, 5):
        b = bytes((size, 0, 0x78, 0, 1, 0))
        assert cgms.parse_record(b, rec) == -1 and rec.err == cgms.E_SIZE
    # Size running past the buffer
    assert cgms.parse_record(bytes((7, 0, 0x78, 0, 1, 0)), rec) == -1 and rec.err == cgms.E_SIZE
    assert cgms.parse_record(bytes((255,)) + bytes(20), rec) == -1 and rec.err == cgms.E_SIZE
    # Size inconsistent with the flags (oversized and undersized)
    assert cgms.parse_record(bytes((7, 0, 0x78, 0, 1, 0, 0)), rec) == -1 and rec.err == cgms.E_LAYOUT
    assert cgms.parse_record(bytes((6, FL_TREND, 0x78, 0, 1, 0, 0, 0)), rec) == -1
    assert rec.err == cgms.E_LAYOUT
    # CRC expected but absent, or present but not expected
    assert cgms.parse_record(REC_PLAIN, rec, 0, -1, True) == -1 and rec.err == cgms.E_LAYOUT
    assert cgms.parse_record(REC_BADCRC, rec, 0, -1, False) == -1 and rec.err == cgms.E_LAYOUT
    # every truncation of a valid record (alone and after a good one)
    for cut in range(len(REC_FULL)):
        got = parse_all(REC_FULL[:cut], True)
        assert len(got) == 1 and got[0][0] == cgms.E_SIZE
        got = parse_all(REC_PLAIN + REC_FULL[:cut])
        assert got[0][0] == 0 and got[-1][0] in (0, cgms.E_SIZE, cgms.E_LAYOUT)
        if cut:
            assert len(got) == 2 and got[1][0] != 0
    # a framing error ends the notification; the valid record before it still arrives
    got = parse_all(REC_PLAIN + bytes((3, 0, 0)) + REC_PLAIN)
    assert [g[0] for g in got] == [0, cgms.E_SIZE]


def test_parse_does_not_allocate():
    try:
        import gc
        gc.mem_alloc  # MicroPython only
    except (ImportError, AttributeError):
        return
    rec = Reading()
    v = Validator()
    v.set_session(0)
    buf = REC_FULL + cgms.record(0x0078, 6, e2e=True) + REC_BADCRC

    def cb(r):
        v.check(r, 360)

    st = rx.state()
    rx.reset(st, 0)
    seen = [0]

    def pump_cb(s, why):
        seen[0] += 1 + why

    cgms.parse(buf, rec, cb, True)  # warm up
    rx.parse(buf, st, pump_cb, True, 360)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(10):
        cgms.parse(buf, rec, cb, True)
        rx.parse(buf, st, pump_cb, True, 360)
        rx.parse(buf, st, None, True, 360)
        off = 0
        while off >= 0 and off < len(buf):
            off = rx.record(buf, off, -1, True, st)
            rx.check(st, st[S_ERR], st[S_GLUCOSE], st[S_TIME_OFFSET], st[S_STATUS], 360)
    used = gc.mem_alloc() - a
    gc.enable()
    assert used == 0, used
    assert seen[0] > 30


# ---- Feature, RACP, SOCP ------------------------------------------------------------------
def test_feature_roundtrip():
    f = cgms.F_E2E_CRC | F_TREND | F_QUALITY | F_CALIBRATION
    b = cgms.encode_feature(f)
    assert len(b) == 6 and b[3] == 0x59 and (b[4] | b[5] << 8) == crc16(b, 0, 4)
    assert cgms.parse_feature(b) == (f, 9, 5)
    bad = bytearray(b)
    bad[4] ^= 1
    raises(ValueError, cgms.parse_feature, bad)
    nocrc = cgms.encode_feature(F_TREND, 9, 5)
    assert nocrc[4:] == b"\xff\xff" and cgms.parse_feature(nocrc) == (F_TREND, 9, 5)
    raises(ValueError, cgms.parse_feature, b"\x00\x10\x00")


def test_racp():
    assert cgms.racp_request(RACP_REPORT) == b"\x01\x01"
    assert cgms.racp_request(RACP_REPORT, OPR_LAST) == b"\x01\x06"
    assert cgms.racp_request(RACP_REPORT, OPR_FIRST) == b"\x01\x05"
    assert cgms.racp_request(RACP_REPORT, OPR_GE, 0x1234) == b"\x01\x03\x01\x34\x12"
    assert cgms.racp_request(RACP_DELETE, OPR_LE, 5) == b"\x02\x02\x01\x05\x00"
    assert cgms.racp_request(RACP_REPORT_NUM, OPR_RANGE, 10, 300) == b"\x04\x04\x01\x0a\x00\x2c\x01"
    assert cgms.racp_request(RACP_ABORT) == b"\x03\x00"
    assert cgms.racp_response(b"\x05\x00\x2c\x01") == (RACP_NUM_RSP, 300, 0)
    assert cgms.racp_response(b"\x06\x00\x01\x06") == (RACP_RSP, RACP_REPORT, RACP_NO_RECORDS)
    for bad in (b"", b"\x05\x00\x01", b"\x07\x00\x01\x01", b"\x06\x01\x01\x01"):
        raises(ValueError, cgms.racp_response, bad)


def test_socp():
    assert cgms.socp_request(SOCP_START_SESSION) == b"\x1a"
    b = cgms.socp_request(SOCP_INTERVAL, b"\x05", True)
    assert b[:2] == b"\x01\x05" and (b[2] | b[3] << 8) == crc16(b, 0, 2)
    assert cgms.socp_request(SOCP_HYPO, b"\x46\x00") == b"\x0d\x46\x00"
    rsp = cgms.socp_request(SOCP_RSP, bytes((SOCP_STOP_SESSION, SOCP_SUCCESS)), True)
    assert cgms.socp_response(rsp, True) == (SOCP_RSP, SOCP_STOP_SESSION, SOCP_SUCCESS)
    bad = bytearray(rsp)
    bad[1] ^= 0xFF
    raises(ValueError, cgms.socp_response, bad, True)
    assert cgms.socp_response(b"\x03\x05") == (SOCP_INTERVAL + 2, 5, 0)
    assert cgms.socp_response(b"\x0f\x46\x00") == (SOCP_HYPO + 2, 0x46, 0)
    raises(ValueError, cgms.socp_response, b"")
    raises(ValueError, cgms.socp_response, b"\x1c\x01", False)


# ---- validity -----------------------------------------------------------------------------
def _rec(mgdl_raw, offset, status=0, err=0):
    r = Reading()
    cgms.parse_record(cgms.record(mgdl_raw, offset, status), r)
    r.err = err or r.err
    return r


def test_validator_value_rules():
    v = Validator()
    v.set_session(0)
    now = 100 * 60
    cases = ((NAN, R_SPECIAL), (NRES, R_SPECIAL), (PINF, R_SPECIAL),
             (NINF, R_SPECIAL), (RSVD, R_SPECIAL),
             (sfloat.from_int(10), R_ERROR_CODE), (sfloat.from_int(5), R_ERROR_CODE),
             (sfloat.from_int(-40), R_ERROR_CODE), (sfloat.from_int(38), R_ERROR_CODE),
             (sfloat.encode(380, -1), R_ERROR_CODE), (sfloat.from_int(11), R_RANGE),
             (sfloat.from_int(39), R_RANGE), (sfloat.from_tenths(399), R_RANGE),
             (sfloat.from_int(401), R_RANGE),
             (0x77FD, R_RANGE))
    for raw, why in cases:
        assert v.check(_rec(raw, 100), now) == why, (hex(raw), v.classify(_rec(raw, 100), now))
    assert v.counts[R_OK] == 0
    ok = 0
    for i, raw in enumerate((sfloat.from_int(40), sfloat.from_int(400), sfloat.encode(1234, -1))):
        assert v.check(_rec(raw, 100 + i), now) == R_OK
        ok += 1
    assert v.counts[R_OK] == ok and v.counts[R_SPECIAL] == 5 and v.counts[R_ERROR_CODE] == 5
    assert v.counts[R_RANGE] == 5


def test_validator_annunciations():
    v = Validator()
    v.set_session(0)
    g = sfloat.from_int(120)
    now = 60 * 50
    assert v.check(_rec(g, 50, A_SESSION_STOPPED | A_CAL_REQUIRED), now) == R_SESSION_STOPPED
    assert v.check(_rec(g, 50, A_SENSOR_MALFUNCTION), now) == R_MALFUNCTION
    assert v.check(_rec(g, 50, A_CAL_REQUIRED), now) == R_CAL_REQUIRED
    for a in (A_WRONG_SENSOR_TYPE, A_GENERAL_DEVICE_FAULT, A_TEMP_TOO_HIGH,
              A_TEMP_TOO_LOW, A_BELOW_DEVICE_RANGE, A_ABOVE_DEVICE_RANGE):
        assert v.check(_rec(g, 50, a), now) == R_ANNUNC
    # advisory annunciations do not block
    adv = (A_BATTERY_LOW | A_DEVICE_SPECIFIC_ALERT | A_TIME_SYNC_REQUIRED
           | A_CAL_NOT_ALLOWED | A_CAL_RECOMMENDED | A_BELOW_PATIENT_LOW
           | A_ABOVE_PATIENT_HIGH | A_BELOW_HYPO | A_ABOVE_HYPER
           | A_RATE_DECREASE_EXCEEDED | A_RATE_INCREASE_EXCEEDED)
    assert v.check(_rec(g, 50, adv), now) == R_OK
    # the full reference record (12.34 mg/dL) is out of range
    rec = Reading()
    cgms.parse_record(REC_FULL, rec, 0, -1, True)
    assert v.check(rec, 5 * 60) == R_RANGE
    assert v.counts[R_ANNUNC] == 6 and v.counts[R_OK] == 1


def test_validator_time_rules():
    g = sfloat.from_int(120)
    v = Validator()
    assert v.check(_rec(g, 10), 600) == R_NO_SESSION
    v.set_session(1000)  # offset 0 is pump time 1000 s
    t10 = 1000 + 600
    assert v.check(_rec(g, 10), t10 + 12 * 60 + 1) == R_STALE
    assert v.check(_rec(g, 10), t10 - 5 * 60 - 1) == R_FUTURE
    assert v.check(_rec(g, 10), t10 + 12 * 60) == R_OK  # exactly 12 min old is still fresh
    assert v.check(_rec(g, 10), t10) == R_DUPLICATE
    assert v.check(_rec(g, 9), t10) == R_NOT_MONOTONIC
    assert v.check(_rec(g, 20), t10 + 600 - 300) == R_OK  # exactly 5 min ahead is accepted
    assert v.check(_rec(g, 10), t10 + 600) == R_DUPLICATE
    assert v.check(_rec(g, 15), t10 + 600) == R_NOT_MONOTONIC
    assert v.check(_rec(g, 21), t10 + 660) == R_OK
    assert v.last == 21
    # rejected readings do not move the history
    assert v.check(_rec(NAN, 30), t10 + 1200) == R_SPECIAL and v.last == 21
    # a new session restarts offsets
    v.set_session(t10 + 2000)
    assert v.check(_rec(g, 0), t10 + 2000) == R_OK
    c = v.counts
    assert c[R_OK] == 4 and c[R_DUPLICATE] == 2 and c[R_NOT_MONOTONIC] == 2
    assert c[R_STALE] == 1 and c[R_FUTURE] == 1 and c[R_NO_SESSION] == 1
    assert sum(c) == 12
    v.reset_counts()
    assert sum(v.counts) == 0


def test_validator_malformed_and_crc():
    v = Validator()
    v.set_session(0)
    rec = Reading()
    cgms.parse_record(bytes((5, 0, 0, 0, 0)), rec)
    assert v.check(rec, 0) == R_MALFORMED
    cgms.parse_record(bytes((7, 0, 0x78, 0, 1, 0, 0)), rec)
    assert v.check(rec, 0) == R_MALFORMED
    cgms.parse_record(REC_BADCRC, rec, 0, -1, True)
    assert v.check(rec, 360) == R_CRC
    assert v.counts[R_MALFORMED] == 2 and v.counts[R_CRC] == 1


# ---- the pump's path: basalt.cgm.rx (records + validity) and basalt.cgm.conn (Feature, RACP) ----
def test_rx_state_layout():
    from array import array

    s = rx.state()
    # a plain array: keeping it keeps no class (and so no module) of the codec alive
    assert type(s) is array and len(s) == S_N
    assert s[S_ERR] == cgms.E_SIZE and s[S_GLUCOSE] == NONE and s[S_GLUCOSE_RAW] == -1
    assert s[S_TREND] == NONE and s[S_QUALITY] == NONE and s[S_CRC] == -1
    assert s[S_SESSION] == NONE and s[S_LAST] == -1 and s[S_RI] == 0
    assert (s[S_LO], s[S_HI], s[S_MAX_AGE], s[S_MAX_AHEAD], s[S_BLOCK]) == (400, 4000, 720, 300, BLOCK_DEFAULT)
    assert list(s[S_RING:S_COUNTS]) == [-1] * 8 and list(s[S_COUNTS:S_N]) == [0] * 15
    assert rx.check(s, 0, 1200, 10, 0, 600) == R_NO_SESSION and s[S_COUNTS + R_NO_SESSION] == 1
    rx.reset(s, 0)
    assert s[S_SESSION] == 0
    rx.reset(s)
    assert s[S_SESSION] == NONE


def test_rx_record_slots():
    s = rx.state()
    assert rx.record(REC_FULL, 0, -1, True, s) == 15
    assert list(s[:S_SESSION]) == [0, 0, 15, 0xE3, 0xE4D2, 123, 5, 0xFF1402, 0xF002, 2, 0xF3E5, 997, 0x3F8E]
    assert rx.record(REC_PLAIN, 0, -1, False, s) == 6
    assert list(s[:S_SESSION]) == [0, 0, 6, 0, 0x100C, 1200, 6, 0, -1, NONE, -1, NONE, -1]
    assert rx.record(REC_BADCRC, 0, -1, True, s) == 8 and s[S_ERR] == cgms.E_CRC and s[S_GLUCOSE] == 1200
    assert rx.record(REC_BADCRC, 0, -1, E2E_AUTO, s) == 8 and s[S_ERR] == cgms.E_CRC
    assert rx.record(REC_PLAIN, 0, -1, True, s) == -1 and s[S_ERR] == cgms.E_LAYOUT
    assert rx.record(REC_PLAIN, 0, 5, False, s) == -1 and s[S_ERR] == cgms.E_SIZE
    # the second of two records, and specials: no value, not a number
    two = REC_PLAIN + cgms.record(NAN, 7, 0, PINF, 0xF3E5)
    assert rx.record(two, 6, -1, False, s) == len(two)
    assert (s[S_START], s[S_GLUCOSE_RAW], s[S_GLUCOSE], s[S_TREND_RAW], s[S_TREND], s[S_QUALITY]) == \
        (6, NAN, NONE, PINF, NONE, 997)
    for raw, tenths in SFLOAT_VECTORS:
        assert rx.scaled(raw) == tenths and sfloat.scaled is rx.scaled
    assert rx.scaled(0x100C, 0) == 120 and rx.scaled(NAN) is None


def test_rx_parse_and_check():
    s = rx.state()
    rx.reset(s, 1000)  # time offset 0 is pump time 1000 s
    g = sfloat.from_int(120)
    got = []

    def cb(st, why):
        got.append((st[S_TIME_OFFSET], st[S_GLUCOSE], why))

    buf = (cgms.record(g, 10, e2e=True) + cgms.record(g, 10, e2e=True) + cgms.record(g, 9, e2e=True)
           + cgms.record(NAN, 11, e2e=True) + cgms.record(g, 12, A_CAL_REQUIRED, e2e=True)
           + REC_BADCRC + cgms.record(g, 13, e2e=True))
    now = 1000 + 13 * 60
    assert rx.parse(buf, s, cb, True, now) == 2
    assert got == [(10, 1200, R_OK), (10, 1200, R_DUPLICATE), (9, 1200, R_NOT_MONOTONIC),
                   (11, NONE, R_SPECIAL), (12, 1200, R_CAL_REQUIRED), (6, 1200, R_CRC), (13, 1200, R_OK)]
    assert s[S_LAST] == 13 and list(s[S_RING:S_RING + 3]) == [10, 13, -1] and s[S_RI] == 2
    c = s[S_COUNTS:S_N]
    assert (c[R_OK], c[R_DUPLICATE], c[R_NOT_MONOTONIC], c[R_SPECIAL], c[R_CAL_REQUIRED], c[R_CRC]) == (2, 1, 1, 1, 1, 1)
    # a framing error stops the notification; an empty one is one malformed record
    got.clear()
    assert rx.parse(REC_PLAIN + bytes((3, 0, 0)), s, cb, False, now) == 0
    assert [w for _o, _g, w in got] == [R_NOT_MONOTONIC, R_MALFORMED]
    got.clear()
    assert rx.parse(b"", s, cb, False, now) == 0 and [w for _o, _g, w in got] == [R_MALFORMED]
    n = sum(s[S_COUNTS:S_N])
    assert rx.parse(REC_PLAIN + REC_PLAIN, s, None, False, 1000 + 360, 6) == 0  # end bounds it: 1 record
    assert sum(s[S_COUNTS:S_N]) == n + 1
    # field arguments: None or the slot value for "no value"; the oref0 time window, both ends
    for v in (None, NONE):
        assert rx.check(s, 0, v, 20, 0, now) == R_SPECIAL
    t20 = 1000 + 20 * 60
    assert rx.check(s, 0, 1200, 20, 0, t20 + 721) == R_STALE
    assert rx.check(s, 0, 1200, 20, 0, t20 - 301) == R_FUTURE
    assert rx.check(s, 0, 1200, 20, 0, t20 - 300) == R_OK
    assert rx.check(s, 0, 1200, 21, 0, t20 + 780) == R_OK  # 21 min is exactly 12 min old here
    assert rx.check(s, 99, 1200, 30, 0, now) == R_MALFORMED
    assert rx.check(s, 0, 3800 // 10, 30, 0, now) == R_ERROR_CODE  # 38.0 mg/dL
    # a new session forgets the offsets, keeps the counts
    n = sum(s[S_COUNTS:S_N])
    rx.reset(s, 5000)
    assert rx.check(s, 0, 1200, 0, 0, 5000) == R_OK and sum(s[S_COUNTS:S_N]) == n + 1


def test_validator_is_rx():
    # the host's Validator is rx.check on its own state array
    v = Validator(lo=500, block=0)
    assert v.state[S_LO] == 500 and v.state[S_BLOCK] == 0 and v.session is None
    v.set_session(60)
    assert v.session == 60 and v.last == -1
    r = _rec(sfloat.from_int(45), 1)
    assert v.classify(r, 120) == R_RANGE and sum(v.counts) == 0  # classify counts nothing
    r = _rec(sfloat.from_int(50), 1, A_TEMP_TOO_HIGH)
    assert v.check(r, 120) == R_OK and v.last == 1 and v.counts[R_OK] == 1
    assert v.state[S_COUNTS + R_OK] == 1


def test_conn_feature_and_racp():
    f = cgms.F_E2E_CRC | F_TREND
    b = cgms.encode_feature(f)
    assert conn.feature(b) == f and conn.feature(cgms.encode_feature(F_TREND)) == F_TREND
    bad = bytearray(b)
    bad[5] ^= 0x40
    assert conn.feature(bad) == -1 and conn.feature(b[:5]) == -1 and conn.feature(b"") == -1
    assert cgms.racp_request is conn.racp_request and cgms.racp_response is conn.racp_response
    assert conn.racp_request(RACP_REPORT, OPR_GE, 300) == b"\x01\x03\x01\x2c\x01"
    assert conn.racp_response(b"\x06\x00\x01\x01") == (RACP_RSP, RACP_REPORT, 1)


# ---- fuzz: the pump's path against an oracle written here -------------------------------------
class _Rng:
    # xorshift32: the same sequence on MicroPython and CPython (tests/test_cgms_host.py reruns this)
    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x % n


def _ref_crc(b, n):
    crc = 0xFFFF  # CRC-16/MCRF4XX bit by bit, nothing shared with basalt.lib's table
    for i in range(n):
        crc ^= b[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _ref_glucose_ok(raw):
    # exact SFLOAT value within 40..400 mg/dL (which also rules out <= 10 and 38)
    m, e = raw & 0xFFF, raw >> 12
    if 0x7FE <= m <= 0x802:
        return False
    if m >= 0x800:
        m -= 0x1000
    if e >= 8:
        e -= 16
    if e >= 0:
        return 40 <= m * 10 ** e <= 400
    d = 10 ** -e
    return 40 * d <= m <= 400 * d


_SPECIALS = (NAN, NRES, PINF, NINF, RSVD)
_BLOCKING = A_SESSION_STOPPED | A_SENSOR_MALFUNCTION | A_CAL_REQUIRED | BLOCK_DEFAULT


def _fuzz_sfloat(rng):
    k = rng.below(100)
    if k < 15:
        return _SPECIALS[rng.below(5)] | (rng.below(16) << 12 if k < 5 else 0)
    if k < 55:
        return sfloat.from_tenths(rng.below(5000))  # mostly plausible glucose
    if k < 65:
        return sfloat.from_int((10, 38, 39, 40, 400, 401, 11, 0, 5)[rng.below(9)])
    return rng.below(0x10000)


def _fuzz_packet(rng, crc):
    # (packet, mutated?) : 1-3 encoded records (repeats and reversals of the time offset too),
    # then often mutated; or plain random bytes
    if rng.below(10) < 2:
        return bytes(rng.below(256) for _ in range(rng.below(48))), True
    with_crc = crc if crc != E2E_AUTO else rng.below(2) == 1
    to = rng.below(0x10000) if rng.below(10) == 0 else rng.below(2000)
    pkt = b""
    for _ in range(1 + rng.below(3)):
        st = 0
        for octet in range(3):
            if rng.below(10) < 3:
                st |= (rng.below(256) if rng.below(2) else 1 << rng.below(8)) << (8 * octet)
        pkt += cgms.record(_fuzz_sfloat(rng), to, st, _fuzz_sfloat(rng) if rng.below(2) else -1,
                           _fuzz_sfloat(rng) if rng.below(2) else -1, with_crc,
                           (0, 0, 0, FL_WARNING, FL_CALTEMP, FL_STATUS, 0xE0)[rng.below(7)])
        to = (to + (-1, 0, 1, 1, 5, 5)[rng.below(6)]) & 0xFFFF
    if rng.below(10) < 4:
        return pkt, False
    b = bytearray(pkt)
    for _ in range(1 + rng.below(3)):
        k = rng.below(6)
        if k == 0 and b:
            b[rng.below(len(b))] ^= 1 << rng.below(8)
        elif k == 1 and b:
            b[rng.below(len(b))] = rng.below(256)
        elif k == 2 and b:
            b = b[:rng.below(len(b))]
        elif k == 3:
            b += bytes(rng.below(256) for _ in range(1 + rng.below(5)))
        elif k == 4 and b:
            b[0] = (0, 1, 5, 6, 7, 8, 15, 16, 255, len(b) & 0xFF)[rng.below(10)]
        elif k == 5 and len(b) > 1:
            b[1] = rng.below(256)
    return bytes(b), True


def test_fuzz_pump_path():
    # Tens of thousands of random and mutated notifications through rx.parse, as the pump runs
    # it: no exception escapes, and every accepted record is checked here against the bytes.
    rng = _Rng(0xBA5A17)
    s = rx.state()
    outcome = [0] * 15
    ctx = [b"", 0, 0, -1]  # packet, crc mode, now, last accepted offset

    def cb(st, why):
        outcome[why] += 1
        if why:
            return
        pkt, crc, now = ctx[0], ctx[1], ctx[2]
        start, size = st[S_START], st[S_SIZE]
        assert st[S_ERR] == 0 and 6 <= size and start + size <= len(pkt)
        b = pkt[start:start + size]
        fl = b[1]
        need = 6 + (fl >> 7) + ((fl >> 6) & 1) + ((fl >> 5) & 1) + 2 * (fl & 1) + (fl & 2)
        assert size == need or size == need + 2, b
        has_crc = size == need + 2
        assert has_crc == bool(crc) if crc != E2E_AUTO else True, b
        if has_crc:
            assert _ref_crc(b, size - 2) == b[size - 2] | b[size - 1] << 8, b
        assert _ref_glucose_ok(b[2] | b[3] << 8), b
        status, p = 0, 6
        for f, shift in ((FL_STATUS, 0), (FL_CALTEMP, 8), (FL_WARNING, 16)):
            if fl & f:
                status |= b[p] << shift
                p += 1
        assert not status & _BLOCKING, b
        to = b[4] | b[5] << 8
        assert to == st[S_TIME_OFFSET] and -300 <= now - 60 * to <= 720, b
        assert to > ctx[3], b  # neither a duplicate nor going back
        ctx[3] = to

    n = accepted = 0
    for i in range(20000):
        crc = (False, True, E2E_AUTO)[i % 3]
        pkt, _mutated = _fuzz_packet(rng, crc)
        now = 60 * (pkt[4] | pkt[5] << 8 if len(pkt) >= 6 else 0) + rng.below(1320) - 420
        rx.reset(s, None if i % 97 == 0 else 0)
        ctx[0], ctx[1], ctx[2], ctx[3] = pkt, crc, now, -1
        accepted += rx.parse(pkt, s, cb, crc, now)
        if i % 10 == 0:  # the same notification again: nothing in it is new
            assert rx.parse(pkt, s, cb, crc, now) == 0
        n += 1
        # the connection-time parsers never raise on junk either (racp_response: ValueError only)
        if i % 5 == 0:
            conn.feature(pkt[:8])
            try:
                conn.racp_response(pkt[:4])
            except ValueError:
                pass
    assert accepted == outcome[0] and sum(s[S_COUNTS:S_N]) == sum(outcome)
    assert list(s[S_COUNTS:S_N]) == outcome
    for why in range(15):
        assert outcome[why] > 0, (why, outcome)  # every rule fired
    assert accepted > 1000 and outcome[R_CRC] > 500, outcome
