# Frames: encoding (the host's) and checking (the pump's request checker, proto/req.py, and the
# host's reply reader). Not resident in the pump: proto/req.py loads it per line and drops it.
from basalt.core import Refused
from basalt.lib import crc16
from basalt.proto import HEX


def encode(data):
    """bytes body -> full frame, built in one allocation (the host's encoder; the pump's server
    writes frames straight into its output buffer)."""
    n = len(data)
    f = bytearray(n + 7)
    f[0] = 36  # '$'
    f[1:n + 1] = data
    f[n + 1] = 42  # '*'
    c = crc16(data)
    f[n + 2] = HEX[c >> 12]
    f[n + 3] = HEX[(c >> 8) & 15]
    f[n + 4] = HEX[(c >> 4) & 15]
    f[n + 5] = HEX[c & 15]
    f[n + 6] = 10  # '\n'
    return f


def check(line, n):
    """Validate line[0:n] (no newline). Return (body_start, body_end, crc)."""
    if n and line[n - 1] == 13:  # tolerate CRLF from terminals
        n -= 1
    if n < 7 or line[0] != 36:  # '$'
        raise Refused("frame", "a frame is $<json>*<crc16 hex>")
    if line[n - 5] != 42:  # '*'
        raise Refused("frame", "missing *CRC at the end of the frame")
    got = 0
    for i in range(n - 4, n):
        # uppercase only: one spelling per CRC, so a flipped case bit is noise, not the same frame
        d = HEX.find(line[i])
        if d < 0:
            raise Refused("frame", "CRC is not 4 uppercase hex digits")
        got = (got << 4) | d
    want = crc16(line, 1, n - 5)
    if got != want:
        raise Refused("crc", "CRC mismatch")
    return 1, n - 5, want
