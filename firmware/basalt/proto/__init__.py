# The console protocol's wire format, shared by the pump's server (proto/server.py) and the host
# (host/client.py, under CPython): frames. The command table is basalt/cmd/_req.py's. They live in the package
# itself, which is loaded anyway: modules of their own would cost a module object and three
# interned names each (docs/memory.md). docs/protocol.md is the full description.
#
# Frames: one line each, readable on a serial terminal, checked by CRC.
#
#   $<json>*<CRC>\n      CRC = CRC-16/MCRF4XX of the JSON bytes, 4 uppercase hex digits
#
# Requests {"id": 1..65535, "cmd": "...", "args": {...}}; replies {"id", "ok", "data"|"err","msg"};
# events {"ev", "seq", "t", "data"}. A bad frame raises core.Refused (code, msg).
from ..core import Refused
from ..lib import crc16

MAX_FRAME = 768  # bytes including '$', '*', CRC and newline; longer lines are refused (48 segments: ~590)
HEX = b"0123456789ABCDEF"

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
