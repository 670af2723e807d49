# CRC-16/MCRF4XX: poly 0x1021 reflected (0x8408), init 0xFFFF, reflected in/out, no final XOR.
# The one CRC in Basalt: the console protocol frames and the CGMS E2E-CRC (Bluetooth CGMS spec).
# Not CRC-16/CCITT-FALSE, which also starts at 0xFFFF: "123456789" gives 0x6F91 here, 0x29B1 there.
# Pure Python for both MicroPython and CPython. Bitwise rather than table-driven: the 512-byte
# table cost more heap than its speed is worth on frames of a few hundred bytes.


def crc16(data, start=0, end=-1, crc=0xFFFF):
    """CRC of data[start:end] (end=-1 means len(data)); pass crc to continue a running CRC."""
    if end < 0:
        end = len(data)
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc
