# A small BLE CGM central, written against MicroPython's `bluetooth` API: the radio bridge's test
# program (tests/test_ble_bridge.py), not pump firmware. It runs under the Unix port on the sim
# board (hil/ble/node.py), so every call goes through boards/sim/bluetooth.py and the bumble
# bridge, and it reports what it sees as "@P <what> <t_ms> ..." bus lines:
#   heap <bytes> <qstrs>      the shim's cost: import + BLE() + active(True), after a collect
#   adv <t> <addr> <rssi> <name>   a scan result advertising the CGM service 0x181F
#   scan <t> | scandone <t> | conn <t> <handle> | connfail <t> | down <t> <handle>
#   feature <t> <features>    CGM Feature read and parsed (CRC checked)
#   up <t>                    notifications (Measurement) and indications (RACP) enabled
#   rec <t> <offset> <glucose tenths|-> <err> <status>   one record of a notification
#   racp <t> <a> <b> <c>      the RACP indication (6 <opcode> <code>, or 5 <count> 0)
#   err <t> <what>            an OSError from a call (the test asserts there are none)
# Behaviour: scan (3 s, active); connect to the paired address (--pair, hex) or the first CGMS
# advertiser; discover the service, its characteristics and descriptors; read the Feature;
# enable notifications, then RACP indications; ask RACP for the records after the last one
# received (all of them on the first connection). A lost link or a failed scan retries with
# backoff (1 s doubling to 16 s).
import gc
import sys

import board
from basalt.hal.sim import make_hal
from micropython import const

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_GATTC_INDICATE = const(19)

_RACP_REPORT = const(1)
_OPR_GE = const(3)


def _ad_fields(adv):
    # (16-bit service UUIDs, local name) of an advertising payload
    uuids, name, i = [], "", 0
    while i + 1 < len(adv):
        n, t = adv[i], adv[i + 1]
        if t in (2, 3):
            for k in range(i + 2, i + 1 + n, 2):
                uuids.append(adv[k] | adv[k + 1] << 8)
        elif t == 9:
            name = bytes(adv[i + 2:i + 1 + n]).decode()
        i += 1 + n
    return uuids, name


class Central:
    def __init__(self, hal, ble, bt, cgms, pair):
        self.hal, self.ble, self.bt, self.cgms = hal, ble, bt, cgms
        self.pair = pair
        self.state = "idle"
        self.retry_at = 0
        self.backoff = 1000
        self.conn = None
        self.target = None
        self.svc = None
        self.ch = {}  # UUID -> (value handle, end handle)
        self.cccd = {}  # UUID -> CCCD handle
        self.e2e = False
        self.last = -1
        self.rec = cgms.Reading()
        self.U = {n: bt.UUID(n) for n in (0x181F, 0x2AA7, 0x2AA8, 0x2A52, 0x2902)}
        ble.irq(self.irq)

    def report(self, what, *a):
        self.hal.send(f"P {what} {self.hal.now_ms()}" + "".join(" " + str(x) for x in a))

    def call(self, what, fn, *a):
        try:
            fn(*a)
        except OSError as e:
            self.report("err", what, e.errno)

    def retry(self):
        self.state = "idle"
        self.retry_at = self.hal.now_ms() + self.backoff
        self.backoff = min(self.backoff * 2, 16000)

    def tick(self, now):
        if self.state == "idle" and now >= self.retry_at:
            self.state = "scanning"
            self.target = None
            self.report("scan")
            self.call("scan", self.ble.gap_scan, 3000, 30000, 30000, True)

    def irq(self, event, data):
        ble, U = self.ble, self.U
        if event == _IRQ_SCAN_RESULT:
            addr_type, addr, adv_type, rssi, adv = data
            uuids, name = _ad_fields(adv)
            if 0x181F in uuids:
                a = bytes(addr).hex()
                self.report("adv", a, rssi, name or "-")
                if self.state == "scanning" and self.target is None and (not self.pair or a == self.pair):
                    self.target = (addr_type, bytes(addr))
                    self.call("scanstop", ble.gap_scan, None)
        elif event == _IRQ_SCAN_DONE:
            self.report("scandone")
            if self.state == "scanning":
                if self.target:
                    self.state = "connecting"
                    self.call("connect", ble.gap_connect, self.target[0], self.target[1], 2000)
                else:
                    self.retry()
        elif event == _IRQ_PERIPHERAL_CONNECT:
            conn = data[0]
            self.conn = conn
            self.state = "discovering"
            self.ch, self.cccd, self.svc = {}, {}, None
            self.report("conn", conn)
            self.call("services", ble.gattc_discover_services, conn, U[0x181F])
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            conn = data[0]
            if conn == 65535:
                self.report("connfail")
            else:
                self.report("down", conn)
            self.conn = None
            self.retry()
        elif event == _IRQ_GATTC_SERVICE_RESULT:
            conn, start, end, uuid = data
            if uuid == U[0x181F]:
                self.svc = (start, end)
        elif event == _IRQ_GATTC_SERVICE_DONE:
            if self.svc:
                self.call("chars", ble.gattc_discover_characteristics, self.conn, self.svc[0], self.svc[1])
        elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
            conn, end, value, props, uuid = data
            self.ch[self.bt.UUID(uuid)] = (value, end)
        elif event == _IRQ_GATTC_CHARACTERISTIC_DONE:
            self.call("dscs", ble.gattc_discover_descriptors, self.conn, self.svc[0], self.svc[1])
        elif event == _IRQ_GATTC_DESCRIPTOR_RESULT:
            conn, dsc, uuid = data
            if uuid == U[0x2902]:
                for u, (v, end) in self.ch.items():
                    if v < dsc <= end:
                        self.cccd[u] = dsc
        elif event == _IRQ_GATTC_DESCRIPTOR_DONE:
            self.call("read", ble.gattc_read, self.conn, self.ch[U[0x2AA8]][0])
        elif event == _IRQ_GATTC_READ_RESULT:
            conn, value, buf = data
            if value == self.ch[U[0x2AA8]][0]:
                f = self.cgms.parse_feature(buf)[0]
                self.e2e = bool(f & self.cgms.F_E2E_CRC)
                self.report("feature", f)
        elif event == _IRQ_GATTC_READ_DONE:
            self.call("cccd", ble.gattc_write, self.conn, self.cccd[U[0x2AA7]], b"\x01\x00", 1)
        elif event == _IRQ_GATTC_WRITE_DONE:
            conn, value, status = data
            if status:
                self.report("err", "write", status)
            elif value == self.cccd[U[0x2AA7]]:
                self.call("cccd", ble.gattc_write, self.conn, self.cccd[U[0x2A52]], b"\x02\x00", 1)
            elif value == self.cccd[U[0x2A52]]:
                self.state = "up"
                self.backoff = 1000
                self.report("up")
                # backfill what was missed while the link was down (at first: the whole session)
                req = self.cgms.racp_request(_RACP_REPORT, _OPR_GE, self.last + 1)
                self.call("racp", ble.gattc_write, self.conn, self.ch[U[0x2A52]][0], req, 1)
        elif event == _IRQ_GATTC_NOTIFY:
            conn, value, buf = data
            if value == self.ch[U[0x2AA7]][0]:
                self.cgms.parse(buf, self.rec, self.on_record, self.e2e)
        elif event == _IRQ_GATTC_INDICATE:
            conn, value, buf = data
            if value == self.ch[U[0x2A52]][0]:
                self.report("racp", *self.cgms.racp_response(buf))

    def on_record(self, r):
        g = "-" if r.glucose is None else r.glucose
        self.report("rec", r.time_offset, g, r.err, r.status)
        if r.err == 0 and r.time_offset > self.last:
            self.last = r.time_offset


def main(argv):
    hal = make_hal(board, argv)
    hal.bus.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (the sim HAL's bus may not set it yet)
    pair = ""
    for i in range(len(argv) - 1):
        if argv[i] == "--pair":
            pair = argv[i + 1].lower()
    gc.collect()
    before = gc.mem_alloc()
    import bluetooth

    ble = bluetooth.BLE()
    ble.active(True)
    gc.collect()
    hal.send(f"P heap {hal.now_ms()} {gc.mem_alloc() - before}")
    from basalt.cgm import cgms

    c = Central(hal, ble, bluetooth, cgms, pair)
    while True:
        if not hal.wait():
            c.tick(hal.now_ms())


main(sys.argv[1:])
