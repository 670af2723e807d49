# Console protocol server under MicroPython: framing, validation, retransmission, back-pressure.
import json

from basalt.cmd._prof import segments
from basalt.core import Mechanics, Refused
from basalt.core.pump import Pump
from basalt.lib import crc16
from basalt.proto import MAX_FRAME
from basalt.proto.frame import check, encode
from basalt.proto.server import ConsoleServer
from hw_doubles import CountingMotor, DictStorage, PipeConsole
from mpyunit import raises


def setup():
    con = PipeConsole()
    srv = ConsoleServer(con, "test")
    pump = Pump(CountingMotor(), Mechanics(50, 60000, 400), srv.event)
    pump.storage = DictStorage()
    srv.pump = pump
    return con, srv, pump


def req(rid, cmd, args=None):
    doc = {"id": rid, "cmd": cmd}
    if args is not None:
        doc["args"] = args
    return encode(json.dumps(doc).encode())


def replies(con):
    out = []
    for line in con.lines():
        start, end, _ = check(line, len(line))
        out.append(json.loads(line[start:end]))
    return out


def ask(con, srv, frame):
    con.feed(frame)
    srv.poll()
    return [d for d in replies(con) if "id" in d]


def test_crc_vector():
    assert crc16(b"123456789") == 0x6F91


def test_frame_round_trip_and_crc_check():
    f = encode(b'{"a":1}')
    assert f.startswith(b"$") and f.endswith(b"\n")
    start, end, _ = check(f, len(f) - 1)
    assert f[start:end] == b'{"a":1}'
    bad = bytearray(f)
    bad[3] ^= 1
    assert raises(Refused, check, bad, len(bad) - 1).code == "crc"


def test_ping_and_status():
    con, srv, _ = setup()
    r = ask(con, srv, req(1, "ping"))
    assert r[0]["ok"] and r[0]["id"] == 1 and r[0]["data"]["version"] == "test"
    r = ask(con, srv, req(2, "status"))
    assert r[0]["data"]["state"] == "suspended"


def test_errors_have_reasons_and_change_nothing():
    con, srv, pump = setup()
    cases = [
        (b"hello\n", "frame"),
        (b"$" + b'{"id":1,"cmd":"ping"}' + b"*0000\n", "crc"),
        (encode(b"not json"), "json"),
        (encode(b"[1,2]"), "bad_request"),
        (encode(b'{"id":0,"cmd":"ping"}'), "bad_request"),
        (encode(b'{"id":70000,"cmd":"ping"}'), "bad_request"),
        (encode(b'{"id":"x","cmd":"ping"}'), "bad_request"),
        (req(3, "launch"), "unknown_cmd"),
        (req(4, "ping", [1]), "bad_request"),
        (req(5, "ping", {"x": 1}), "bad_arg"),
        (req(6, "bolus", {}), "range"),
        (req(7, "bolus", {"mU": "lots"}), "bad_arg"),
        (req(8, "bolus", {"mU": 1000}), "state"),
        (req(9, "basal_set", {"segments": [0, 999999]}), "range"),
        (req(10, "basal_set", {"segments": [0, 3500]}), "limit"),
        (req(11, "temp_basal", {"percent": 50, "minutes": 30}), "state"),
        (req(12, "history", {"limit": 0}), "range"),
        (b"\r\n", None),
        (b"$" + b"x" * (MAX_FRAME + 50) + b"\n", "too_long"),
    ]
    before = (pump.state, pump.res_state, segments(pump.profiles, 0), dict(pump.limits.__dict__), pump.reservoir_steps)
    for frame, code in cases:
        r = ask(con, srv, frame)
        if code is None:  # a bare Enter on a terminal is not answered
            assert r == [], r
            continue
        assert len(r) == 1 and not r[0]["ok"], (frame, r)
        assert r[0]["err"] == code, (frame, r[0])
        assert r[0]["msg"]
    assert (pump.state, pump.res_state, segments(pump.profiles, 0), dict(pump.limits.__dict__), pump.reservoir_steps) == before


def test_split_and_joined_frames():
    con, srv, _ = setup()
    f = req(1, "ping") + req(2, "ping")
    for i in range(len(f)):  # byte by byte
        con.feed(f[i:i + 1])
        srv.poll()
    assert [d["id"] for d in replies(con)] == [1, 2]


def test_crlf_accepted():
    con, srv, _ = setup()
    f = req(1, "ping")
    r = ask(con, srv, f[:-1] + b"\r\n")
    assert r[0]["ok"]


def ready(con, srv, pump):
    """The reservoir workflow and a zero basal, over the protocol: a running pump."""
    ask(con, srv, req(1, "rewind"))
    pump.tick()
    for i, (c, a) in enumerate((("reservoir_insert", {"mU": 100000}), ("prime_start", None), ("prime_stop", None),
                                ("cannula_fill", {"mU": 0}), ("basal_set", {"segments": [0, 0]}), ("resume", None))):
        assert ask(con, srv, req(10 + i, c, a))[0]["ok"], c


def test_retransmission_replays_instead_of_second_bolus():
    con, srv, pump = setup()
    ready(con, srv, pump)
    f = req(4, "bolus", {"mU": 1000})
    first = ask(con, srv, f)
    again = ask(con, srv, f)  # the host never saw the reply and sent it again
    assert first == again and first[0]["ok"]
    assert pump.bolus_id == 1
    r = ask(con, srv, req(4, "bolus", {"mU": 2000}))  # same id, different body: a new request
    assert r[0]["err"] == "busy"
    pump.uptime_s += 31  # past the replay window an id is free again: a new request, not a replay
    r = ask(con, srv, f)
    assert r[0]["err"] == "busy"


def test_retransmission_of_the_older_of_two_requests_is_refused_not_executed():
    # Two remembered requests, one reply body kept (the newest): the older one's retransmission
    # is answered "duplicate" and delivers nothing more.
    con, srv, pump = setup()
    ready(con, srv, pump)
    f = req(4, "bolus", {"mU": 1000})
    assert ask(con, srv, f)[0]["ok"]
    g = req(5, "temp_basal", {"percent": 50, "minutes": 30})
    second = ask(con, srv, g)
    assert second[0]["ok"]
    r = ask(con, srv, f)  # the bolus again, after the temp basal: its reply body is gone
    assert r[0]["id"] == 4 and r[0]["err"] == "duplicate"
    assert pump.bolus_id == 1 and pump.nb_req == 200
    assert ask(con, srv, g) == second  # the newest is still replayed byte for byte


def test_out_of_memory_before_the_request_is_parsed_still_answers_its_id():
    # When even the request checker cannot load (heap exhausted), the refusal carries the id read
    # raw from the line: the host can match it, and nothing was executed.
    import basalt.lib as overlay

    con, srv, pump = setup()
    real = overlay.call

    def call(module, name, *args):
        if module == "basalt.proto.req":
            raise MemoryError("allocating 454 bytes")
        return real(module, name, *args)

    overlay.call = call
    try:
        r = ask(con, srv, req(4321, "suspend"))
    finally:
        overlay.call = real
    assert r == [{"id": 4321, "ok": False, "err": "internal", "msg": "internal error: MemoryError"}]
    assert pump.state == "suspended" and pump.history.seq == 0
    assert ask(con, srv, req(4322, "ping"))[0]["ok"]  # and it answers normally again


def test_full_output_drops_events_not_the_pump():
    con, srv, pump = setup()
    con.accept = 0  # the host stopped reading
    for i in range(300):
        srv.event("test", {"i": i})
    assert srv.dropped > 0
    con.accept = 1 << 30
    srv.flush()
    got = replies(con)
    assert got[0]["seq"] == 1 and len(got) < 300
    r = ask(con, srv, req(1, "ping"))
    assert r[0]["ok"] and r[0]["data"]["events_dropped"] == srv.dropped


def test_random_bytes_never_raise():
    con, srv, _ = setup()
    seed = 12345
    for _ in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        con.feed(bytes(((seed >> 8) & 0xFF,)))
        if seed & 7 == 0:
            con.feed(b"\n")
        srv.poll()
        con.out = bytearray()  # the host reads the error replies as they come
    r = ask(con, srv, b"\n" + req(9, "ping"))
    assert r[-1]["ok"] and r[-1]["id"] == 9
