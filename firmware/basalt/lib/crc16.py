# CRC-16/MCRF4XX: poly 0x1021 reflected (0x8408), init 0xFFFF, reflected in/out, no final XOR.
# The one CRC in Basalt: the console protocol frames and the CGMS E2E-CRC (Bluetooth CGMS spec).
# Not CRC-16/CCITT-FALSE, which also starts at 0xFFFF: "123456789" gives 0x6F91 here, 0x29B1 there.
# Pure Python for both MicroPython and CPython. A 16-entry nibble table: two lookups per byte,
# 4x faster than bit by bit, for 32 bytes rather than a 512-byte byte table.
from array import array


def _nibble_table():
    t = array("H", bytes(32))
    for i in range(16):
        c = i
        for _ in range(4):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        t[i] = c
    return t


_T = _nibble_table()


def crc16(data, start=0, end=-1, crc=0xFFFF):
    """CRC of data[start:end] (end=-1 means len(data)); pass crc to continue a running CRC."""
    if end < 0:
        end = len(data)
    t = _T
    for i in range(start, end):
        b = data[i]
        crc = (crc >> 4) ^ t[(crc ^ b) & 15]
        crc = (crc >> 4) ^ t[(crc ^ (b >> 4)) & 15]
    return crc
