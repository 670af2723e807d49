# The CGM client's connection steps (basalt/cgm/client.py hands them every event but a
# notification or an indication): scan result and end, connect, discovery of the CGM service,
# its characteristics and their descriptors, the CGM Feature read, the CCCD writes - then the
# link is up. A module of its own so that the client's per-reading run (every 5 minutes) does
# not load this code: it is loaded only while connecting. docs/cgm_client.md has the states.
from micropython import const

from basalt.cgm.client import _backfill, down
from basalt.lib import crc16

_IDLE = const(0)  # link states (basalt/cgm/client.py)
_SCANNING = const(1)
_CONNECTING = const(2)
_DISCOVERING = const(3)
_UP = const(4)
_SEARCHING = const(5)
_FOUND = const(26)  # link.v: sensors found so far by cgm_scan (link.found holds them)
_STEP_S = const(20)  # a step that takes longer is given up (client.py)

# IRQ numbers (MicroPython's bluetooth module)
_SCAN_RESULT = const(5)
_SCAN_DONE = const(6)
_CONNECT = const(7)
_DISCONNECT = const(8)
_SERVICE_RESULT = const(9)
_SERVICE_DONE = const(10)
_CHAR_RESULT = const(11)
_CHAR_DONE = const(12)
_DESC_RESULT = const(13)
_DESC_DONE = const(14)
_READ_RESULT = const(15)
_READ_DONE = const(16)
_WRITE_DONE = const(17)

# link.v (core/cgm.py)
_STATE = const(0)
_CONN = const(1)
_DUE = const(2)
_RETRY_S = const(3)
_LAST = const(4)
_E2E = const(10)
_SVC_START = const(14)
_SVC_END = const(15)
_MEAS = const(16)  # measurement value handle ...
_MEAS_END = const(17)  # ... and its characteristic's last handle
_FEATURE = const(18)
_RACP = const(19)
_RACP_END = const(20)
_MEAS_CCCD = const(21)
_RACP_CCCD = const(22)
_TARGET = const(23)  # address type of the sensor being connected (scan result)
_FILL_END = const(25)

# UUID codes (core/cgm.py UUIDS, + 1)
_U_SERVICE = const(1)
_U_MEAS = const(2)
_U_FEATURE = const(3)
_U_RACP = const(4)
_U_CCCD = const(5)


def event(pump, link, now, ev, a, b, c, d, code, mv):
    """One connection event: scan, connect, discovery, the Feature read, the CCCD writes."""
    ble, h, st = link.ble, link.v, link.v[_STATE]
    if st == _SEARCHING:  # cgm_scan: every CGM sensor in range (core/cgm.py checked each one's advertising)
        if ev == _SCAN_RESULT and len(mv) == 6 and h[_FOUND] < 4:
            f, addr = link.found, bytes(mv)
            for j in range(h[_FOUND]):
                if f[7 * j + 1:7 * j + 7] == addr:
                    return  # seen already
            j = 7 * h[_FOUND]
            f[j] = a  # its address type
            f[j + 1:j + 7] = addr
            h[_FOUND] += 1
        elif ev == _SCAN_DONE:
            h[_STATE] = _IDLE
        return
    if ev == _SCAN_RESULT:  # only the paired sensor gets queued (core/cgm.py)
        if st == _SCANNING and h[_TARGET] == 0xFFFF:
            h[_TARGET] = a
            ble.gap_scan(None)  # stop now: SCAN_DONE follows
    elif ev == _SCAN_DONE:
        if st == _SCANNING:
            if h[_TARGET] != 0xFFFF:
                link.v[_STATE] = _CONNECTING
                link.v[_DUE] = now + _STEP_S
                ble.gap_connect(h[_TARGET], bytes(link.pair[1:7]), 5000)  # the type the scan saw
            else:
                down(pump, link, now)
    elif ev == _CONNECT:
        if st == _CONNECTING:
            link.v[_CONN] = a
            link.v[_STATE] = _DISCOVERING
            link.v[_DUE] = now + _STEP_S
            for j in range(_SVC_START, _FILL_END + 1):
                h[j] = 0
            ble.gattc_discover_services(a, link.uuids[0])
    elif ev == _DISCONNECT:
        if st != _IDLE:
            down(pump, link, now)
    elif st != _DISCOVERING and st != _UP:
        return  # a late result of a connection given up
    elif ev == _SERVICE_RESULT:
        if code == _U_SERVICE:
            h[_SVC_START], h[_SVC_END] = b, c
    elif ev == _SERVICE_DONE:
        if not h[_SVC_END]:
            raise OSError(2)  # not a CGM sensor after all
        ble.gattc_discover_characteristics(link.v[_CONN], h[_SVC_START], h[_SVC_END])
    elif ev == _CHAR_RESULT:  # (conn, end, value, properties, uuid)
        if code == _U_MEAS:
            h[_MEAS], h[_MEAS_END] = c, b
        elif code == _U_FEATURE:
            h[_FEATURE] = c
        elif code == _U_RACP:
            h[_RACP], h[_RACP_END] = c, b
    elif ev == _CHAR_DONE:
        if not h[_MEAS] or not h[_FEATURE]:
            raise OSError(2)
        ble.gattc_discover_descriptors(link.v[_CONN], h[_SVC_START], h[_SVC_END])
    elif ev == _DESC_RESULT:  # (conn, handle, uuid)
        if code == _U_CCCD:
            if h[_MEAS] < b <= h[_MEAS_END]:
                h[_MEAS_CCCD] = b
            elif h[_RACP] and h[_RACP] < b <= h[_RACP_END]:
                h[_RACP_CCCD] = b
    elif ev == _DESC_DONE:
        if not h[_MEAS_CCCD]:
            raise OSError(2)
        ble.gattc_read(link.v[_CONN], h[_FEATURE])
    elif ev == _READ_RESULT:  # (conn, value handle, data)
        if b == h[_FEATURE]:
            f = feature(mv)
            if f < 0:
                raise OSError(5)  # a Feature that fails its own CRC: do not trust this sensor's records
            link.v[_E2E] = f  # E2E-CRC supported: every record must carry a good one
    elif ev == _READ_DONE:
        ble.gattc_write(link.v[_CONN], h[_MEAS_CCCD], b"\x01\x00", 1)  # notifications
    elif ev == _WRITE_DONE:  # (conn, value handle, status)
        if c:
            raise OSError(5)
        if b == h[_MEAS_CCCD] and h[_RACP_CCCD]:
            ble.gattc_write(link.v[_CONN], h[_RACP_CCCD], b"\x02\x00", 1)  # indications
        elif b == h[_MEAS_CCCD] or b == h[_RACP_CCCD]:
            link.v[_STATE] = _UP
            link.v[_RETRY_S] = 0
            pump.emit("cgm", {"link": "up"})
            if link.v[_LAST] >= 0 and h[_RACP]:  # backfill what was missed while the link was down
                _backfill(link, link.v[_LAST] + 1)


def feature(mv):
    """CGM Feature -> 1 if the sensor's records carry an E2E-CRC, 0 if not, -1 if the value is
    shorter than 6 bytes or, with E2E-CRC supported, fails its own CRC (over the first 4 bytes).
    basalt/cgm/conn.py feature() is the shared decoder; this is its pump-side check, kept here so
    connecting loads neither it nor the codec (tests/test_cgms_host.py holds the two together)."""
    if len(mv) < 6:
        return -1
    if not mv[1] & 0x10:  # bit 12 of the 24 feature bits
        return 0
    return 1 if crc16(mv, 0, 4) == mv[4] | (mv[5] << 8) else -1
