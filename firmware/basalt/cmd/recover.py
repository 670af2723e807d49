# Recovery at boot and the orderly shutdown (docs/persistence.md). An overlay: it runs once, so
# it costs no resident RAM.
#
# boot: check both flash logs (a torn last record is dropped, a corrupt one is skipped - never
# trusted - and both are reported in the history), restore the settings, then the therapy state
# from the newest journal snapshot plus the history records written after it, and come up in a
# safe state: a bolus that was running is not resumed (recorded as interrupted with what it had
# delivered, and the user alerted); basal continues only if the pump was running; a suspended
# pump stays suspended; a reservoir change in progress never repeats a fill; every alarm that
# was active is raised again; and "unexpected_restart" is raised unless the last shutdown was the
# orderly one.
import struct

from micropython import const

from basalt.cmd.history import oldest, records
from basalt.core import history as H
from basalt.core import pump as P

# history record types: the ones recovery writes, then the ones it reads (core/history.py)
_BOOT = const(19)  # a = reset cause (1 power, 2 watchdog, 3 soft), b = 1 after a clean shutdown
_REPAIR = const(20)  # a = the bad record's seq, b = 1 torn history record dropped, 2 corrupt one skipped,
# 3 torn journal snapshot dropped, 4 corrupt snapshot skipped
_BOLUS_INTERRUPTED = const(21)  # a = delivered steps (as last snapshotted), b = requested steps (b < 0: extended)
_TEMP_START = const(3)  # history record type (core/history.py)
_TEMP_END = const(4)  # history record type (core/history.py)
_BOLUS_REQUEST = const(5)  # history record type (core/history.py)
_BOLUS_DONE = const(6)  # history record type (core/history.py)
_BOLUS_CANCEL = const(7)  # history record type (core/history.py)
_PRIME = const(9)  # history record type (core/history.py)
_REWIND = const(10)  # history record type (core/history.py)
_SUSPEND = const(11)  # history record type (core/history.py)
_RESUME = const(12)  # history record type (core/history.py)
_ALARM = const(13)  # history record type (core/history.py)
_RESERVOIR = const(14)  # history record type (core/history.py)
_TIME_SET = const(15)  # history record type (core/history.py)
_LIMIT_HOLD = const(16)  # history record type (core/history.py)
_ALARM_CLEAR = const(17)  # history record type (core/history.py)


def _open(store, log):
    """Find a log's newest segment, cut off a torn (partial) last record, and remove segments
    the ring should already have dropped. Return (newest seq, seq of the torn record or 0).
    Nothing here reads a whole segment into RAM: the heap at boot has no room to spare."""
    size, per, segs = H.LOGS[log][0], H.LOGS[log][1], H.LOGS[log][2]
    ks = [int(n[1:]) for n in store.listdir() if n[:1] == log and n[1:].isdigit()]
    if not ks:
        return 0, 0
    top = max(ks)
    name = log + str(top)
    one = bytearray(1)
    lo, hi = 0, per  # whole records in the newest segment: the most whose last byte is there
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if store.readinto(name, mid * size - 1, one):
            lo = mid
        else:
            hi = mid - 1
    torn = 0
    if store.readinto(name, lo * size, one):  # an append the power cut tore: never acknowledged
        store.write_atomic(name, copy(store, name, lo * size))
        torn = top * per + lo + 1
    # The segment of the newest whole record decides what the ring keeps (a cut inside the first
    # append of a segment leaves it empty, and the oldest one must stay).
    k0 = (top * per + lo - 1) // per - segs
    for k in ks:
        if k <= k0:
            store.remove(log + str(k))
    return top * per + lo, torn


def copy(store, name, n):
    """The first n bytes of a file, in small chunks."""
    buf = bytearray(128)
    at = 0
    while at < n:
        k = store.readinto(name, at, buf)
        k = k if k < n - at else n - at
        yield bytes(buf[:k])
        at += k


def boot(pump, hal, settings_ok):
    """settings_ok: what loading the settings (cmd/settings.py, just before) returned."""
    st = pump.storage
    h = pump.history
    h.seq, torn = _open(st, "h")
    h.sseq, jtorn = _open(st, "s")
    rep = []  # _REPAIR records to write once the history is in order: (seq, how)
    if torn:
        rep.append((torn, 1))
    if jtorn:
        rep.append((jtorn, 3))
    snap = bytearray(H.LOGS["s"][0])
    s = h.sseq
    while s > 0 and s > h.sseq - 2 * H.LOGS["s"][1]:  # the newest intact snapshot
        if next(records(st, "s", s, s + 1, snap))[1] == 0:
            break
        rep.append((s, 4))
        s -= 1
    else:
        snap = None
    if not h.seq and snap is None:
        if not settings_ok:
            pump.alarm("settings_lost")
        return  # a new pump
    cause = hal.reset_cause() if hasattr(hal, "reset_cause") else "power"
    hseq = act = ack = fl = hour = day = iob = 0
    if snap is not None:
        p = pump
        (_, hseq, p.uptime_s, p.clock_offset_s, fl, p.reservoir_steps, p.plunger_steps, p.basal_steps,
         p.bolus_steps, p.prime_steps, p.extra_steps, p.nb_req, p.nb_done, p.nb_id, p.xb_req, p.xb_done,
         p.xb_dur, p.xb_start, p.xb_id, p.bolus_id, p.tb_end, p.tb_pct, p.tb_rate, p.tb_min, p.tb_steps,
         hour, day, iob, act, ack, p.prime_run, p.fill_target) = struct.unpack_from(H.LOGS["s"][3], snap)
        p.state = "running" if fl & 1 else "suspended"
        p.reason = fl >> 1 & 15
        p.res_state = H.RES[fl >> 5 & 7]
        p.holding = bool(fl & 512)
    # Replay the records written after the snapshot (a power cut between a record and the
    # snapshot that follows it: no train starts in between, see core/history.py), and look for
    # corrupt records not reported yet. With no snapshot at all the history must reach back to
    # record 1 (a new pump's first command was cut), or the therapy state is lost.
    lo = oldest(h.seq)
    lost = snap is None and lo > 1
    snap = None
    reported = []
    temp_new = False
    buf = bytearray(H.REC * 16)
    for seq, off in records(st, "h", lo, h.seq + 1, buf):
        if off < 0:
            rep.append((seq, 2))
            continue
        _, t, k, _, a, b = struct.unpack_from(H.FMT, buf, off)
        if k == _REPAIR and b == 2:
            reported.append(a)
        if seq <= hseq or lost:
            continue
        if t > pump.uptime_s:
            pump.uptime_s = t
        if k == _ALARM:
            act |= 1 << a
            ack &= ~(1 << a)
        elif k == _ALARM_CLEAR:
            act &= ~(1 << a)
            ack = ack | 1 << a if b == 1 else ack & ~(1 << a)
        elif k == _TEMP_START:
            pump.tb_pct, pump.tb_min, pump.tb_steps, pump.tb_end = a, b, 0, t + b * 60
            temp_new = True
        else:
            d = _replay(pump, k, a, b, t)
            hour += d
            day += d
            if k == _TEMP_END:
                temp_new = False
            else:
                iob += d
    buf = None
    # The safe state.
    news = []  # records of this recovery: (type, a, b)
    if lost:
        pump.res_state = "none"
        pump.state = "suspended"
    rs = pump.res_state
    if rs in ("priming", "filling"):  # a fill is never repeated: a part-filled cannula counts as filled
        news.append((_PRIME, pump.prime_run, 1 if rs == "priming" else 2))
        pump.res_state = "primed" if rs == "priming" else "ready"
        pump.prime_run = 0
    m = pump.mech
    told = None
    if pump.nb_req or pump.xb_req:  # never resumed: what it delivered is on record, the rest is not owed
        if pump.nb_req:
            news.append((_BOLUS_INTERRUPTED, pump.nb_done, pump.nb_req))
        if pump.xb_req:
            news.append((_BOLUS_INTERRUPTED, pump.xb_done, -pump.xb_req))
        told = "delivered %d of %d mU (normal), %d of %d mU (extended)" % (
            m.mu_from_steps(pump.nb_done), m.mu_from_steps(pump.nb_req),
            m.mu_from_steps(pump.xb_done), m.mu_from_steps(pump.xb_req))
        pump.nb_req = pump.nb_done = pump.xb_req = pump.xb_done = 0
    if temp_new:  # started but never snapshotted: its command was never acknowledged
        news.append((_TEMP_END, 0, 3))
        pump.tb_end = 0
    if not pump.tb_end:
        pump.tb_pct = -1
    if pump.state == "running" and (pump.res_state != "ready" or not pump.reservoir_steps):
        pump.state = "suspended"
    # The limit windows and insulin on board: what was delivered in the last hour, day and 8 h
    # is counted as delivered now - later than it was, so the limits can only tighten.
    w = pump.win
    u = pump.uptime_s // 60
    w.minute = u
    w.hour[u % len(w.hour)] = w.hour_sum = hour
    w.day[u // 15 % len(w.day)] = w.day_sum = day
    w.bolus5[u // 5 % len(w.bolus5)] = iob
    pump.user_t = pump.uptime_s
    clean = fl & 256 and hseq == h.seq  # nothing was written after the shutdown's snapshot
    pump.record(_BOOT, 2 if cause == "wdt" else 3 if cause == "soft" else 1, 1 if clean else 0)
    for s, b in rep:
        if b != 2 or s not in reported:
            pump.record(_REPAIR, s, b)
    for r in news:
        pump.record(r[0], r[1], r[2])
    if not settings_ok:
        pump.alarm("settings_lost")
    if not clean:
        pump.alarm("unexpected_restart", cause)
    for c in range(1, len(P.ALARMS)):
        if (act | ack) >> c & 1:
            pump.alarm(P.ALARMS[c])
    if told:
        pump.alarm("bolus_interrupted", told)
    if lost:
        pump.alarm("fault", "therapy state lost")
    h.save(pump)


def _replay(pump, kind, a, b, t):
    """Apply a history record written at pump time t after the snapshot; return the therapy
    steps it shows were delivered beyond the snapshot."""
    p = pump
    d = 0
    if kind == _BOLUS_REQUEST:
        p.bolus_id += 1
        if a:
            p.nb_req, p.nb_done, p.nb_id = a, 0, p.bolus_id
        if b:
            p.xb_req, p.xb_done, p.xb_id, p.xb_start = b, 0, p.bolus_id, t
    elif kind in (_BOLUS_DONE, _BOLUS_CANCEL, _BOLUS_INTERRUPTED):
        if (b == 1) if kind == _BOLUS_DONE else (b > 0):
            d = a - p.nb_done if p.nb_req else 0
            p.nb_req = p.nb_done = 0
        else:
            d = a - p.xb_done if p.xb_req else 0
            p.xb_req = p.xb_done = 0
        if d > 0:
            p.bolus_steps += d
    elif kind == _TEMP_END:
        d = a - p.tb_steps if p.tb_end else 0
        if d > 0:
            p.basal_steps += d
        p.tb_end = 0
    elif kind == _SUSPEND:
        p.state, p.reason = "suspended", a
    elif kind == _RESUME:  # accepted only with the reservoir ready (a 0 U cannula fill records nothing)
        p.state, p.reason, p.res_state = "running", 0, "ready"
    elif kind == _RESERVOIR:
        p.reservoir_steps, p.res_state = a, "inserted"
    elif kind == _REWIND:
        p.reservoir_steps, p.res_state, p.prime_run = 0, "rewound", 0
        if p.plunger_steps > 0:
            p.plunger_steps = 0
    elif kind == _PRIME:
        n = a - p.prime_run
        if n > 0:
            p.prime_steps += n
            p.plunger_steps += n
            p.reservoir_steps = p.reservoir_steps - n if n < p.reservoir_steps else 0
        p.res_state = "primed" if b == 1 else "ready"
        p.prime_run = 0
    elif kind == _TIME_SET:
        p.clock_offset_s = a - t
    elif kind == _LIMIT_HOLD:
        p.holding = True
    if d <= 0:
        return 0
    p.plunger_steps += d
    p.reservoir_steps = p.reservoir_steps - d if d < p.reservoir_steps else 0
    return d


def shutdown(pump):
    """The orderly power-off: stop the motor and account it, end any bolus as cancelled (so none
    is left to interrupt), and mark the journal clean."""
    pump.settle(True)
    if pump.nb_req:
        pump.bolus_end(1, "cancelled")
    if pump.xb_req:
        pump.bolus_end(2, "cancelled")
    pump.history.save(pump, 1)
