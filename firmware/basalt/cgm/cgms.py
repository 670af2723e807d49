# Bluetooth CGM Service (0x181F) codec, the full set: CGM Measurement records (0x2AA7), CGM Feature
# (0x2AA8), RACP (0x2A52) and SOCP (0x2AAC), decode and encode, every CGMS constant. For the host
# tools, the simulated sensor and the CGM emulator (MicroPython and CPython). The pump does not
# load it: it decodes with basalt.cgm.rx (records, validity) and basalt.cgm.conn (Feature, RACP),
# which this module builds on, so both sides run the same parser. docs/cgms.md has the layouts.
#
# parse_record / parse: no slicing, no per-record allocation - the caller owns one Reading and it
# is refilled for each record. Values are integers: glucose, trend and quality in tenths of their
# unit (rx.scaled), None when the SFLOAT is a special value.
#
# Named constants: _NAME const()s are folded away by MicroPython (no RAM); under CPython each is
# also readable as NAME (cgms.A_SENSOR_MALFUNCTION, cgms.RACP_REPORT ...). Other firmware modules
# copy the few values they need as their own _const()s (docs/cgms.md lists them all). Public on
# both: E_OK, E_SIZE, E_LAYOUT, E_CRC, E2E_AUTO, F_E2E_CRC.
try:
    from micropython import const
except ImportError:  # CPython: const() is a no-op, and every _NAME constant is also readable as NAME
    from basalt.lib.cpython import const, exports

    __getattr__ = exports(globals())

from array import array

from basalt.cgm.conn import feature as _feature
from basalt.cgm.conn import racp_request, racp_response  # noqa: F401 - part of this module's API
from basalt.cgm.rx import record as record_slots
from basalt.lib import crc16

_NONE = const(-0x40000000)  # = rx's "no value" slot value
_NF = const(13)  # record slots

_UUID_SERVICE = const(0x181F)
_UUID_MEASUREMENT = const(0x2AA7)
_UUID_FEATURE = const(0x2AA8)
_UUID_STATUS = const(0x2AA9)
_UUID_SESSION_START = const(0x2AAA)
_UUID_SESSION_RUN = const(0x2AAB)
_UUID_RACP = const(0x2A52)
_UUID_SOCP = const(0x2AAC)

# Measurement flags
_FL_TREND = const(0x01)
_FL_QUALITY = const(0x02)
_FL_WARNING = const(0x20)  # Warning octet present
_FL_CALTEMP = const(0x40)  # Cal/Temp octet present
_FL_STATUS = const(0x80)  # Status octet present

# Sensor Status Annunciation, 24 bits: Status octet = bits 0-7, Cal/Temp = 8-15, Warning = 16-23
_A_SESSION_STOPPED = const(1 << 0)
_A_BATTERY_LOW = const(1 << 1)
_A_WRONG_SENSOR_TYPE = const(1 << 2)
_A_SENSOR_MALFUNCTION = const(1 << 3)
_A_DEVICE_SPECIFIC_ALERT = const(1 << 4)
_A_GENERAL_DEVICE_FAULT = const(1 << 5)
_A_TIME_SYNC_REQUIRED = const(1 << 8)
_A_CAL_NOT_ALLOWED = const(1 << 9)
_A_CAL_RECOMMENDED = const(1 << 10)
_A_CAL_REQUIRED = const(1 << 11)
_A_TEMP_TOO_HIGH = const(1 << 12)
_A_TEMP_TOO_LOW = const(1 << 13)
_A_BELOW_PATIENT_LOW = const(1 << 16)
_A_ABOVE_PATIENT_HIGH = const(1 << 17)
_A_BELOW_HYPO = const(1 << 18)
_A_ABOVE_HYPER = const(1 << 19)
_A_RATE_DECREASE_EXCEEDED = const(1 << 20)
_A_RATE_INCREASE_EXCEEDED = const(1 << 21)
_A_BELOW_DEVICE_RANGE = const(1 << 22)
_A_ABOVE_DEVICE_RANGE = const(1 << 23)

# CGM Feature bits (24-bit field)
_F_CALIBRATION = const(1 << 0)
_F_PATIENT_HIGH_LOW_ALERTS = const(1 << 1)
_F_HYPO_ALERTS = const(1 << 2)
_F_HYPER_ALERTS = const(1 << 3)
_F_RATE_ALERTS = const(1 << 4)
_F_DEVICE_SPECIFIC_ALERT = const(1 << 5)
_F_MALFUNCTION_DETECTION = const(1 << 6)
_F_TEMP_DETECTION = const(1 << 7)
_F_RESULT_HIGH_LOW_DETECTION = const(1 << 8)
_F_LOW_BATTERY_DETECTION = const(1 << 9)
_F_SENSOR_TYPE_ERROR_DETECTION = const(1 << 10)
_F_GENERAL_DEVICE_FAULT = const(1 << 11)
F_E2E_CRC = const(1 << 12)
_F_MULTIPLE_BOND = const(1 << 13)
_F_MULTIPLE_SESSIONS = const(1 << 14)
_F_TREND = const(1 << 15)
_F_QUALITY = const(1 << 16)
_TYPE_ISF = const(9)  # interstitial fluid
_LOC_SUBCUTANEOUS = const(5)

# Record errors (Reading.err)
E_OK = const(0)
E_SIZE = const(1)  # Size < 6, or the record runs past the buffer (parsing stops)
E_LAYOUT = const(2)  # Size disagrees with the flags / E2E-CRC presence (parsing stops)
E_CRC = const(3)  # E2E-CRC mismatch (fields decoded for diagnosis; parsing continues)

# RACP op codes, operators, filter type, response codes
_RACP_REPORT = const(1)
_RACP_DELETE = const(2)
_RACP_ABORT = const(3)
_RACP_REPORT_NUM = const(4)
_RACP_NUM_RSP = const(5)
_RACP_RSP = const(6)
_OPR_NULL = const(0)
_OPR_ALL = const(1)
_OPR_LE = const(2)
_OPR_GE = const(3)
_OPR_RANGE = const(4)
_OPR_FIRST = const(5)
_OPR_LAST = const(6)
_FILTER_TIME_OFFSET = const(1)
_RACP_SUCCESS = const(1)
_RACP_OPCODE_NOT_SUPPORTED = const(2)
_RACP_INVALID_OPERATOR = const(3)
_RACP_OPERATOR_NOT_SUPPORTED = const(4)
_RACP_INVALID_OPERAND = const(5)
_RACP_NO_RECORDS = const(6)
_RACP_ABORT_FAILED = const(7)
_RACP_NOT_COMPLETED = const(8)
_RACP_OPERAND_NOT_SUPPORTED = const(9)

# SOCP op codes: for each base, set = base, get = base + 1, response = base + 2
_SOCP_INTERVAL = const(1)
_SOCP_CALIBRATION = const(4)
_SOCP_PATIENT_HIGH = const(7)
_SOCP_PATIENT_LOW = const(10)
_SOCP_HYPO = const(13)
_SOCP_HYPER = const(16)
_SOCP_RATE_DECREASE = const(19)
_SOCP_RATE_INCREASE = const(22)
_SOCP_RESET_ALERT = const(25)
_SOCP_START_SESSION = const(26)
_SOCP_STOP_SESSION = const(27)
_SOCP_RSP = const(28)
_SOCP_SUCCESS = const(1)
_SOCP_OPCODE_NOT_SUPPORTED = const(2)
_SOCP_INVALID_OPERAND = const(3)
_SOCP_NOT_COMPLETED = const(4)
_SOCP_OUT_OF_RANGE = const(5)

E2E_AUTO = const(2)  # e2e argument: CRC checked when the Size says one is present


class Reading:
    # One parsed record as attributes (host tools, the simulator, tests); preallocate one and let
    # parse_record refill it. *_raw are the SFLOAT words (-1 when the field is absent);
    # glucose/trend/quality are tenths (None if absent or a special value); status is the 24-bit
    # annunciation (0 when no octet is present). The pump does not use it: rx.record() fills the
    # slots of a caller-owned array instead (a class instance would keep this module loaded).
    def __init__(self):
        self.slots = array("i", (0,) * _NF)  # rx.record()'s output, copied into the attributes
        self.clear()

    def clear(self):
        record_slots(b"", 0, 0, False, self.slots)  # an empty buffer: every slot at "absent"
        self.slots[0] = E_OK
        self._load()

    def _load(self):
        a = self.slots
        self.err = a[0]
        self.start = a[1]  # offset of the record in the notification
        self.size = a[2]
        self.flags = a[3]
        self.glucose_raw = a[4]
        self.glucose = None if a[5] == _NONE else a[5]
        self.time_offset = a[6]
        self.status = a[7]
        self.trend_raw = a[8]
        self.trend = None if a[9] == _NONE else a[9]
        self.quality_raw = a[10]
        self.quality = None if a[11] == _NONE else a[11]
        self.crc = a[12]  # received E2E-CRC, -1 if none


def layout_size(flags):
    # record Size implied by the flags, without the E2E-CRC
    return (6 + ((flags & _FL_TREND) << 1) + (flags & _FL_QUALITY)
            + ((flags >> 7) & 1) + ((flags >> 6) & 1) + ((flags >> 5) & 1))


def parse_record(buf, rec, off=0, end=-1, e2e=False):
    # Parse the record at buf[off:] (up to end, -1 = len(buf)) into rec, by rx.record (the
    # pump's parser). e2e: True when the sensor's CGM Feature has E2E-CRC (every record must then
    # include 2 CRC bytes), False when not, E2E_AUTO to accept either and check a CRC if present.
    # Returns the next record's offset, or -1 when framing is lost (rec.err says why).
    off = record_slots(buf, off, end, e2e, rec.slots)
    rec._load()
    return off


def parse(buf, rec, cb, e2e=False, end=-1):
    # Every record of one notification: fill rec and call cb(rec) for each, errors included (an
    # empty or unframeable notification gives one call with rec.err set). Returns the number of
    # records handed to cb. Stops at the first framing error; a CRC error does not stop it.
    if end < 0:
        end = len(buf)
    off = 0
    n = 0
    while True:
        off = parse_record(buf, rec, off, end, e2e)
        cb(rec)
        n += 1
        if off < 0 or off >= end:
            return n


def encode_record(buf, off, glucose_raw, time_offset, status=0, trend_raw=-1, quality_raw=-1,
                  e2e=False, octets=0):
    # Write one record into buf at off; returns the offset after it (at most 15 bytes written).
    # Annunciation octets are sent when non-zero, or always for the FL_* bits given in octets.
    fl = octets & (_FL_STATUS | _FL_CALTEMP | _FL_WARNING)
    if status & 0xFF:
        fl |= _FL_STATUS
    if status & 0xFF00:
        fl |= _FL_CALTEMP
    if status & 0xFF0000:
        fl |= _FL_WARNING
    if trend_raw >= 0:
        fl |= _FL_TREND
    if quality_raw >= 0:
        fl |= _FL_QUALITY
    size = layout_size(fl) + (2 if e2e else 0)
    buf[off] = size
    buf[off + 1] = fl
    buf[off + 2] = glucose_raw & 0xFF
    buf[off + 3] = (glucose_raw >> 8) & 0xFF
    buf[off + 4] = time_offset & 0xFF
    buf[off + 5] = (time_offset >> 8) & 0xFF
    p = off + 6
    if fl & _FL_STATUS:
        buf[p] = status & 0xFF
        p += 1
    if fl & _FL_CALTEMP:
        buf[p] = (status >> 8) & 0xFF
        p += 1
    if fl & _FL_WARNING:
        buf[p] = (status >> 16) & 0xFF
        p += 1
    if fl & _FL_TREND:
        buf[p] = trend_raw & 0xFF
        buf[p + 1] = (trend_raw >> 8) & 0xFF
        p += 2
    if fl & _FL_QUALITY:
        buf[p] = quality_raw & 0xFF
        buf[p + 1] = (quality_raw >> 8) & 0xFF
        p += 2
    if e2e:
        c = crc16(buf, off, p)
        buf[p] = c & 0xFF
        buf[p + 1] = c >> 8
        p += 2
    return p


def record(glucose_raw, time_offset, status=0, trend_raw=-1, quality_raw=-1, e2e=False, octets=0):
    # encode_record into a new bytes object (host / emulator convenience; allocates)
    b = bytearray(15)
    n = encode_record(b, 0, glucose_raw, time_offset, status, trend_raw, quality_raw, e2e, octets)
    return bytes(b[:n])


def parse_feature(buf):
    # CGM Feature -> (features, type, sample_location), by conn.feature (the pump's parser).
    # ValueError if shorter than 6 bytes or, when E2E-CRC is supported, its CRC (over the first
    # 4 bytes) is wrong.
    f = _feature(buf)
    if f < 0:
        raise ValueError("feature")
    return f, buf[3] & 15, buf[3] >> 4


def encode_feature(features, typ=_TYPE_ISF, location=_LOC_SUBCUTANEOUS):
    b = bytearray(6)
    b[0] = features & 0xFF
    b[1] = (features >> 8) & 0xFF
    b[2] = (features >> 16) & 0xFF
    b[3] = (typ & 15) | ((location & 15) << 4)
    c = crc16(b, 0, 4) if features & F_E2E_CRC else 0xFFFF
    b[4] = c & 0xFF
    b[5] = c >> 8
    return bytes(b)


def socp_request(opcode, operand=b"", e2e=False):
    # SOCP write: op code, operand bytes, E2E-CRC (over all preceding bytes) when supported
    b = bytearray(1 + len(operand) + (2 if e2e else 0))
    b[0] = opcode
    for i in range(len(operand)):
        b[1 + i] = operand[i]
    if e2e:
        n = len(b) - 2
        c = crc16(b, 0, n)
        b[n] = c & 0xFF
        b[n + 1] = c >> 8
    return bytes(b)


def socp_response(buf, e2e=False):
    # SOCP indication -> (opcode, a, b): for _SOCP_RSP a = request op code, b = response code;
    # otherwise a = first operand byte(s) as a little-endian u16 (interval / SFLOAT level), b = 0.
    # ValueError on a short packet or a wrong E2E-CRC.
    n = len(buf)
    if e2e:
        n -= 2
        if n < 1 or crc16(buf, 0, n) != buf[n] | (buf[n + 1] << 8):
            raise ValueError("socp crc")
    if n < 1:
        raise ValueError("socp length")
    op = buf[0]
    if op == _SOCP_RSP:
        if n != 3:
            raise ValueError("socp length")
        return op, buf[1], buf[2]
    a = buf[1] if n > 1 else 0
    if n > 2:
        a |= buf[2] << 8
    return op, a, 0
