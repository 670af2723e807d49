# The event history: fixed-size binary records in a RAM ring, each with a sequence number and
# a CRC, in the layout the flash log will store (so persistence is a matter of writing them).
#   seq u32 | t u32 (uptime s) | type u8 | 0 u8 | a i32 | b i32 | crc u16   = 20 bytes, LE
import struct

from micropython import const

from ..lib.crc16 import crc16

REC = const(20)
RING = const(24)
FMT = "<IIBBii"

# record types; a and b carry the amounts actually delivered, in steps, where there are any
PROFILE_SELECT = const(1)  # a = profile index
PROFILE_SET = const(2)  # a = profile index, b = daily total (steps)
TEMP_START = const(3)  # a = percent (or -1), b = minutes
TEMP_END = const(4)  # a = basal steps delivered during it, b = 1 ended, 2 cancelled
BOLUS_REQUEST = const(5)  # a = normal steps, b = extended steps
BOLUS_DONE = const(6)  # a = delivered steps, b = kind (1 normal, 2 extended)
BOLUS_CANCEL = const(7)  # a = delivered steps, b = requested steps (b < 0: extended)
LIMIT_REFUSED = const(8)  # a = limit code (1 hour, 2 day, 3 bolus, 4 basal), b = amount asked in mU (mU/h for 4)
PRIME = const(9)  # a = steps primed, b = 1 tubing, 2 cannula
REWIND = const(10)  # a = steps retracted
SUSPEND = const(11)  # a = reason code
RESUME = const(12)
ALARM = const(13)  # a = alarm code
RESERVOIR = const(14)  # a = fill steps
TIME_SET = const(15)  # a = new local time (s since 2000), b = old
LIMIT_HOLD = const(16)  # a = steps withheld by the delivery backstop


class History:
    def __init__(self):
        self.buf = bytearray(REC * RING)
        self.seq = 0  # sequence number of the newest record (0: none)

    def add(self, t, kind, a=0, b=0):
        self.seq += 1
        off = (self.seq % RING) * REC
        struct.pack_into(FMT, self.buf, off, self.seq, t, kind, 0, a, b)
        struct.pack_into("<H", self.buf, off + 18, crc16(self.buf, off, off + 18))
        return self.seq
