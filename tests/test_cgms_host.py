"""CGMS codec under CPython: the reference vectors, every MicroPython test of tests/mpy/test_cgms.py
run again here, and a seeded fuzz test checked against an independent reference decoder.

The codec (firmware/basalt/cgm) is the same source on the pump and on the host; this file proves
the CPython side and hammers the parser with tens of thousands of random and mutated packets; and
it measures the pump's path (basalt.cgm.rx, imported for one notification and dropped) in the
simulator's build at 64 KB.
"""
import importlib.util
import random
import struct
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from basalt.cgm import cgms, sfloat, validity
from basalt.cgm.cgms import Reading
from basalt.cgm.validity import Validator
from basalt.lib import crc16

MPY_DIR = Path(__file__).parent / "mpy"


def _load_mpy_tests():
    sys.path.insert(0, str(MPY_DIR))  # for `from mpyunit import raises`
    try:
        spec = importlib.util.spec_from_file_location("mpy_test_cgms", MPY_DIR / "test_cgms.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(MPY_DIR))


MPY = _load_mpy_tests()


@pytest.mark.parametrize("name", sorted(n for n in dir(MPY) if n.startswith("test_")))
def test_mpy_suite_under_cpython(name):
    getattr(MPY, name)()


# ---- the reference vectors, stated again here ------------------------------------------------
def test_crc_123456789():
    assert crc16(b"123456789") == 0x6F91


@pytest.mark.parametrize("raw,value", [(0x100C, "120"), (0xE4D2, "12.34"), (0xF002, "0.2"),
                                       (0xF3E5, "99.7"), (0xFE94, "-36.4")])
def test_sfloat_vectors(raw, value):
    exact = Fraction(value)
    assert sfloat.scaled(raw, 2) == exact * 100
    assert sfloat.to_float(raw) == pytest.approx(float(exact))
    assert ref_sfloat(raw) == exact


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801])
def test_sfloat_specials(raw):
    assert sfloat.scaled(raw) is None and sfloat.to_float(raw) is None and ref_sfloat(raw) is None


def test_record_vectors():
    rec = Reading()
    assert cgms.parse_record(bytes.fromhex("06000C100600"), rec) == 6
    assert (rec.err, rec.glucose, rec.time_offset) == (0, 1200, 6)
    full = bytes.fromhex("0FE3D2E405000214FF02F0E5F38E3F")
    assert cgms.parse_record(full, rec, e2e=True) == 15
    assert (rec.err, rec.glucose, rec.time_offset, rec.status, rec.trend, rec.quality, rec.crc) == \
        (0, 123, 5, 0xFF1402, 2, 997, 0x3F8E)
    bad = bytes.fromhex("08000C1006 00586F".replace(" ", ""))
    assert cgms.parse_record(bad, rec, e2e=True) == 8 and rec.err == cgms.E_CRC
    v = Validator()
    v.set_session(0)
    assert v.check(rec, 360) == validity.R_CRC


def test_named_constants():
    assert [getattr(cgms, n) for n in ("FL_TREND", "FL_QUALITY", "FL_WARNING", "FL_CALTEMP", "FL_STATUS")] \
        == [0x01, 0x02, 0x20, 0x40, 0x80]
    assert cgms.A_SENSOR_MALFUNCTION == 1 << 3 and cgms.A_CAL_REQUIRED == 1 << 11
    assert cgms.A_ABOVE_DEVICE_RANGE == 1 << 23 and cgms.F_E2E_CRC == 1 << 12
    assert cgms.UUID_MEASUREMENT == 0x2AA7 and cgms.UUID_RACP == 0x2A52
    assert sfloat.NAN == 0x07FF and validity.R_STALE == 12
    with pytest.raises(AttributeError):
        cgms.NOT_A_NAME  # noqa: B018
    from basalt.cgm.cgms import A_SESSION_STOPPED  # module __getattr__ serves from-imports too
    assert A_SESSION_STOPPED == 1


# ---- independent reference decoder (slices, struct, Fraction: nothing shared with the codec) --
def ref_crc(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def ref_sfloat(raw):
    m, e = raw & 0xFFF, raw >> 12
    if 0x7FE <= m <= 0x802:
        return None
    m = m - 0x1000 if m >= 0x800 else m
    e = e - 16 if e >= 8 else e
    return Fraction(m) * Fraction(10) ** e


def ref_tenths(raw):
    v = ref_sfloat(raw)
    if v is None:
        return None
    t = v * 10
    q = (abs(t) + Fraction(1, 2)).__floor__()
    q = min(q, sfloat.SAT)
    return q if t >= 0 else -q


def ref_parse(buf, e2e):
    """List of dicts, one per record, with the same stop/continue rules as the spec'd codec."""
    out, off = [], 0
    while True:
        if off >= len(buf):
            out.append({"err": cgms.E_SIZE})
            return out
        size = buf[off]
        if size < 6 or off + size > len(buf):
            out.append({"err": cgms.E_SIZE})
            return out
        fl = buf[off + 1]
        octs = [f for f in (0x80, 0x40, 0x20) if fl & f]
        need = 6 + len(octs) + (2 if fl & 1 else 0) + (2 if fl & 2 else 0)
        has_crc = (size == need + 2) if e2e == cgms.E2E_AUTO else bool(e2e)
        if size != need + (2 if has_crc else 0):
            out.append({"err": cgms.E_LAYOUT})
            return out
        r = buf[off:off + size]
        err = 0
        if has_crc and ref_crc(r[:-2]) != struct.unpack_from("<H", r, size - 2)[0]:
            err = cgms.E_CRC
        g, to = struct.unpack_from("<HH", r, 2)
        p, status = 6, 0
        for f, shift in ((0x80, 0), (0x40, 8), (0x20, 16)):
            if fl & f:
                status |= r[p] << shift
                p += 1
        trend = quality = None
        if fl & 1:
            trend = ref_tenths(struct.unpack_from("<H", r, p)[0])
            p += 2
        if fl & 2:
            quality = ref_tenths(struct.unpack_from("<H", r, p)[0])
        out.append({"err": err, "start": off, "size": size, "glucose_raw": g, "glucose": ref_tenths(g),
                    "time_offset": to, "status": status, "trend": trend, "quality": quality,
                    "has_crc": has_crc})
        off += size  # a CRC error does not stop the notification
        if off >= len(buf):
            return out


def _snap(rec):
    if rec.err in (cgms.E_SIZE, cgms.E_LAYOUT):
        return {"err": rec.err}
    return {"err": rec.err, "start": rec.start, "size": rec.size, "glucose_raw": rec.glucose_raw,
            "glucose": rec.glucose, "time_offset": rec.time_offset, "status": rec.status,
            "trend": rec.trend, "quality": rec.quality, "has_crc": rec.crc >= 0}


# ---- fuzz --------------------------------------------------------------------------------
SPECIALS = (0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801)
ANN_BLOCKING = (1 << 0) | (1 << 3) | (1 << 11) | validity.BLOCK_DEFAULT


def _rand_sfloat(rng):
    k = rng.random()
    if k < 0.15:
        return rng.choice(SPECIALS) | (rng.randrange(16) << 12 if rng.random() < 0.3 else 0)
    if k < 0.55:
        return sfloat.from_tenths(rng.randrange(0, 5000))  # mostly plausible glucose
    if k < 0.65:
        return sfloat.from_int(rng.choice((10, 38, 39, 40, 400, 401, 11, 0, 5)))
    return rng.randrange(0x10000)


def _rand_record(rng, e2e, offset):
    st = 0
    for octet in range(3):
        if rng.random() < 0.3:
            st |= (rng.randrange(256) if rng.random() < 0.5 else 1 << rng.randrange(8)) << (8 * octet)
    return cgms.record(_rand_sfloat(rng), offset, st, _rand_sfloat(rng) if rng.random() < 0.5 else -1,
                       _rand_sfloat(rng) if rng.random() < 0.5 else -1, e2e,
                       rng.choice((0, 0, 0, 0x20, 0x40, 0x80, 0xE0)))


def _mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randrange(1, 4)):
        k = rng.randrange(6)
        if k == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif k == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif k == 2 and b:
            del b[rng.randrange(len(b)):]
        elif k == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif k == 4 and b:
            b[0] = rng.choice((0, 1, 5, 6, 7, 8, 15, 16, 255, len(b), len(b) + 1))
        elif k == 5 and len(b) > 1:
            b[1] = rng.randrange(256)
    return bytes(b)


def _packets(rng, n):
    for i in range(n):
        e2e = (False, True, cgms.E2E_AUTO)[i % 3]
        kind = rng.random()
        if kind < 0.2:
            pkt = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 48)))
        else:
            enc_crc = e2e if e2e != cgms.E2E_AUTO else rng.random() < 0.5
            to = rng.randrange(0x10000) if rng.random() < 0.1 else rng.randrange(2000)
            recs = []
            for _ in range(rng.randrange(1, 4)):
                recs.append(_rand_record(rng, enc_crc, to))
                to = (to + rng.choice((-1, 0, 1, 1, 5, 5))) & 0xFFFF  # repeats and reversals too
            pkt = b"".join(recs)
            if kind < 0.7:
                pkt = _mutate(rng, pkt)
        yield pkt, e2e


def test_fuzz_parser_and_validator():
    rng = random.Random(0xBA5A17)
    rec = Reading()
    v = Validator()
    seen = []
    stats = {"packets": 0, "records": 0, "accepted": 0, "crc_rejected": 0}
    outcome = [0] * 15

    def cb(r):
        seen.append(_snap(r))
        # pump clock: the reading's own time plus a skew of -7..+15 min, so the time rules fire too
        now = 60 * r.time_offset + rng.randrange(-420, 900) if r.err == 0 else 0
        why = v.check(r, now)
        outcome[why] += 1
        if why == validity.R_OK:
            stats["accepted"] += 1
            # never accepted: bad CRC, special value, out-of-range or oref0 error value, blocking status
            raw = bytes(pkt[r.start:r.start + r.size])
            if e2e is True or (e2e == cgms.E2E_AUTO and r.crc >= 0):
                assert ref_crc(raw[:-2]) == raw[-2] | raw[-1] << 8
            val = ref_sfloat(raw[2] | raw[3] << 8)
            assert val is not None and 40 <= val <= 400 and val > 10 and val != 38, (raw.hex(), val)
            assert not r.status & ANN_BLOCKING
            assert -300 <= now - 60 * r.time_offset <= 720
        if r.err == cgms.E_CRC:
            stats["crc_rejected"] += 1
            assert why == validity.R_CRC

    for pkt, e2e in _packets(rng, 30000):
        stats["packets"] += 1
        v.set_session(0)
        seen.clear()
        n = cgms.parse(pkt, rec, cb, e2e)
        assert n == len(seen)
        stats["records"] += n
        assert seen == ref_parse(pkt, e2e), (pkt.hex(), e2e)
    assert sum(v.counts) == sum(outcome) == stats["records"]
    assert list(v.counts) == outcome
    # the fuzz is meaningful: every reason fired except "no session" (a session is always set)
    for why in range(15):
        assert (outcome[why] > 0) == (why != validity.R_NO_SESSION), (why, outcome)
    print(stats, outcome)
    assert stats["accepted"] > 1000 and stats["crc_rejected"] > 1000, stats


def test_fuzz_sfloat_against_reference():
    rng = random.Random(11073)
    for raw in list(range(0x10000))[::7] + [rng.randrange(0x10000) for _ in range(5000)]:
        assert sfloat.scaled(raw) == ref_tenths(raw), hex(raw)
        assert (sfloat.special(raw) != 0) == (ref_sfloat(raw) is None)
    for _ in range(5000):
        t = rng.randrange(-204500, 204500)
        raw = sfloat.from_tenths(t)
        exact = Fraction(t, 10)
        got = ref_sfloat(raw)
        # one rounding step, half a unit of the chosen exponent at most
        e = (raw >> 12) - 16 if raw >> 12 >= 8 else raw >> 12
        assert abs(got - exact) <= Fraction(10) ** e / 2, (t, hex(raw))


def test_validator_never_raises_on_odd_records():
    v = Validator()
    v.set_session(0)
    rec = Reading()
    rec.err = 99  # unknown error codes are malformed, not accepted
    assert v.check(rec, 0) == validity.R_MALFORMED


# ---- the pump's heap: basalt.cgm.rx imported for one notification, then dropped ----------------
PUMP_PATH = """
import gc, sys
for n in RESIDENT:  # what the pump has loaded anyway (basalt.lib's crc16, the names it interned)
    __import__(n)
buf = bytes.fromhex('0FE3D2E405000214FF02F0E5F38E3F' '08000C100600596F' '08000C100B00' '21DF')
def drop():
    for k in [k for k in sys.modules if k.startswith('basalt.cgm')]:
        del sys.modules[k]
    delattr(sys.modules['basalt'], 'cgm')
gc.collect(); a = gc.mem_alloc()
from basalt.cgm import rx
s = rx.state()
rx.reset(s, 0)
n = rx.parse(buf, s, None, True, 660)
gc.collect(); b = gc.mem_alloc()
del rx
drop()
gc.collect(); c = gc.mem_alloc()
from basalt.cgm import connect  # the pump's connection steps, with the client beside them
gc.collect(); d = gc.mem_alloc()
del connect
drop()
gc.collect(); e = gc.mem_alloc()
print(b - a, c - a, d - c, e - a, n, list(s[29:44]))
"""


def test_pump_path_heap_budget():
    """Parsing and validating one notification costs the pump at most ~4 KB while it runs (module,
    package, state array, names), and once the modules are dropped only the state array and the
    interned names stay (the array keeps no module alive). Same build and heap as the simulator."""
    import os
    import subprocess

    from hil.bench import RESIDENT
    from hil.build import build
    from hil.paths import micropython_binary

    tree = build("sim")
    resident = RESIDENT + ["basalt.core.cgm"]  # (the link's resident part, on a board with a radio)
    out = subprocess.run([micropython_binary(), "-X", "heapsize=64K", "-c", f"RESIDENT = {resident!r}\n" + PUMP_PATH],
                         capture_output=True, text=True, cwd=tree, env=dict(os.environ, MICROPYPATH="."), check=True)
    f = out.stdout.split()
    loaded, kept, conn_loaded, kept2, accepted = (int(x) for x in f[:5])
    print(f"\n[cgm] pump path: parse+validate loaded {loaded} B, kept after drop {kept} B; "
          f"connecting (client and its connection steps) loaded {conn_loaded} B, kept after both {kept2} B")
    assert accepted == 2  # 120 mg/dL at offsets 6 and 11; the first record is 12.34 mg/dL
    assert loaded <= 4096, loaded
    assert kept <= 768, kept  # the 44-int array (224 B) and the names
    assert conn_loaded <= 4608, conn_loaded  # (their names included: interned on first use here)
    assert kept2 <= 1024, kept2


FEATURES = ["00100059FFFF", "001000590000", "000000590000", "0010", "00000011", "FF1FFF59FFFF", "001000591234"]


def test_the_pumps_feature_check_is_conns():
    """basalt/cgm/connect.py checks the CGM Feature inline (connecting loads neither conn nor the
    codec): the same verdict as the shared decoder, conn.feature, for good, bad and short values."""
    import os
    import subprocess

    from basalt.cgm.conn import feature

    from hil.build import build
    from hil.paths import micropython_binary

    good = bytes.fromhex("00100059")
    c = crc16(good)
    vals = FEATURES + [(good + bytes((c & 255, c >> 8))).hex()]
    out = subprocess.run([micropython_binary(), "-c", "from basalt.cgm.connect import feature\n"
                          f"print([feature(memoryview(bytes.fromhex(h))) for h in {vals!r}])"],
                         capture_output=True, text=True, cwd=build("sim"), env=dict(os.environ, MICROPYPATH="."),
                         check=True)
    pump = eval(out.stdout)
    host = [-1 if feature(bytes.fromhex(h)) < 0 else (1 if feature(bytes.fromhex(h)) & 0x1000 else 0) for h in vals]
    assert pump == host and 1 in pump and 0 in pump and -1 in pump, (pump, host)


def test_the_pumps_inline_racp_request_is_conns():
    # basalt/cgm/client.py builds its RACP range request inline (no conn import on the pump's
    # backfill path): the same bytes as the shared builder.
    from basalt.cgm.conn import racp_request

    for lo, hi in ((0, 29), (301, 330), (1439, 1468), (40000, 40029)):
        assert racp_request(1, 4, lo, hi) == bytes((1, 4, 1, lo & 255, lo >> 8, hi & 255, hi >> 8))
