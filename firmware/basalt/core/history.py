# The event history and the therapy-state journal: two append-only logs in flash, through the
# storage HAL (docs/persistence.md). Each is a ring of segment files of fixed-size records, each
# record with its sequence number and a CRC: record s (from 1) of log "h" lives in file "h<k>",
# k = (s-1) // per, at byte ((s-1) % per) * size (LOGS gives size and per), so a reader finds any
# record without an index. Opening a new segment drops the oldest one - never the newest.
#   history   seq u32 | t u32 (pump s) | type u8 | 0 u8 | a i32 | b i32 | crc u16     = 20 bytes, LE
#   journal   seq u32 | history seq u32 | 30 x i32 of pump state (save()) | crc u16  = 130 bytes
# A record is stored (littlefs commits on close) before the command or tick that wrote it goes
# on, so whatever the host saw acknowledged is in flash. One that storage refuses (flash full or
# failing) is not counted: the next takes its seq, so the layout stays exact. The journal holds
# snapshots of the therapy state (basalt/cmd/recover.py restores the newest at boot): written
# after every command, after any record, and before the motor would get more than CKPT steps
# past the last snapshot - the most delivery a power cut can leave unaccounted. Pump time t
# goes on across restarts (the clock stops while the power is off).
import struct

from micropython import const

from basalt.lib import crc16

REC = const(20)
FMT = "<IIBBii"
# log -> (record bytes, records per segment, segments kept, snapshot format): the history keeps
# its newest 1920..2048 records (40 KB); the journal 30..60 snapshots, one 4 KB block a segment
LOGS = {"h": (REC, 128, 16), "s": (130, 30, 2, "<II30i")}
CKPT = const(10)  # steps: 0.05 U on the reference mechanism

# Record types (the host's names: host/render.py RECORD_NAMES). Each module that writes or reads
# one defines it as a private constant, which costs no heap (tests/test_record_types.py checks
# they agree); a and b carry the amounts actually delivered, in steps, where there are any:
#    1 profile_select  a = profile index
#    2 profile_set     a = profile index, b = daily total (steps)
#    3 temp_start      a = percent (or -1), b = minutes
#    4 temp_end        a = basal steps delivered during it, b = 1 ended, 2 cancelled, 3 interrupted (restart)
#    5 bolus_request   a = normal steps, b = extended steps
#    6 bolus_done      a = delivered steps, b = kind (1 normal, 2 extended)
#    7 bolus_cancel    a = delivered steps, b = requested steps (b < 0: extended)
#    8 limit_refused   a = limit code (1 hour, 2 day, 3 bolus, 4 basal), b = amount asked in mU (mU/h for 4)
#    9 prime           a = steps primed, b = 1 tubing, 2 cannula
#   10 rewind          a = steps retracted
#   11 suspend         a = reason code
#   12 resume
#   13 alarm           a = alarm code, b = priority (3 high, 2 medium, 1 low)
#   14 reservoir       a = fill steps
#   15 time_set        a = new local time (s since 2000), b = old
#   16 limit_hold      a = steps withheld by the delivery backstop
#   17 alarm_clear     a = alarm code, b = 1 acknowledged (still active), 2 cleared
#   18 backoff         a = steps retracted to relieve an occlusion
#   19 boot, 20 repair, 21 bolus_interrupted: written only at boot (cmd/recover.py)
#   22 cgm (a = mg/dL, b = time offset min), 23 cgm_rejected (a = reason, b = time offset): cgm/client.py

# reservoir workflow states, in the journal's code order (core/pump.py names them)
RES = ("none", "rewinding", "rewound", "inserted", "priming", "primed", "filling", "ready")


class History:
    def __init__(self):
        self.buf = bytearray(REC)
        self.snap = bytearray(130)
        self.seq = 0  # newest history record (0: none)
        self.sseq = 0  # newest journal snapshot
        # motor steps accounted since the last snapshot (core/pump.py settle); a record adds
        # CKPT + 1, so the next sync() writes a snapshot
        self.unsaved = 0

    def add(self, store, t, kind, a=0, b=0):
        """Append a record; return its seq."""
        r = self.buf
        struct.pack_into(FMT, r, 0, self.seq + 1, t, kind, 0, a, b)
        struct.pack_into("<H", r, 18, crc16(r, 0, 18))
        self.unsaved += CKPT + 1
        if self.write(store, "h", self.seq, r):
            self.seq += 1
        return self.seq

    def write(self, store, log, seq, data):
        """Append record seq+1 of a log; the first record of a segment drops the oldest segment."""
        if store is None:
            return True
        g = LOGS[log]
        k = seq // g[1]
        try:
            store.append(log + str(k), data)
            if seq % g[1] == 0 and k >= g[2]:
                store.remove(log + str(k - g[2]))
            return True
        except Exception:  # noqa: BLE001 - flash full or failing: never take therapy down with it
            return False

    def sync(self, pump, n):
        """Snapshot the pump's state if a record was written since the last snapshot, or if the
        motor, about to be given n more steps, would otherwise be more than CKPT past it."""
        if self.unsaved + n > CKPT:
            self.save(pump)

    def save(self, pump, kind=0):
        """Append a journal snapshot of the pump (kind 1: the orderly shutdown's last one). The
        fields, in order, are the ones basalt/cmd/recover.py restores."""
        p = pump
        act = ack = 0
        st = p.alarm_st
        for i in range(len(st)):
            if st[i] == 1:
                act |= 1 << i
            elif st[i]:
                ack |= 1 << i
        w = p.win
        s = self.snap
        struct.pack_into(
            LOGS["s"][3], s, 0, self.sseq + 1, self.seq, p.uptime_s, p.clock_offset_s,
            (p.state == "running") | p.reason << 1 | RES.index(p.res_state) << 5 | kind << 8 | p.holding << 9,
            p.reservoir_steps, p.plunger_steps, p.basal_steps, p.bolus_steps, p.prime_steps, p.extra_steps,
            p.nb_req, p.nb_done, p.nb_id, p.xb_req, p.xb_done, p.xb_dur, p.xb_start, p.xb_id, p.bolus_id,
            p.tb_end, p.tb_pct, p.tb_rate, p.tb_min, p.tb_steps, w.hour_sum, w.day_sum, sum(w.bolus5),
            act, ack, p.prime_run, p.fill_target)
        struct.pack_into("<H", s, 128, crc16(s, 0, 128))
        if self.write(p.storage, "s", self.sseq, s):
            self.sseq += 1
        self.unsaved = 0  # failed or not: retried at the next change, not on every loop
