"""Thousands of random and mutated frames at the running pump: no crash, no stall, no therapy change.

Mutated frames keep their original CRC (as line noise would), so they must all be refused.
Frames re-sealed with a valid CRC carry malformed structure or out-of-range arguments, so the
pump must refuse those too. Meanwhile basal runs, and at the end the plant must show exactly
the basal owed for the elapsed virtual time - nothing more, nothing less.
"""
import json
import random

from host.client import frame

FRAMES = 4000
BATCH = 40


def _valid_templates():
    return [
        {"cmd": "ping"}, {"cmd": "status"}, {"cmd": "basal_get"}, {"cmd": "limits_get"},
        {"cmd": "bolus", "args": {"mU": 1000}},
        {"cmd": "basal_set", "args": {"segments": [[0, 1000]]}},
        {"cmd": "limits_set", "args": {"max_bolus_mU": 5000}},
        {"cmd": "suspend"}, {"cmd": "resume"}, {"cmd": "bolus_cancel"},
        {"cmd": "reservoir_load", "args": {"mU": 1000}},
    ]


# Values every field refuses (each field's valid range is documented in docs/protocol.md).
NOT_INT = [None, True, False, 1.5, "1", "", [], {}, [[]], "∞"]
BAD_BOLUS = NOT_INT + [-1, 0, 10**12, -(10**12), 2503, 10_010]  # max bolus 10 U, 10 mU increments
BAD_RATE = NOT_INT + [-1, 10**12, 3001]  # max basal 3 U/h
BAD_LIMIT = NOT_INT + [-1, 0, 10**12, 99_999_999]  # every limit's lowest setting is above 0


def _bad_request(rng):
    """A well-framed request that the pump must refuse: bad structure or out-of-range values."""
    kind = rng.randrange(7)
    if kind == 0:
        rid = rng.choice([rng.randrange(1, 65536), 0, -5, 70000, "7", 1.5])
        return {"id": rid, "cmd": rng.choice(["", "BOLUS", "rm -rf", 5, None, "bolus "])}
    if kind == 1:
        return {"id": rng.randrange(1, 65536), "cmd": "bolus", "args": {"mU": rng.choice(BAD_BOLUS)}}
    if kind == 2:
        segs = rng.choice([[[0, v]] for v in BAD_RATE] + [[[15, 100]], [[0, 100], [0, 100]], [[30, 100]], "x"])
        return {"id": rng.randrange(1, 65536), "cmd": "basal_set", "args": {"segments": segs}}
    if kind == 3:
        key = rng.choice(["max_bolus_mU", "max_basal_mUh", "bolus_speed_mU_min", "nope"])
        return {"id": rng.randrange(1, 65536), "cmd": "limits_set", "args": {key: rng.choice(BAD_LIMIT)}}
    if kind == 4:
        cmd = rng.choice(["suspend", "resume", "bolus_cancel", "status"])
        return {"id": rng.randrange(1, 65536), "cmd": cmd, "args": {"x": rng.choice(BAD_LIMIT)}}
    if kind == 5:  # refused while running, whatever the amount
        return {"id": rng.randrange(1, 65536), "cmd": "reservoir_load", "args": {"mU": rng.choice(BAD_LIMIT + [1000])}}
    return {"id": rng.randrange(1, 65536), "cmd": "bolus", "args": rng.choice([None, [], "mU=1000", 5])}


def _mutate(rng, data: bytes) -> bytes:
    """Line noise on a frame. Never returns the original (an inserted-then-stripped newline or a
    trailing CR would hand the pump the untouched, valid request)."""
    original = data.rstrip(b"\n")
    while True:
        out = _mutate_once(rng, original)
        if out.rstrip(b"\n").rstrip(b"\r") != original:
            return out


def _mutate_once(rng, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            del b[i:i + rng.randrange(1, 8)]
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            b = b[: rng.randrange(len(b))] if len(b) > 1 else b
        if not b:
            b = bytearray(b"$")
    return bytes(b.replace(b"\n", b"")) + b"\n"


def _fuzz_frame(rng, templates):
    r = rng.random()
    if r < 0.3:  # line noise on a real request: the CRC must catch it
        t = dict(rng.choice(templates), id=rng.randrange(1, 65536))
        return _mutate(rng, bytes(frame(t)))
    if r < 0.6:  # well-framed nonsense
        return bytes(frame(_bad_request(rng)))
    if r < 0.75:  # broken JSON sealed with a valid CRC
        cmd = rng.choice(["ping", "status", "basal_get", "limits_get"])
        return _mutate_sealed(rng, json.dumps({"id": rng.randrange(1, 65536), "cmd": cmd}).encode())
    if r < 0.9:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b"") + b"\n"
    return b"$" + b"A" * rng.choice([600, 2000, 5000]) + b"\n"  # oversized


def _mutate_sealed(rng, body: bytes) -> bytes:
    """Corrupt a read-only request's JSON, then seal it with a valid CRC. (Therapy commands are
    not used here: a one-byte edit can turn a valid bolus of 2500 into a valid bolus of 250.)"""
    from basalt.proto.frame import encode

    b = bytearray(body)
    i = rng.randrange(len(b))
    b[i:i + 1] = rng.choice([b"", b"{", b"]", b"\x00", b"\xff", b'"', b"9" * 30, b"[" * 40])
    return bytes(encode(bytes(b).replace(b"\n", b"")))


def test_fuzzed_frames_change_nothing(sim_dut):
    rng = random.Random(2026_11_22)
    sim, c = sim_dut.sim, sim_dut.client
    sim_dut.prepare(reservoir_mu=300_000, segments=[[0, 1000]])
    before = {k: c.request(k) for k in ("basal_get", "limits_get")}
    templates = _valid_templates()
    sent = 0
    t0 = sim.now_ms
    while sent < FRAMES:
        batch = b"".join(_fuzz_frame(rng, templates) for _ in range(BATCH))
        c.send_raw(b"\n" + batch)  # a leading newline ends any half-line left by the last batch
        sent += BATCH
        sim.advance(7_000)  # virtual time runs between batches: basal keeps going
        assert c.request("ping")["uptime_s"] * 1000 == sim.now_ms  # alive and not stalled
    assert sim.proc.poll() is None, sim.log_tail()
    sim.run_until(sim.now_ms + 2000)
    st = c.request("status")
    ping = c.request("ping")
    assert ping["frames_bad"] >= FRAMES * 0.9  # the pump saw and refused them
    assert st["state"] == "running" and st["bolus"] is None and st["bolus_delivered_mU"] == 0
    assert {k: c.request(k) for k in ("basal_get", "limits_get")} == before
    # delivery: exactly the basal owed, as the plant measured it
    elapsed_s = (sim.now_ms - t0) // 1000
    owed_steps = 1000 * 1000 * (elapsed_s - 1) // (5000 * 3600)  # the newest train settles next tick
    assert st["delivered_steps"] == owed_steps
    assert sim.plant.steps_between(0, sim.now_ms - 999) == owed_steps
