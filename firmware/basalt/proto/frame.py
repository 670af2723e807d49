# Console frames: one line each, readable on a serial terminal, checked by CRC.
#
#   $<json>*<CRC>\n      CRC = CRC-16/MCRF4XX of the JSON bytes, 4 uppercase hex digits
#
# Requests {"id": 1..65535, "cmd": "...", "args": {...}}; replies {"id", "ok", "data"|"err","msg"};
# events {"ev", "seq", "t", "data"}. docs/protocol.md is the full description.
from ..core.errors import Refused as FrameError  # same shape (code, msg); one class less in RAM
from ..lib.crc16 import crc16

MAX_FRAME = 768  # bytes including '$', '*', CRC and newline; longer lines are refused (48 segments: ~590)
HEX = b"0123456789ABCDEF"


def encode(body):
    """bytes body -> full frame, built in one allocation."""
    n = len(body)
    f = bytearray(n + 7)
    f[0] = 36  # '$'
    f[1:n + 1] = body
    f[n + 1] = 42  # '*'
    c = crc16(body)
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
        raise FrameError("frame", "a frame is $<json>*<crc16 hex>")
    if line[n - 5] != 42:  # '*'
        raise FrameError("frame", "missing *CRC at the end of the frame")
    got = 0
    for i in range(n - 4, n):
        # uppercase only: one spelling per CRC, so a flipped case bit is noise, not the same frame
        d = HEX.find(bytes((line[i],)))
        if d < 0:
            raise FrameError("frame", "CRC is not 4 uppercase hex digits")
        got = (got << 4) | d
    want = crc16(line, 1, n - 5)
    if got != want:
        raise FrameError("crc", "CRC mismatch")
    return 1, n - 5, want
