# CGM emulator: a Bluetooth CGM Service sensor (0x181F, peripheral role) whose readings the host
# sets over a serial line. Firmware for a second ESP32 / Pico W on a rig (board_main.py), and, the
# same code, a simulated sensor in the Unix port through the `bluetooth` shim (sim_main.py), so
# both sides of the radio are firmware under test. Not pump firmware: nothing here is resident
# in the pump. Records, Feature and RACP/SOCP bytes come from the pump's own codec
# (basalt.cgm.cgms); docs/ble.md "CGM emulator" has the serial protocol and the GATT layout.
#
# The host owns time: each reading arrives with its time offset (minutes since session start),
# so a test decides exactly what the pump sees. Live readings go to subscribed centrals (CCCD);
# RACP answers the central that asked, from the record store (the last CAPACITY readings).
from basalt.cgm import cgms, sfloat
from basalt.lib import crc16
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)

_FLAG_READ = const(0x02)
_FLAG_WRITE = const(0x08)
_FLAG_NOTIFY = const(0x10)
_FLAG_INDICATE = const(0x20)

_RACP_REPORT = const(1)
_RACP_DELETE = const(2)
_RACP_ABORT = const(3)
_RACP_REPORT_NUM = const(4)
_RACP_NUM_RSP = const(5)
_RACP_RSP = const(6)
_OPR_NULL = const(0)
_OPR_ALL = const(1)
_OPR_LE = const(2)
_OPR_GE = const(3)
_OPR_RANGE = const(4)
_OPR_FIRST = const(5)
_OPR_LAST = const(6)
_SOCP_INTERVAL = const(1)
_SOCP_GET_INTERVAL = const(2)
_SOCP_INTERVAL_RSP = const(3)
_SOCP_START = const(26)
_SOCP_STOP = const(27)
_SOCP_RSP = const(28)
_A_SESSION_STOPPED = const(1)

# E2E-CRC, trend, multiple sessions, malfunction / device range / battery / general fault
# detection; the simulator's sensor (hil/ble/sensor.py DEFAULT_FEATURES) says the same.
FEATURES = const(0xDB40)
CAPACITY = const(288)  # one day of 5-minute readings
ADV_INTERVAL_US = const(100000)
SPECIALS = {"nan": 0x07FF, "nres": 0x0800, "+inf": 0x07FE, "-inf": 0x0802}


class Emulator:
    def __init__(self, ble, uuid, name="Basalt CGM-E"):
        """ble: the radio (bluetooth.BLE()); uuid: its UUID type (bluetooth.UUID). Both come from
        the entry point (board_main.py, sim_main.py): this module never imports bluetooth."""
        self.ble = ble
        self.name = name
        self.features = FEATURES
        self.records = []  # (time offset, glucose SFLOAT, 24 annunciation bits), oldest first
        self.running = True
        self.interval = 5
        self.conns = set()
        self.adv_on = True
        self.drop = self.corrupt = self.duplicate = 0  # faults for the next n live readings
        ble.active(True)
        ble.irq(self.irq)
        svc = (uuid(0x181F), (
            (uuid(0x2AA7), _FLAG_NOTIFY),  # CGM Measurement
            (uuid(0x2AA8), _FLAG_READ),  # CGM Feature
            (uuid(0x2AA9), _FLAG_READ),  # CGM Status
            (uuid(0x2AAA), _FLAG_READ),  # Session Start Time
            (uuid(0x2AAB), _FLAG_READ),  # Session Run Time
            (uuid(0x2A52), _FLAG_WRITE | _FLAG_INDICATE),  # RACP
            (uuid(0x2AAC), _FLAG_WRITE | _FLAG_INDICATE),  # SOCP
        ))
        ((self.h_meas, self.h_feature, self.h_status, self.h_start, self.h_run, self.h_racp,
          self.h_socp),) = ble.gatts_register_services((svc,))
        self.refresh()
        self.advertise(True)

    @property
    def e2e(self):
        return bool(self.features & cgms.F_E2E_CRC)

    def _crc(self, b):
        if self.e2e:
            c = crc16(b)
            b += bytes((c & 0xFF, c >> 8))
        return b

    def refresh(self):
        # The read-only characteristics, from the current features, session and last record.
        ble = self.ble
        ble.gatts_write(self.h_feature, cgms.encode_feature(self.features))
        last = self.records[-1] if self.records else (0, 0, 0)
        st = last[2] & ~_A_SESSION_STOPPED | (0 if self.running else _A_SESSION_STOPPED)
        ble.gatts_write(self.h_status, self._crc(bytes((last[0] & 0xFF, last[0] >> 8, st & 0xFF,
                                                        st >> 8 & 0xFF, st >> 16 & 0xFF))))
        ble.gatts_write(self.h_start, self._crc(bytes((0xE8, 0x07, 1, 1, 8, 0, 0, 0, 0))))  # 2024-01-01 08:00 UTC
        ble.gatts_write(self.h_run, self._crc(bytes((240, 0))))  # a 10-day sensor

    def advertise(self, on):
        self.adv_on = on
        if not on:
            self.ble.gap_advertise(None)
            for c in list(self.conns):
                self.ble.gap_disconnect(c)  # out of range: the centrals lose the link
            return
        name = self.name.encode()
        adv = bytes((2, 1, 6, 3, 3, 0x1F, 0x18, len(name) + 1, 9)) + name
        self.ble.gap_advertise(ADV_INTERVAL_US, adv)

    # ---- radio events ---------------------------------------------------------------------
    def irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.conns.add(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self.conns.discard(data[0])
            if self.adv_on:
                self.advertise(True)  # the stack stops advertising on a connection
        elif event == _IRQ_GATTS_WRITE:
            conn, h = data
            if h == self.h_racp:
                self.racp(conn, self.ble.gatts_read(h))
            elif h == self.h_socp:
                self.socp(conn, self.ble.gatts_read(h))

    # ---- readings -------------------------------------------------------------------------
    def packet(self, rec):
        return cgms.record(rec[1], rec[0], rec[2], e2e=self.e2e)

    def reading(self, offset, raw, status=0):
        rec = (offset, raw, status)
        self.records.append(rec)
        if len(self.records) > CAPACITY:
            self.records.pop(0)
        self.refresh()
        pkt = self.packet(rec)
        if self.drop:
            self.drop -= 1
            return
        if self.corrupt:
            self.corrupt -= 1
            pkt = pkt[:-1] + bytes((pkt[-1] ^ 0x5A,))
        self.ble.gatts_write(self.h_meas, pkt, True)  # to every subscribed central
        if self.duplicate:
            self.duplicate -= 1
            self.ble.gatts_write(self.h_meas, pkt, True)

    # ---- RACP and SOCP ----------------------------------------------------------------------
    def select(self, operator, lo, hi):
        r = self.records
        if operator == _OPR_ALL:
            return list(r)
        if operator == _OPR_LE:
            return [x for x in r if x[0] <= lo]
        if operator == _OPR_GE:
            return [x for x in r if x[0] >= lo]
        if operator == _OPR_RANGE:
            return [x for x in r if lo <= x[0] <= hi]
        return r[:1] if operator == _OPR_FIRST else r[-1:]

    def racp_answer(self, req):
        # (records to notify, the RACP indication): the simulator sensor's rules (docs/cgms.md)
        if len(req) < 2:
            return (), bytes((_RACP_RSP, _OPR_NULL, req[0] if req else 0, 5))
        op, operator = req[0], req[1]

        def rsp(code):
            return (), bytes((_RACP_RSP, _OPR_NULL, op, code))
        if op == _RACP_ABORT:
            return rsp(1 if operator == _OPR_NULL else 3)
        if op not in (_RACP_REPORT, _RACP_DELETE, _RACP_REPORT_NUM):
            return rsp(2)
        if operator == _OPR_NULL:
            return rsp(3)
        if operator > _OPR_LAST:
            return rsp(4)
        lo = hi = 0
        if operator in (_OPR_LE, _OPR_GE, _OPR_RANGE):
            if len(req) < 3:
                return rsp(5)
            if req[2] != 1:
                return rsp(9)  # only the time offset filter
            if len(req) != (7 if operator == _OPR_RANGE else 5):
                return rsp(5)
            lo = req[3] | req[4] << 8
            hi = req[5] | req[6] << 8 if operator == _OPR_RANGE else 0
            if operator == _OPR_RANGE and lo > hi:
                return rsp(5)
        elif len(req) != 2:
            return rsp(5)
        sel = self.select(operator, lo, hi)
        if op == _RACP_REPORT_NUM:
            return (), bytes((_RACP_NUM_RSP, _OPR_NULL, len(sel) & 0xFF, len(sel) >> 8))
        if not sel:
            return rsp(6)
        if op == _RACP_DELETE:
            self.records = [x for x in self.records if x not in sel]
            return rsp(1)
        return sel, bytes((_RACP_RSP, _OPR_NULL, op, 1))

    def racp(self, conn, req):
        sel, rsp = self.racp_answer(bytes(req))
        ble = self.ble
        try:
            for rec in sel:
                ble.gatts_notify(conn, self.h_meas, self.packet(rec))
        except OSError:  # the stack's transmit queue is full: say the procedure did not complete
            rsp = bytes((_RACP_RSP, _OPR_NULL, req[0], 8))
        ble.gatts_write(self.h_racp, rsp)
        ble.gatts_indicate(conn, self.h_racp)

    def socp(self, conn, req):
        req = bytes(req)
        op = req[0] if req else 0
        code = 1
        n = len(req) - (2 if self.e2e else 0)
        if n < 1 or (self.e2e and crc16(req, 0, n) != req[n] | req[n + 1] << 8):
            code = 3  # invalid operand (length or E2E-CRC)
        elif op == _SOCP_INTERVAL:
            if n != 2 or not 1 <= req[1] <= 255:
                code = 5
            else:
                self.interval = req[1]
        elif op == _SOCP_GET_INTERVAL:
            out = cgms.socp_request(_SOCP_INTERVAL_RSP, bytes((self.interval,)), self.e2e)
            code = 0
        elif op == _SOCP_START:
            self.running = True
            self.records = []
        elif op == _SOCP_STOP:
            self.running = False
        else:
            code = 2
        if code:
            out = cgms.socp_request(_SOCP_RSP, bytes((op, code)), self.e2e)
        self.refresh()
        self.ble.gatts_write(self.h_socp, out)
        self.ble.gatts_indicate(conn, self.h_socp)

    # ---- the host's serial line protocol ------------------------------------------------------
    def command(self, line):
        # One command line -> one reply line ("ok ..." or "err <reason>"). Nothing changes on err.
        f = line.split()
        if not f:
            return "err empty"
        c, a = f[0], f[1:]
        try:
            if c == "r" and 2 <= len(a) <= 3:
                off = int(a[0])
                raw = SPECIALS.get(a[1])
                if raw is None:
                    g = int(a[1])
                    if not 0 <= g <= 2045:
                        return "err glucose"
                    raw = sfloat.from_int(g)
                st = int(a[2], 16) if len(a) == 3 else 0
                if not 0 <= off <= 0xFFFF or not 0 <= st <= 0xFFFFFF:
                    return "err range"
                if self.records and off <= self.records[-1][0]:
                    return "err offset not after %d" % self.records[-1][0]
                if not self.running:
                    return "err session stopped"
                self.reading(off, raw, st)
                return "ok r %d" % off
            if c == "s" and a in (["start"], ["stop"]):
                self.running = a[0] == "start"
                if self.running:
                    self.records = []
                self.refresh()
                return "ok s " + a[0]
            if c == "f" and len(a) == 1:
                v = int(a[0], 16)
                if not 0 <= v <= 0xFFFFFF:
                    return "err range"
                self.features = v
                self.refresh()
                return "ok f %06x" % v
            if c == "x" and len(a) == 2 and a[0] in ("drop", "crc", "dup"):
                n = int(a[1])
                if not 0 <= n <= 1000:
                    return "err range"
                setattr(self, {"drop": "drop", "crc": "corrupt", "dup": "duplicate"}[a[0]], n)
                return "ok x %s %d" % (a[0], n)
            if c == "a" and a in (["on"], ["off"]):
                self.advertise(a[0] == "on")
                return "ok a " + a[0]
            if c == "n" and len(a) == 1 and 0 < len(a[0]) <= 20:
                self.name = a[0]
                if self.adv_on:
                    self.advertise(True)
                return "ok n " + a[0]
            if c == "?" and not a:
                last = self.records[-1][0] if self.records else -1
                return "ok %d %d %d %d %06x %d" % (self.adv_on, len(self.conns), len(self.records), last,
                                                   self.features, self.running)
        except ValueError:
            return "err number"
        return "err command"


class LineIn:
    # Assembles command lines from a byte stream (bounded: a line longer than 80 bytes is dropped).
    def __init__(self):
        self.buf = bytearray()
        self.over = False

    def feed(self, data, emu, write):
        for b in data:
            if b in (10, 13):
                if self.buf and not self.over:
                    write(emu.command(bytes(self.buf).decode()) + "\n")
                elif self.over:
                    write("err too long\n")
                self.buf = bytearray()
                self.over = False
            elif len(self.buf) < 80:
                self.buf.append(b)
            else:
                self.over = True
