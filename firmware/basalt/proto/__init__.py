# The console protocol's wire format, shared by the pump's server (proto/server.py) and the host
# (host/client.py, under CPython). The package module holds only the constants the resident
# server needs; encoding and checking frames is proto/frame.py, which the pump loads per request
# line (proto/req.py) and drops again. The command table is basalt/proto/req.py's.
# docs/protocol.md is the full description.
#
# Frames: one line each, readable on a serial terminal, checked by CRC.
#
#   $<json>*<CRC>\n      CRC = CRC-16/MCRF4XX of the JSON bytes, 4 uppercase hex digits
#
# Requests {"id": 1..65535, "cmd": "...", "args": {...}}; replies {"id", "ok", "data"|"err","msg"};
# events {"ev", "seq", "t", "data"}. A bad frame raises core.Refused (code, msg).
MAX_FRAME = 768  # bytes including '$', '*', CRC and newline; longer lines are refused (48 segments: ~590)
HEX = b"0123456789ABCDEF"
