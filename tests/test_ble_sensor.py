"""The simulated CGMS sensor (hil/ble/sensor.py), the bleak backend on bumble (hil/ble/bleak_bumble.py)
and `pumpctl cgm` (host/cgm.py): records decode with the shared codec and carry valid E2E-CRCs,
RACP works, the noise model meets the iCGM limits with margin, unmodified bleak client code talks to
the sensor over bumble's in-process virtual link, and `pumpctl cgm watch/scan` print decoded readings.

No Bluetooth hardware: everything runs in one asyncio loop per test (asyncio.run).
"""
from __future__ import annotations

import asyncio
import json
import math
import statistics
import time

import pytest

pytest.importorskip("bumble")

from basalt.cgm import cgms  # noqa: E402
from basalt.lib.crc16 import crc16  # noqa: E402
from bleak import BleakClient, BleakScanner  # noqa: E402
from bleak.exc import BleakDeviceNotFoundError, BleakGATTProtocolError  # noqa: E402

from hil.ble import sensor as S  # noqa: E402
from hil.ble.bleak_bumble import DEMO_ADDRESS, VirtualRadio  # noqa: E402
from host import cgm as hostcgm  # noqa: E402
from host.cli import main as pumpctl  # noqa: E402

MEAS = hostcgm.CGM_MEASUREMENT
RACP = "00002a52-0000-1000-8000-00805f9b34fb"


def wave(t_min: float) -> float:
    return 140 + 60 * math.sin(t_min / 60)


def parse_all(packet: bytes, e2e=True) -> list[tuple[int, int, int, int]]:
    out = []
    rec = cgms.Reading()
    cgms.parse(packet, rec, lambda r: out.append((r.err, r.glucose, r.time_offset, r.status)), e2e)
    return out


# ---- sensor core: records, characteristic values, RACP ------------------------------------------
def test_records_decode_with_shared_codec_and_valid_crc():
    core = S.CgmSensorCore(wave, seed=3)
    f, typ, loc = cgms.parse_feature(core.feature_value())
    assert f & cgms.F_E2E_CRC and (typ, loc) == (9, 5)
    for k in range(200):
        rec = core.next_reading()
        pkt = core.packet(rec)
        assert len(pkt) == pkt[0] == (8 if k == 0 else 10)  # 6 (+ trend 2 from the 2nd on) + CRC 2
        (err, g, off, st), = parse_all(pkt)
        assert err == cgms.E_OK and off == 5 * k and g == rec.mgdl * 10 and st == rec.status
        assert abs(rec.mgdl - wave(off)) < 60  # noise + lag, never wild
        bad = bytearray(pkt)
        bad[2] ^= 1
        assert parse_all(bytes(bad))[0][0] == cgms.E_CRC
    # Status, Session Start Time, Session Run Time end in a valid CRC-16/MCRF4XX too
    for v in (core.status_value(), core.session_start_value(), core.session_run_value()):
        assert crc16(v[:-2]) == v[-2] | v[-1] << 8


def test_out_of_range_clamped_and_annunciated():
    core = S.CgmSensorCore(lambda t: 20 if t < 10 else 500, noise=False)
    lo, _, _, hi = (core.next_reading() for _ in range(4))
    assert (lo.mgdl, lo.status) == (40, S.A_BELOW_DEVICE_RANGE)
    assert (hi.mgdl, hi.status) == (400, S.A_ABOVE_DEVICE_RANGE)


def test_racp_core():
    core = S.CgmSensorCore(wave, noise=False)
    for _ in range(12):  # offsets 0..55
        core.next_reading()
    req = cgms.racp_request

    def run(b):
        sel, rsp = core.racp(b)
        return [r.time_offset for r in sel], cgms.racp_response(rsp)

    assert run(req(cgms.RACP_REPORT, cgms.OPR_ALL)) == (list(range(0, 60, 5)), (6, 1, 1))
    assert run(req(cgms.RACP_REPORT, cgms.OPR_GE, 40)) == ([40, 45, 50, 55], (6, 1, 1))
    assert run(req(cgms.RACP_REPORT, cgms.OPR_LE, 7)) == ([0, 5], (6, 1, 1))
    assert run(req(cgms.RACP_REPORT, cgms.OPR_RANGE, 10, 20)) == ([10, 15, 20], (6, 1, 1))
    assert run(req(cgms.RACP_REPORT, cgms.OPR_FIRST))[0] == [0]
    assert run(req(cgms.RACP_REPORT, cgms.OPR_LAST))[0] == [55]
    assert run(req(cgms.RACP_REPORT_NUM, cgms.OPR_ALL)) == ([], (5, 12, 0))
    assert run(req(cgms.RACP_REPORT_NUM, cgms.OPR_GE, 50)) == ([], (5, 2, 0))
    assert run(req(cgms.RACP_REPORT_NUM, cgms.OPR_GE, 999)) == ([], (5, 0, 0))
    assert run(req(cgms.RACP_REPORT, cgms.OPR_GE, 999)) == ([], (6, 1, 6))  # no records found
    assert run(bytes((1, 0))) == ([], (6, 1, 3))  # null operator: invalid operator
    assert run(bytes((1, 9))) == ([], (6, 1, 4))  # operator not supported
    assert run(bytes((1, 3, 2, 0, 0))) == ([], (6, 1, 9))  # filter type not supported
    assert run(bytes((1, 3, 1, 0))) == ([], (6, 1, 5))  # short operand
    assert run(bytes((9, 1))) == ([], (6, 9, 2))  # op code not supported
    assert run(req(cgms.RACP_DELETE, cgms.OPR_LE, 20)) == ([], (6, 2, 1))
    assert run(req(cgms.RACP_REPORT_NUM, cgms.OPR_ALL)) == ([], (5, 7, 0))


def test_socp_interval_and_session():
    core = S.CgmSensorCore(wave, noise=False)
    rq = cgms.socp_request
    assert cgms.socp_response(core.socp(rq(cgms.SOCP_INTERVAL + 1, e2e=True)), True) == (3, 5, 0)
    assert cgms.socp_response(core.socp(rq(cgms.SOCP_INTERVAL, bytes((1,)), True)), True) == (28, 1, 1)
    assert core.interval_min == 1
    assert cgms.socp_response(core.socp(rq(cgms.SOCP_STOP_SESSION, e2e=True)), True) == (28, 27, 1)
    assert not core.running and core.status_value()[2] & 1  # session stopped annunciated
    assert cgms.socp_response(core.socp(rq(cgms.SOCP_HYPO, e2e=True)), True) == (28, 13, 2)
    assert cgms.socp_response(core.socp(rq(cgms.SOCP_INTERVAL, bytes((1,)), False)), True)[2] == 3  # bad CRC


def test_csv_trace(tmp_path):
    p = tmp_path / "trace.csv"
    p.write_text("minutes,glucose_mgdl\n0,100\n10,120\n# comment\n30,80\n")
    prof = S.trace_profile(p)
    assert [prof(t) for t in (-5, 0, 5, 10, 20, 30, 99)] == [100, 100, 110, 120, 100, 80, 80]
    core = S.CgmSensorCore(prof, noise=False)
    assert [core.next_reading().mgdl for _ in range(5)] == [100, 110, 120, 110, 100]


# ---- noise model -------------------------------------------------------------------------------
def test_lag_is_first_order():
    p = S.NoiseParams(sd_abs=0, sd_rel=0)  # lag only
    m = S.SensorNoise(p)
    m.step(100, 0)
    assert m.step(200, 1e-9) == pytest.approx(100, abs=1e-3)
    m = S.SensorNoise(p)
    m.step(100, 0)
    m.ig, m.bg = 100.0, 200.0  # a step to 200 held from t=0
    assert m.step(200, 10.0) == pytest.approx(200 - 100 * math.exp(-1))  # 63 % after one tau
    ramp = S.cgm_trace([100 + 2 * 5 * k for k in range(30)], 5.0, p)  # +2 mg/dL/min
    assert ramp[-1] == pytest.approx(100 + 2 * 5 * 29 - 2 * 10, abs=0.1)  # steady lag = slope * tau


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noise_model_meets_icgm_limits_with_margin(seed):
    bg = S.synthetic_bg(90, seed=seed)  # 90 days at 5 min: 25 920 readings
    rep = S.icgm_report(bg, S.cgm_trace(bg, 5.0, seed=seed))
    assert rep["crossings"] == 0
    assert rep["below70_within15mgdl"]["n"] > 300
    margins = {"below70_within15mgdl": 0.05, "70to180_within15pct": 0.10, "above180_within15pct": 0.05,
               "below70_within40mgdl": 0.015, "70to180_within40pct": 0.009, "above180_within40pct": 0.009,
               "overall_within20pct": 0.05}
    for name, margin in margins.items():
        r = rep[name]
        assert r["fraction"] >= r["required"] + margin, (name, r)
    assert 0.04 < rep["mard"] < 0.10  # a plausible sensor, not a perfect one
    # no lag and no noise is exact; noise without lag is better still than with it
    exact = S.icgm_report(bg, S.cgm_trace(bg, 5.0, S.NoiseParams(tau_min=0, sd_abs=0, sd_rel=0)))
    assert exact["mard"] == pytest.approx(0) and exact["pass"]


def test_icgm_report_flags_a_bad_sensor():
    bg = S.synthetic_bg(20, seed=1)
    rep = S.icgm_report(bg, S.cgm_trace(bg, 5.0, S.NoiseParams(sd_rel=0.2, sd_abs=12), seed=1))
    assert not rep["pass"]


# ---- over bumble's virtual link with unmodified bleak -----------------------------------------
async def _sensor(**kw):
    radio = VirtualRadio()
    sensor = await S.SimulatedCgmSensor.start(radio, profile=wave, **kw)
    client_cls, scanner_cls = radio.backends()
    return radio, sensor, client_cls, scanner_cls


def test_bleak_client_over_bumble_backend(capsys):
    N = 20

    async def main():
        radio, sensor, C, Sc = await _sensor(seed=5)
        found = await BleakScanner.discover(0.1, return_adv=True, backend=Sc, service_uuids=["181f"])
        dev, adv = found[sensor.address]
        assert adv.local_name == "Basalt SimCGM" and hostcgm.CGMS_SERVICE in adv.service_uuids
        connect_ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with BleakClient(dev, backend=C) as c:
                connect_ms.append((time.perf_counter() - t0) * 1000)
        q: asyncio.Queue = asyncio.Queue()
        async with BleakClient(sensor.address, backend=C) as c:
            svc = c.services.get_service(hostcgm.CGMS_SERVICE)
            assert {ch.uuid[4:8] for ch in svc.characteristics} >= {"2aa7", "2aa8", "2aa9", "2aaa", "2aab", "2a52"}
            f, _t, _l = cgms.parse_feature(await c.read_gatt_char(hostcgm.CGM_FEATURE))
            assert f & cgms.F_E2E_CRC
            await c.start_notify(MEAS, lambda _ch, d: q.put_nowait((time.perf_counter(), bytes(d))))
            rtt = []
            sent = []
            for _ in range(N):
                t0 = time.perf_counter()
                sent.append(await sensor.emit())
                t1, data = await asyncio.wait_for(q.get(), 2)
                rtt.append((t1 - t0) * 1000)
                (err, g, off, _st), = parse_all(data)
                assert err == cgms.E_OK and (g, off) == (sent[-1].mgdl * 10, sent[-1].time_offset)
            # RACP: needs indications first (CCCD improperly configured otherwise)
            with pytest.raises(BleakGATTProtocolError):
                await c.write_gatt_char(RACP, cgms.racp_request(cgms.RACP_REPORT_NUM), response=True)
            rq: asyncio.Queue = asyncio.Queue()
            await c.start_notify(RACP, lambda _ch, d: rq.put_nowait(bytes(d)))
            await c.write_gatt_char(RACP, cgms.racp_request(cgms.RACP_REPORT_NUM, cgms.OPR_ALL), response=True)
            assert cgms.racp_response(await asyncio.wait_for(rq.get(), 2)) == (5, N, 0)
            await c.write_gatt_char(RACP, cgms.racp_request(cgms.RACP_REPORT, cgms.OPR_GE, 5 * (N - 3)), response=True)
            assert cgms.racp_response(await asyncio.wait_for(rq.get(), 2)) == (6, 1, 1)
            got = [parse_all(q.get_nowait()[1])[0] for _ in range(q.qsize())]
            assert [x[2] for x in got] == [5 * k for k in range(N - 3, N)] and all(x[0] == 0 for x in got)
            status = await c.read_gatt_char("2aa9")
            assert crc16(bytes(status[:-2])) == status[-2] | status[-1] << 8
        with pytest.raises(BleakDeviceNotFoundError):
            await BleakClient("C0:00:00:00:00:99", backend=C, timeout=0.2).connect()
        await sensor.stop()
        await radio.close()
        return statistics.median(connect_ms), statistics.median(rtt)

    connect_ms, rtt_ms = asyncio.run(main())
    with capsys.disabled():
        print(f"\n[ble] connect+discover median {connect_ms:.1f} ms; notification round trip median {rtt_ms:.2f} ms")
    assert connect_ms < 1000 and rtt_ms < 50


def test_virtual_time_clock_drives_readings():
    now = [1000.0]

    async def main():
        radio, sensor, C, _ = await _sensor(clock=lambda: now[0], noise=False)
        got: list[bytes] = []
        async with BleakClient(sensor.address, backend=C) as c:
            await c.start_notify(MEAS, lambda _ch, d: got.append(bytes(d)))
            assert [r.time_offset for r in await sensor.advance()] == [0]
            now[0] += 12 * 60  # the harness moves virtual time 12 min
            assert [r.time_offset for r in await sensor.advance()] == [5, 10]
            assert await sensor.advance() == []
            await asyncio.sleep(0.01)
        await radio.close()
        return got

    got = asyncio.run(main())
    assert [parse_all(b)[0][1:3] for b in got] == [(round(wave(t)) * 10, t) for t in (0, 5, 10)]


# ---- pumpctl cgm --------------------------------------------------------------------------------
BACKEND = ["--backend", "hil.ble.bleak_bumble:demo_backend"]


def test_pumpctl_cgm_watch_json(capsys):
    assert pumpctl(["--json", "cgm", "watch", DEMO_ADDRESS, "--count", "3", *BACKEND]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert r["err"] == "ok" and r["crc"] == "ok" and 40 <= r["glucose_mgdl"] <= 400
    offs = [r["time_offset_min"] for r in rows]
    assert offs == sorted(offs) and len(set(offs)) == 3


def test_pumpctl_cgm_watch_human_and_scan(capsys, monkeypatch):
    monkeypatch.setenv(hostcgm.ENV_BACKEND, "hil.ble.bleak_bumble:demo_backend")
    assert pumpctl(["cgm", "watch", DEMO_ADDRESS, "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "E2E-CRC on" in out and out.count("mg/dL  trend") == 2
    assert pumpctl(["cgm", "scan", "--timeout", "0.1"]) == 0
    assert DEMO_ADDRESS in capsys.readouterr().out
    assert pumpctl(["--json", "cgm", "scan", "--timeout", "0.1"]) == 0
    devs = json.loads(capsys.readouterr().out)["devices"]
    assert devs[0]["address"] == DEMO_ADDRESS and devs[0]["cgms"]
    assert pumpctl(["cgm", "watch", DEMO_ADDRESS, "--count", "0"]) == 2
