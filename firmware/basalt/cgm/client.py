# The CGM client: the connection state machine over the events core/cgm.py queued (its steps
# are basalt/cgm/connect.py's, loaded only while connecting), and the readings. An overlay: the pump's tick runs service() when events wait or a timer is due - a few
# times while connecting, then once per reading (every 5 min) - so none of this sits in the heap
# in between. It lives with the codec rather than in basalt/cmd, so loading it does not load the
# command helpers (basalt/cmd/__init__.py) too. docs/cgm_client.md has the states and the rules.
#
#   IDLE --due--> SCANNING --paired sensor seen, scan done--> CONNECTING --connected--> DISCOVERING
#   (service, characteristics, descriptors, Feature read, CCCDs written) --> UP: notifications;
#   RACP backfills what was missed while the link was down. A lost link, a failed step or a
#   step that takes too long: back to IDLE, and the next scan after a backoff (2 s doubling to
#   30 s). Unpaired (cgm_pair sets one), the radio stays idle.
from micropython import const

from basalt.core.cgm import DATA, INTS, SLOTS

_IDLE = const(0)
_SCANNING = const(1)
_CONNECTING = const(2)
_DISCOVERING = const(3)
_UP = const(4)
_SEARCHING = const(5)  # cgm_scan (cmd/cgm_cmd.py): reporting every CGM sensor advertising nearby
# (cmd/cgm_cmd.py names them for the host)

_STEP_S = const(20)  # a scan, connect or discovery step that takes longer is given up
_BACKOFF_MIN_S = const(2)
_BACKOFF_MAX_S = const(30)

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
_NOTIFY = const(18)
_INDICATE = const(19)

# link.v (core/cgm.py): the link's state, then the GATT handles
_STATE = const(0)
_CONN = const(1)
_DUE = const(2)
_RETRY_S = const(3)
_LAST = const(4)
_GN = const(5)
_VALID_T = const(6)
_E2E = const(10)
_HEAD = const(11)
_N = const(12)
_LOW = const(8)
_HIGH = const(9)
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
_FILL = const(24)  # RACP backfill: the first time offset of the chunk asked for (0: none) ...
_FILL_END = const(25)  # ... and the last offset wanted
_CHUNK_MIN = const(30)

# UUID codes (core/cgm.py UUIDS, + 1)
_U_SERVICE = const(1)
_U_MEAS = const(2)
_U_FEATURE = const(3)
_U_RACP = const(4)
_U_CCCD = const(5)

# readings (const() names must be defined before the code that uses them)
_NONE = const(-0x40000000)  # basalt/cgm/rx.py: "no value" in a state slot
_CGM = const(22)  # history: a valid reading, a = mg/dL, b = time offset (min)
_CGM_REJECTED = const(23)  # a = reason code (docs/cgms.md), b = time offset
# rejection reasons (basalt/cgm/rx.py) that raise an alert: session stopped, malfunction,
# calibration required
_R_SESSION_STOPPED = const(6)
_R_MALFUNCTION = const(7)
_R_CAL_REQUIRED = const(8)
_R_STALE = const(12)
_R_NOT_MONOTONIC = const(14)
_A_LOSS = const(14)  # alarm codes (core/pump.py ALARMS)
_A_SESSION = const(15)
_A_SENSOR = const(16)
_A_LOW = const(17)
_A_HIGH = const(18)


# (The functions are named with names the firmware interns anyway - service, down, event,
# record: a new name is interned for good, and names are scarce, docs/memory.md "Names".)
def service(pump):
    """Handle every queued radio event, then the timers."""
    link = pump.cgm
    now = pump.uptime_s
    while link.v[_N]:
        i = link.v[_HEAD]
        k = i * INTS
        q = link.q
        ev, a, b, c, d, code = q[k], q[k + 1], q[k + 2], q[k + 3], q[k + 4], q[k + 5]
        o = i * DATA
        mv = memoryview(link.data)[o:o + link.data[o + DATA - 1]]
        link.v[_HEAD] = (i + 1) % SLOTS
        link.v[_N] -= 1
        try:
            if ev == _NOTIFY or ev == _INDICATE:
                event(pump, link, now, ev, a, b, c, d, code, mv)
            else:  # the connection's steps: loaded only while connecting, not for every reading
                from basalt.cgm import connect

                connect.event(pump, link, now, ev, a, b, c, d, code, mv)
        except OSError:  # a call the radio refused: start over
            down(pump, link, now)
    if not link.pair[0]:
        if link.v[_STATE] == _SEARCHING and now >= link.v[_DUE]:
            down(pump, link, now)  # a search whose scan never reported its end
        return
    if link.v[_STATE] == _IDLE and now >= link.v[_DUE]:
        link.v[_STATE] = _SCANNING
        link.v[_TARGET] = 0xFFFF  # not seen yet
        link.v[_DUE] = now + _STEP_S
        try:
            link.ble.gap_scan(5000, 30000, 30000, True)  # 5 s, active: the paired sensor's scan response too
        except OSError:
            down(pump, link, now)
    elif link.v[_STATE] != _IDLE and link.v[_STATE] != _UP and now >= link.v[_DUE]:
        down(pump, link, now)  # a step that never finished


def down(pump, link, now):
    """Give the link up and schedule the next scan after the backoff."""
    st = link.v[_STATE]
    link.v[_STATE] = _IDLE
    b = link.v[_RETRY_S]
    link.v[_RETRY_S] = _BACKOFF_MIN_S if b < _BACKOFF_MIN_S else (b * 2 if b * 2 < _BACKOFF_MAX_S else _BACKOFF_MAX_S)
    link.v[_DUE] = now + link.v[_RETRY_S]
    ble = link.ble
    try:
        if st == _SCANNING or st == _SEARCHING:
            ble.gap_scan(None)
        elif st == _CONNECTING:
            ble.gap_connect(None)  # cancel the attempt
        elif st > _CONNECTING:
            ble.gap_disconnect(link.v[_CONN])
    except OSError:
        pass
    if st == _UP:
        pump.emit("cgm", {"link": "down"})


def event(pump, link, now, ev, a, b, c, d, code, mv):
    h = link.v
    if ev == _NOTIFY:
        if b == h[_MEAS]:  # every record parsed, checked (basalt/cgm/rx.py) and acted on
            from basalt.cgm import rx

            s = link.vs
            if s[13] == _NONE:  # no session mapping yet (boot, a new session): this live reading sets it
                rx.record(mv, 0, len(mv), link.v[_E2E], s)
                if s[0] == 0:
                    rx.reset(s, now - 60 * s[6])
            last = link.v[_LAST]
            rx.parse(mv, s, lambda r, why: record(pump, link, now, r, why), link.v[_E2E], now)
            if 0 <= last < link.v[_LAST] - 5 and not link.v[_FILL] and link.v[_RACP]:
                _backfill(link, last + 1, link.v[_LAST] - 1)  # live readings skipped some (dropped on the air)
    elif ev == _INDICATE:
        # RACP's response, after the records it sent as notifications: success (1) -> the next
        # chunk; anything else (6: no records found) -> caught up
        if b == h[_RACP] and len(mv) == 4 and mv[0] == 6 and mv[3] == 1 and h[_FILL] and h[_FILL] + _CHUNK_MIN <= h[_FILL_END]:
            _backfill(link, h[_FILL] + _CHUNK_MIN, h[_FILL_END])
        else:
            h[_FILL] = 0


def _backfill(link, lo, hi=0xFFFF):
    """Ask RACP for the stored records with time offsets lo..hi, a chunk at a time: at most
    _CHUNK_MIN minutes, which the event queue holds at once (6 readings at one per 5 min, and
    the response). The next chunk follows the response."""
    h = link.v
    h[_FILL], h[_FILL_END] = lo, hi
    end = lo + _CHUNK_MIN - 1
    if end > hi:
        end = hi
    # RACP "report stored records" (1), "within range" (4), filter: time offset (1), lo, end
    # (the layout conn.racp_request builds for the host; not imported here, for the heap)
    req = bytes((1, 4, 1, lo & 255, lo >> 8, end & 255, end >> 8))
    link.ble.gattc_write(link.v[_CONN], h[_RACP], req, 1)


def record(pump, link, now, r, why):
    off = r[6]
    if r[0] == 0 and off > link.v[_LAST]:  # framing and CRC good: the newest offset received
        link.v[_LAST] = off
    if why:
        h = link.v
        if (why == _R_STALE or why == _R_NOT_MONOTONIC) and h[_FILL] and h[_FILL] <= off <= h[_FILL_END]:
            # a record asked for by RACP (missed while the link was down, or dropped on the air):
            # its value passed every check before these; history only, never therapy
            pump.record(_CGM, (r[5] + 5) // 10, off)
            return
        pump.record(_CGM_REJECTED, why, off)
        pump.emit("cgm", {"rejected": why, "offset_min": off})
        if why == _R_SESSION_STOPPED:
            pump.alarm("cgm_session_ended")
        elif why == _R_MALFUNCTION or why == _R_CAL_REQUIRED:
            pump.alarm("cgm_sensor_error", "calibration required" if why == _R_CAL_REQUIRED else "malfunction")
        return
    mg = (r[5] + 5) // 10
    t = r[13] + 60 * off  # the reading's pump time, from the session mapping
    i = link.v[_GN] % 24
    link.g[i] = mg
    link.gt[i] = t
    link.v[_GN] += 1
    link.v[_VALID_T] = now
    pump.record(_CGM, mg, off)
    for c in (_A_LOSS, _A_SESSION, _A_SENSOR):
        pump.clear_alarm(c)  # a valid reading: the signal, the session and the sensor are back
    if link.v[_LOW] and mg <= link.v[_LOW]:
        pump.alarm("glucose_low", "%d mg/dL" % mg)
    else:
        pump.clear_alarm(_A_LOW)
    if link.v[_HIGH] and mg >= link.v[_HIGH]:
        pump.alarm("glucose_high", "%d mg/dL" % mg)
    else:
        pump.clear_alarm(_A_HIGH)
    pump.emit("cgm", {"glucose_mgdl": mg, "offset_min": off})
