# The CGM radio link's resident part: the `bluetooth` IRQ handler and the state the CGM client
# (basalt/cgm/client.py, an overlay) keeps between runs. The handler only queues - each event
# becomes a few ints and up to 23 bytes in a fixed ring, without allocating (the rule for IRQ
# code) - and tick() hands a non-empty queue, or a due timer, to the client, which runs the
# connection state machine and parses and validates readings. On a board the IRQ comes from the
# bluetooth module's scheduler; in the simulator from the HAL's wait() (boards/sim/bluetooth.py).
# Loaded only when the board has a radio (basalt/boot.py). docs/cgm_client.md.
#
# Scan results are filtered here: only the paired sensor's address is queued, so a crowded radio
# cannot flood the ring; so are services, characteristics and descriptors the client does not use.

from micropython import const

from basalt import lib as overlay

SLOTS = const(8)  # queued events
DATA = const(24)  # bytes per event: 23 of data (a default-MTU notification is at most 20), the length
INTS = const(6)  # per event: the IRQ number, up to four ints of its tuple, the UUID's code
_UP = const(4)  # client state "up" (cgm/client.py)
_SEARCHING = const(5)  # client state "searching" (cmd/cgm_cmd.py cgm_scan): any CGM sensor is reported
_ALARM_LOSS = const(14)  # core/pump.py ALARMS: cgm_signal_loss

# The UUIDs the client looks for, by code (1 + index): service, measurement, feature, RACP, CCCD
UUIDS = (0x181F, 0x2AA7, 0x2AA8, 0x2A52, 0x2902)


# The link's state, v[slot]: one int array rather than attributes (each attribute name costs the
# heap); cgm/client.py, cmd/cgm_cmd.py and the settings overlays use the same slots.
_STATE = const(0)  # cgm/client.py: 0 idle, 1 scanning, 2 connecting, 3 discovering, 4 up
_CONN = const(1)  # connection handle
_DUE = const(2)  # uptime (s) at which the client's next timed step is due
_RETRY_S = const(3)  # s before the next scan after a failure
_LAST = const(4)  # time offset (min) of the newest record received intact (valid or not), -1
_GN = const(5)  # valid readings stored so far; the newest is at (gn - 1) % 36 in g, gt
_VALID_T = const(6)  # uptime of the last valid reading (or of pairing, or boot)
_LOSS_S = const(7)  # signal-loss alert after this long without a valid reading (default 20 min)
_LOW = const(8)  # glucose alerts, mg/dL (0 = off): low on by default at 70, high off
_HIGH = const(9)
_E2E = const(10)  # 1: the sensor's records carry an E2E-CRC (its CGM Feature says so)
_HEAD = const(11)  # the event ring: oldest queued slot ...
_N = const(12)  # ... events queued ...
_LOST = const(13)  # ... and events lost to a full ring (the RACP backfill recovers the readings)
# 14..25: GATT handles and the RACP backfill (cgm/client.py)


class CgmLink:
    # Made by basalt/boot.py (make_link below is run once there, so its code is dropped with
    # boot's): ble, uuids (the UUIDS objects), q and data (the event ring), pair, v (the state
    # slots above and the GATT handles), g and gt (the last 24 valid readings, 2 h: mg/dL and
    # pump time), vs (the validator's state).

    def tick(self, pump, u):
        """Every control tick, when paired (or searching, cgm_scan): run the client if events wait
        or a timer is due, and raise the signal-loss alert after v[_LOSS_S] without a valid reading."""
        v = self.v
        if v[_N] or v[_STATE] != _UP and u >= v[_DUE]:
            try:
                overlay.call("basalt.cgm.client", "service", pump)
            except Exception:  # noqa: BLE001 - never take delivery down: start the link over
                v[_N] = v[_STATE] = 0
                v[_DUE] = u + 30
        if self.pair[0] and u - v[_VALID_T] >= v[_LOSS_S] and not pump.alarm_st[_ALARM_LOSS]:
            pump.alarm("cgm_signal_loss")

    def irq(self, event, data):
        v = self.v
        if v[_N] >= SLOTS:
            v[_LOST] += 1  # counted; the RACP backfill recovers readings lost this way
            return
        q, k, j, m = self.q, (v[_HEAD] + v[_N]) % SLOTS * INTS, 1, 0
        q[k] = event
        q[k + 1] = q[k + 2] = q[k + 3] = q[k + 4] = q[k + 5] = 0
        d, o = self.data, k // INTS * DATA
        for x in data:
            if type(x) is int:
                if j < 5:
                    q[k + j] = x
                    j += 1
            elif type(x) is type(self.uuids[0]):
                for c in range(len(UUIDS)):
                    if x == self.uuids[c]:
                        q[k + 5] = c + 1
            elif m == 0 and x is not None:  # the first bytes: an address or a value
                m = len(x) if len(x) < DATA else DATA - 1
                for t in range(m):
                    d[o + t] = x[t]
            elif event == 5 and v[_STATE] == _SEARCHING and x is not None:
                # the advertising data, while searching: does a list of 16-bit service UUIDs
                # (AD type 2 or 3) name the CGM service, 0x181F? (code 1, as the service's)
                t = 0
                while t + 1 < len(x):
                    if x[t + 1] == 2 or x[t + 1] == 3:
                        for u in range(t + 2, t + x[t], 2):
                            if u + 1 < len(x) and x[u] == 0x1F and x[u + 1] == 0x18:
                                q[k + 5] = 1
                    t += x[t] + 1
        if event == 5:  # scan result (addr_type, addr, adv_type, rssi, adv)
            if v[_STATE] == _SEARCHING:
                if not q[k + 5]:
                    return  # not a CGM sensor
            else:  # the paired sensor's?
                for t in range(6):
                    if d[o + t] != self.pair[t + 1]:
                        return
        elif event in (9, 11, 13) and not q[k + 5]:  # a service, characteristic or descriptor
            return  # the client does not use
        d[o + DATA - 1] = m  # the length, in the slot's last byte
        v[_N] += 1
