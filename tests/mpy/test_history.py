# The flash logs (core/history.py), the history command's paging (cmd/history.py), the storage
# HAL's append/cut (lib/filestore.py, on the POSIX directory and on a real littlefs image) and
# recovery at boot (cmd/recover.py) - under MicroPython.
import json
import os
import struct

import basalt.lib as overlay
from basalt.core import history as H
from basalt.core.pump import ALARMS
from basalt.lib import crc16
from basalt.lib.filestore import FileStore
from basalt.proto import MAX_FRAME
from mpyunit import raises
from pumpkit import bare, cmd, make, run

# history record types (private constants in the firmware; host/render.py RECORD_NAMES)
BOLUS_DONE, PRIME, SUSPEND, RESUME, BOOT, REPAIR, BOLUS_INTERRUPTED = 6, 9, 11, 12, 19, 20, 21

REC, PER, SEGS = H.LOGS["h"]
SREC, SPER = H.LOGS["s"][0], H.LOGS["s"][1]


class Hal:
    def __init__(self, cause="power"):
        self.cause = cause

    def reset_cause(self):
        return self.cause


def reboot(p, cause="power", settings_ok=True):
    """The same storage, a new pump: settings, then recovery, as app.build runs them."""
    q, m, ev = bare(p.storage)
    ok = overlay.call("settings", "load", q)
    overlay.call("recover", "boot", q, Hal(cause), ok and settings_ok)
    return q, m, ev


def alarms(p):
    return [ALARMS[i] for i in range(len(p.alarm_st)) if p.alarm_st[i]]


def records(p, **args):
    out, since = [], args.pop("since", 0)
    while True:
        r = cmd(p, "history", since=since, limit=32, **args)
        out += r["records"]
        if r["next"] >= r["newest"]:
            return out, r
        since = r["next"]


# ---- layout and the segment ring -----------------------------------------------------------------
def test_records_are_appended_in_the_documented_layout():
    p, _, _ = bare()
    p.uptime_s = 77
    assert p.record(BOLUS_DONE, 200, 1) == 1
    raw = p.storage.files["h0"]
    assert len(raw) == REC
    assert struct.unpack("<IIBBii", raw[:18]) == (1, 77, BOLUS_DONE, 0, 200, 1)
    assert struct.unpack("<H", raw[18:])[0] == crc16(raw, 0, 18)


def test_the_ring_drops_the_oldest_segment_never_the_newest():
    p, _, _ = bare()
    n = PER * SEGS + PER // 2  # into the 17th segment
    for i in range(n):
        p.record(RESUME, i)
    names = sorted(k for k in p.storage.files if k[0] == "h")
    assert len(names) == SEGS and "h0" not in names and "h%d" % SEGS in names
    recs, r = records(p, since=n - 40)
    assert r["oldest"] == PER + 1 and r["newest"] == n
    assert [x[0] for x in recs] == list(range(n - 39, n + 1)) and [x[3] for x in recs][-1] == n - 1
    assert cmd(p, "history", since=0, limit=1)["records"][0][0] == PER + 1  # gone ones are skipped silently


def test_a_reply_always_fits_one_frame_and_pages_on():
    p, _, _ = bare()
    for i in range(60):  # the widest values a record can hold
        p.uptime_s = 0xFFFFFFFF - i
        p.record(255, -0x80000000, -0x80000000)
    since, seen = 0, []
    while True:
        r = cmd(p, "history", since=since, limit=32)
        reply = json.dumps({"id": 65535, "ok": True, "data": r})
        assert len(reply) + 7 <= MAX_FRAME, len(reply)
        assert r["records"]
        seen += [x[0] for x in r["records"]]
        if r["next"] >= r["newest"]:
            break
        since = r["next"]
    assert seen == list(range(1, 61))


def test_filters_by_type_and_pump_time_and_bounded_scans():
    p, _, _ = bare()
    for i in range(600):
        p.uptime_s = i * 10
        p.record(RESUME if i % 100 else SUSPEND, i)
    r = cmd(p, "history", since=0, type=SUSPEND)
    assert [x[3] for x in r["records"]] == [0, 100, 200] and r["next"] == 256  # 256 looked at, then page on
    recs, _ = records(p, type=SUSPEND)
    assert [x[3] for x in recs] == [0, 100, 200, 300, 400, 500]
    recs, _ = records(p, from_s=1000, to_s=1050)
    assert [x[1] for x in recs] == [1000, 1010, 1020, 1030, 1040, 1050]


def test_a_corrupt_record_is_skipped_and_reported_never_returned():
    p, _, _ = bare()
    for i in range(10):
        p.record(RESUME, i)
    raw = bytearray(p.storage.files["h0"])
    raw[4 * REC + 12] ^= 1  # record 5's a
    p.storage.files["h0"] = bytes(raw)
    r = cmd(p, "history", since=0)
    assert [x[0] for x in r["records"]] == [1, 2, 3, 4, 6, 7, 8, 9, 10] and r["skipped_corrupt"] == [5]
    raw[4 * REC + 12] ^= 1
    struct.pack_into("<I", raw, 4 * REC, 6)  # intact CRC over a wrong seq: misplaced, not trusted
    struct.pack_into("<H", raw, 4 * REC + 18, crc16(raw, 4 * REC, 4 * REC + 18))
    p.storage.files["h0"] = bytes(raw)
    assert cmd(p, "history", since=0)["skipped_corrupt"] == [5]


# ---- the journal: how much a power cut can leave unaccounted -------------------------------------
def test_snapshots_keep_the_unaccounted_delivery_within_the_bound():
    # After every tick and command: steps emitted since the newest snapshot (accounted ones plus
    # the train in flight) <= max(CKPT, the train in flight).
    p, m, _ = make([[0, 3000]])
    worst = 0
    for k in range(600):
        if k % 120 == 5:
            cmd(p, "bolus", mU=1500, ext_mU=500, minutes=30) if k == 5 else cmd(p, "bolus", mU=1500)
            p.history.save(p)  # what the server does after every command
        p.tick()
        p.history.sync(p, 0)  # what app.run does after every tick
        flight = p.delivery.in_flight()
        ahead = p.history.unsaved + flight
        assert ahead <= max(H.CKPT, flight), (p.history.unsaved, flight)
        worst = max(worst, ahead)
    assert worst >= 5 and p.history.sseq > 10


def test_snapshot_layout_matches_what_recovery_reads():
    p, _, _ = make()
    cmd(p, "bolus", mU=1000)
    run(p, 3)
    p.history.save(p)
    raw = p.storage.files["s%d" % ((p.history.sseq - 1) // SPER)]
    off = len(raw) - SREC
    v = struct.unpack_from(H.LOGS["s"][3], raw, off)
    assert v[0] == p.history.sseq and v[1] == p.history.seq and v[2] == p.uptime_s
    assert v[11:13] == (p.nb_req, p.nb_done) and v[13] == p.nb_id and v[12] > 0
    assert struct.unpack_from("<H", raw, off + 128)[0] == crc16(raw, off, off + 128)


# ---- the storage HAL --------------------------------------------------------------------------------
def _tmpdir(name):
    root = "/tmp/basalt-mpy-" + name
    try:
        for f in os.listdir(root):
            os.remove(root + "/" + f)
    except OSError:
        pass
    return root


def test_filestore_append_read_list_remove():
    fs = FileStore(_tmpdir("fs"))
    fs.append("h0", b"abc")
    fs.append("h0", bytearray(b"def"))
    buf = bytearray(4)
    assert fs.readinto("h0", 2, buf) == 4 and buf == bytearray(b"cdef")
    assert fs.readinto("h0", 6, buf) == 0 and fs.readinto("nope", 0, buf) == 0
    fs.write_atomic("settings.json", [b"{", b"}"])
    assert sorted(fs.listdir()) == ["h0", "settings.json"]
    fs.remove("h0")
    fs.remove("h0")  # gone already: nothing happens
    assert fs.listdir() == ["settings.json"] and fs.read("settings.json") == b"{}"


def test_a_power_cut_tears_the_write_at_the_byte_and_stops_dead():
    root = _tmpdir("cut")
    fs = FileStore(root)
    fs.write_atomic("settings.json", b"old settings")
    fs.cut = 10
    fs.append("h0", b"12345")  # 5 of the 10 bytes
    e = raises(SystemExit, fs.append, "h0", b"abcdefgh")
    assert e.args == (4,) and fs.read("h0") == b"12345abcde"  # torn at the 10th byte
    fs.cut = 3
    raises(SystemExit, fs.write_atomic, "settings.json", [b"new ", b"settings"])
    assert fs.read("settings.json") == b"old settings"  # the rename never happened
    fs.cut = 0
    raises(SystemExit, fs.append, "h1", b"x")
    assert fs.read("h1") == b""  # 0 bytes of it: the file exists, empty


class RamBlocks:
    """A flash chip in RAM for littlefs (os.VfsLfs2): 4 KB erase blocks; counts programs/erases."""

    def __init__(self, blocks):
        self.data = bytearray(4096 * blocks)
        self.erases = self.progs = 0

    def readblocks(self, n, buf, off=0):
        a = n * 4096 + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:  # whole-block write (erase + program)
            self.erases += 1
            off = 0
        a = n * 4096 + off
        self.data[a:a + len(buf)] = buf
        self.progs += 1

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // 4096
        if op == 5:
            return 4096
        if op == 6:
            self.erases += 1
            return 0
        return 0


def test_the_logs_work_on_littlefs():
    dev = RamBlocks(20)
    os.VfsLfs2.mkfs(dev)
    os.mount(os.VfsLfs2(dev), "/lfs")
    try:
        p, _, _ = make(reservoir_mu=100000)
        p.storage = FileStore("/lfs/data")
        for i in range(PER + 5):
            p.record(RESUME, i)
        cmd(p, "bolus", mU=500)
        run(p, 30)
        p.history.save(p)
        q, _, _ = reboot(p)
        assert records(q, type=BOOT)[0][-1][0] == p.history.seq + 1
        assert q.basal_steps == p.basal_steps and q.bolus_steps == p.bolus_steps
        assert sorted(q.storage.listdir())[:2] == ["h0", "h1"]
    finally:
        os.umount("/lfs")


# ---- recovery at boot --------------------------------------------------------------------------------
def test_a_torn_last_record_is_dropped_and_reported():
    p, _, _ = make()
    n = p.history.seq
    st = p.storage
    st.files["h0"] = st.files["h0"] + b"\x07" * 11  # an append the power cut tore
    q, _, _ = reboot(p)
    assert len(st.files["h0"]) % REC == 0
    recs, _ = records(q, since=n)
    kinds = [(x[2], x[3], x[4]) for x in recs]
    assert kinds[0] == (BOOT, 1, 0) and kinds[1] == (REPAIR, n + 1, 1)
    assert recs[0][0] == n + 1  # the torn record's seq goes to the next record
    assert "unexpected_restart" in alarms(q)


def test_a_cut_inside_the_first_record_of_a_segment_keeps_the_oldest():
    # The ring is full; the first append to a new segment is torn before the oldest was dropped.
    p, _, _ = bare()
    for i in range(PER * SEGS):
        p.record(RESUME, i)
    p.storage.files["h%d" % SEGS] = b"\x01" * 7
    q, _, _ = reboot(p)
    since = 0
    while since < q.history.seq:  # every record readable: none lost, none reported corrupt
        r = cmd(q, "history", since=since, limit=32)
        assert "skipped_corrupt" not in r and r["oldest"] == PER + 1  # the boot record dropped h0
        since = r["next"]
    recs = cmd(q, "history", since=PER * SEGS)["records"]
    assert recs[0][2:] == (BOOT, 1, 0) and recs[1][2:] == (REPAIR, PER * SEGS + 1, 1)  # (tuples: JSON lists)
    assert "h0" not in q.storage.files  # dropped now that segment SEGS holds a record


def test_a_corrupt_middle_record_is_reported_once():
    p, _, _ = make()
    st = p.storage
    raw = bytearray(st.files["h0"])
    raw[REC + 5] ^= 0xFF
    st.files["h0"] = bytes(raw)
    q, _, _ = reboot(p)
    recs, r = records(q)
    assert r["skipped_corrupt"] == [2]
    assert [(x[2], x[3], x[4]) for x in recs if x[2] == REPAIR] == [(REPAIR, 2, 2)]
    q2, _, _ = reboot(q)
    recs, _ = records(q2)
    assert len([x for x in recs if x[2] == REPAIR]) == 1  # not reported again


def test_a_running_bolus_is_interrupted_not_resumed():
    p, m, _ = make([[0, 1000]])
    cmd(p, "bolus", mU=2000, ext_mU=1000, minutes=60)
    run(p, 20)
    p.history.sync(p, 0)
    done, xdone = p.nb_done, p.xb_done
    q, m2, _ = reboot(p)
    assert q.nb_req == 0 and q.xb_req == 0 and q.state == "running"
    recs, _ = records(q, type=BOLUS_INTERRUPTED)
    assert [x[4] for x in recs] == [400, -200]  # requested; delivered as of the newest snapshot:
    assert done + xdone - H.CKPT <= recs[0][3] + recs[1][3] <= done + xdone  # at most CKPT steps behind
    assert {"unexpected_restart", "bolus_interrupted"} <= set(alarms(q))
    run(q, 60)
    assert q.bolus_steps == recs[0][3] + recs[1][3] and m2.total() <= 4  # basal only: a step per 18 s


def test_suspended_stays_suspended_and_temp_basal_goes_on():
    p, _, _ = make([[0, 1000]])
    cmd(p, "temp_basal", percent=50, minutes=60)
    run(p, 600)
    p.history.save(p)
    q, _, _ = reboot(p)
    assert q.state == "running" and q.tb_end == p.tb_end and q.tb_pct == 50 and q.uptime_s == p.uptime_s
    assert q.basal_rate() == 500 and q.win.hour_sum == p.win.hour_sum
    cmd(q, "suspend")
    q2, _, _ = reboot(q)
    assert q2.state == "suspended" and q2.reason == 1


def test_a_clean_shutdown_raises_no_alarm_and_the_clock_goes_on():
    p, _, _ = make()
    cmd(p, "time_set", local_s=1000000)
    run(p, 100)
    overlay.call("recover", "shutdown", p)
    q, _, _ = reboot(p)
    assert alarms(q) == [] and q.local_s() == 1000100 and q.state == "running"
    recs, _ = records(q, type=BOOT)
    assert (recs[-1][3], recs[-1][4]) == (1, 1)
    q2, _, _ = reboot(q, "wdt")
    assert alarms(q2) == ["unexpected_restart"] and records(q2, type=BOOT)[0][-1][3] == 2


def test_records_after_the_snapshot_are_replayed():
    # A cut between a record and the snapshot that follows it: the record wins.
    p, _, _ = make([[0, 0]])
    cmd(p, "bolus", mU=1000)
    p.history.save(p)
    run(p, 10)
    cmd(p, "bolus_cancel")  # BOLUS_CANCEL with the exact amount; the cut comes before any snapshot
    cmd(p, "suspend")
    q, _, _ = reboot(p)
    assert q.state == "suspended" and q.bolus_steps == p.bolus_steps and q.reservoir_steps == p.reservoir_steps
    assert not records(q, type=BOLUS_INTERRUPTED)[0]  # it was cancelled, not interrupted


def test_no_snapshot_but_the_whole_history_rebuilds_the_state():
    p, _, _ = make()
    st = p.storage
    for k in [k for k in st.files if k[0] == "s"]:
        del st.files[k]
    q, _, _ = reboot(p)
    assert q.res_state == "ready" and q.state == "running" and q.reservoir_steps == p.reservoir_steps
    assert "fault" not in alarms(q)


def test_a_part_filled_cannula_is_never_filled_again():
    p, _, _ = bare()
    cmd(p, "rewind")
    p.tick()
    cmd(p, "reservoir_insert", mU=100000)
    cmd(p, "prime_start")
    cmd(p, "prime_stop")
    cmd(p, "cannula_fill", mU=300)
    p.history.save(p)
    for _ in range(3):
        p.tick()
        p.history.sync(p, 0)
    assert p.res_state == "filling"
    q, _, _ = reboot(p)
    assert q.res_state == "ready" and q.state == "suspended"
    recs, _ = records(q, type=PRIME)
    assert recs[-1][4] == 2 and p.prime_run - H.CKPT <= recs[-1][3] <= p.prime_run


def test_the_limit_windows_survive_a_restart():
    p, _, _ = make([[0, 0]], limits={"max_hour_mU": 3000, "max_bolus_mU": 3000})
    cmd(p, "bolus", mU=2500)
    run(p, 120)
    p.history.sync(p, 0)
    q, _, _ = reboot(p)
    assert q.win.hour_sum >= 500
    e = raises(Exception, cmd, q, "bolus", mU=1000)
    assert e.code == "limit"


def test_lost_state_comes_up_suspended_with_a_fault():
    p, _, _ = bare()
    for i in range(PER * (SEGS + 1)):
        p.record(RESUME, i)  # the ring has dropped record 1, and there is no journal
    q, _, _ = reboot(p)
    assert q.state == "suspended" and q.res_state == "none" and "fault" in alarms(q)


def test_a_new_pump_writes_nothing_at_boot():
    p, _, _ = bare()
    q, _, _ = reboot(p)
    assert q.history.seq == 0 and q.storage.files == {} and alarms(q) == []
    q2, _, _ = reboot(p, settings_ok=False)
    assert alarms(q2) == ["settings_lost"]

