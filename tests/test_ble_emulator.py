"""The CGM emulator firmware (firmware/cgm_emulator) - the same code a rig's second board runs -
in the Unix port, its radio the `bluetooth` shim's peripheral role bridged to bumble, its serial
line the sim console (pyserial socket://):

- the host's line protocol (hil/ble/emulator.py): every command, and refusals that change nothing;
- `pumpctl cgm` code (host/cgm.py, plain bleak on the bumble backend) scans and watches it;
- RACP answers match the simulated sensor's (hil/ble/sensor.py) request for request;
- both sides firmware under test: the MicroPython test central (tests/ble/central_probe.py) and the
  emulator, two processes in virtual time, readings set over serial, a link loss, RACP backfill;
- the emulator type-checks against the ESP32 and RP2 port stubs; deploy stages what a board needs.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bumble")

from basalt.cgm import cgms  # noqa: E402

from hil.ble import sensor as S  # noqa: E402
from hil.ble.bridge import BleBridge  # noqa: E402
from hil.ble.emulator import Emulator, EmulatorError, deploy_commands, stage, trace_rows  # noqa: E402
from hil.ble.node import MpyNode  # noqa: E402
from hil.paths import BUILD_DIR, FIRMWARE_DIR  # noqa: E402
from host import cgm as hostcgm  # noqa: E402

EMU = "C0:98:E5:4A:00:01"
SIM_SENSOR = "C0:98:E5:49:00:01"
PROGRAM = FIRMWARE_DIR / "cgm_emulator" / "sim_main.py"
MEAS = hostcgm.CGM_MEASUREMENT
RACP = "00002a52-0000-1000-8000-00805f9b34fb"
MIN = 60_000


@pytest.fixture
def emulator():
    """The emulator firmware running in the sim, its bridge, and the host's serial client."""
    br = BleBridge(EMU)
    node = MpyNode(PROGRAM)
    br.attach(node)
    node.start()
    emu = Emulator(node.console_url)
    yield br, node, emu
    emu.close()
    node.close()
    br.close()


def on_loop(br: BleBridge, coro, timeout: float = 10.0):
    return asyncio.run_coroutine_threadsafe(coro, br.loop).result(timeout)


def test_serial_protocol_and_refusals(emulator):
    _br, _node, emu = emulator
    assert emu.status() == {"advertising": True, "connections": 0, "records": 0, "last_offset": -1,
                            "features": 0xDB40, "session": True}
    assert emu.reading(0, 120) == "ok r 0"
    assert emu.reading(5, "nan", S.A_SENSOR_MALFUNCTION) == "ok r 5"
    for bad, why in [("r 5 130", "offset not after 5"), ("r 10 abc", "number"), ("r 10 3000", "glucose"),
                     ("r 10 120 1000000", "range"), ("r -1 120", "range"), ("f zz", "number"),
                     ("x boom 1", "command"), ("x drop 5000", "range"), ("a maybe", "command"),
                     ("n " + "x" * 21, "command"), ("nonsense", "command"), ("r" + " 1" * 60, "too long")]:
        with pytest.raises(EmulatorError, match=why):
            emu.command(bad)
    st = emu.status()
    assert (st["records"], st["last_offset"]) == (2, 5), "a refused command changes nothing"
    assert emu.features(0x0040) == "ok f 000040" and emu.status()["features"] == 0x40
    assert emu.session(False) == "ok s stop"
    with pytest.raises(EmulatorError, match="session stopped"):
        emu.reading(10, 120)
    assert emu.session(True) == "ok s start" and emu.status()["records"] == 0


def test_pumpctl_cgm_code_scans_and_watches_the_emulator(emulator):
    br, _node, emu = emulator
    client, scanner = br.radio.backends()
    found = on_loop(br, hostcgm.scan(0.3, backend=scanner))
    assert found == [{"address": EMU, "name": "Basalt CGM-E", "rssi": found[0]["rssi"], "cgms": True}]
    got: list[dict] = []
    watch = asyncio.run_coroutine_threadsafe(hostcgm.watch(EMU, 6, got.append, backend=client), br.loop)
    t0 = time.monotonic()
    while not br.device.gatt_server.subscribers and time.monotonic() - t0 < 5:
        time.sleep(0.005)  # bleak subscribes in wall time
    emu.reading(0, 120)
    emu.reading(5, 45, S.A_BELOW_DEVICE_RANGE)
    emu.fault("crc", 1)
    emu.reading(10, 130)
    emu.fault("dup", 1)
    emu.reading(15, 140)
    emu.fault("drop", 1)
    emu.reading(20, 150)  # stored, never sent
    emu.reading(25, "-inf")
    watch.result(10)
    assert [(r["time_offset_min"], r["glucose_mgdl"], r["err"]) for r in got] == [
        (0, 120.0, "ok"), (5, 45.0, "ok"), (10, 130.0, "crc"), (15, 140.0, "ok"), (15, 140.0, "ok"),
        (25, None, "ok")]
    assert got[1]["annunciations"] == ["below_device_range"]
    assert emu.status()["records"] == 6


async def racp_exchange(client_cls, address: str, requests: list[bytes]) -> list[tuple[list[int], bytes]]:
    """For each RACP request: (time offsets notified, the RACP indication), over bleak."""
    from bleak import BleakClient

    out = []
    async with BleakClient(address, backend=client_cls) as c:
        offsets: list[int] = []
        ind: asyncio.Queue = asyncio.Queue()
        await c.start_notify(MEAS, lambda _ch, d: offsets.extend(r["time_offset_min"]
                                                                for r in hostcgm.decode_notification(d, True)))
        await c.start_notify(RACP, lambda _ch, d: ind.put_nowait(bytes(d)))
        for req in requests:
            offsets.clear()
            await c.write_gatt_char(RACP, req, response=True)
            rsp = await asyncio.wait_for(ind.get(), 5)
            out.append((list(offsets), rsp))
    return out


def test_racp_answers_match_the_simulated_sensor(emulator):
    br, _node, emu = emulator
    sensor = br.add_sensor(SIM_SENSOR, profile=lambda t: 120, noise=False, backfill=12)
    for rec in sensor.core.records:
        emu.reading(rec.time_offset, rec.mgdl)
    R = cgms.racp_request
    requests = [R(cgms.RACP_REPORT, cgms.OPR_ALL), R(cgms.RACP_REPORT, cgms.OPR_GE, 30),
                R(cgms.RACP_REPORT, cgms.OPR_LE, 10), R(cgms.RACP_REPORT, cgms.OPR_RANGE, 15, 25),
                R(cgms.RACP_REPORT, cgms.OPR_FIRST), R(cgms.RACP_REPORT, cgms.OPR_LAST),
                R(cgms.RACP_REPORT_NUM, cgms.OPR_GE, 20), R(cgms.RACP_REPORT, cgms.OPR_GE, 500),
                R(cgms.RACP_REPORT, cgms.OPR_RANGE, 25, 15), bytes((1, 0)), bytes((1, 9)), bytes((9, 1)),
                bytes((1, 3, 2, 0, 0)), bytes((1, 3, 1, 0)), R(cgms.RACP_ABORT), R(cgms.RACP_DELETE, cgms.OPR_LE, 5),
                R(cgms.RACP_REPORT_NUM, cgms.OPR_ALL)]
    client, _ = br.radio.backends()
    a = on_loop(br, racp_exchange(client, SIM_SENSOR, requests), 30)
    b = on_loop(br, racp_exchange(client, EMU, requests), 30)
    assert a == b
    assert a[0][0] == list(range(0, 60, 5)) and a[0][1] == bytes((6, 0, 1, 1))
    assert a[6][1] == bytes((5, 0, 8, 0)) and a[-1][1] == bytes((5, 0, 10, 0))  # 2 records deleted


def test_central_probe_and_emulator_both_firmware():
    """Two MicroPython processes on one virtual link in virtual time: the test central (the pump's
    role) and the emulator, whose readings the host sets over serial every 5 virtual minutes."""
    pump = BleBridge()
    radio = BleBridge(EMU, share=pump)
    emu_node = MpyNode(PROGRAM)
    radio.attach(emu_node)
    emu_node.start()
    probe = MpyNode(Path(__file__).parent / "ble" / "central_probe.py", "--pair", EMU.replace(":", "").lower())
    pump.attach(probe)
    probe.start()
    emu = Emulator(emu_node.console_url)
    try:
        t0 = time.perf_counter()
        probe.run_until(1000)
        for k in range(1, 37):  # 3 h
            probe.run_until(k * 5 * MIN)
            if k == 12:
                emu.advertise(False)  # out of range for 40 minutes
            if k == 20:
                emu.advertise(True)
            emu.reading(k * 5, 100 + k)
        probe.run_until(36 * 5 * MIN + 1000)
        wall = time.perf_counter() - t0
        reps = probe.reports("P")
    finally:
        emu.close()
        probe.close()
        emu_node.close()
        radio.close()
        pump.close()
    recs = [(int(f[1]), int(f[2]), int(f[3])) for f in reps if f[0] == "rec"]
    assert sorted(o for _t, o, _g in recs) == list(range(5, 181, 5)), "every reading exactly once"
    assert all(g == (100 + o // 5) * 10 for _t, o, g in recs)
    assert [int(f[1]) for f in reps if f[0] == "down"] == [12 * 5 * MIN]
    ups = [int(f[1]) for f in reps if f[0] == "up"]
    assert len(ups) == 2 and 20 * 5 * MIN <= ups[1] <= 20 * 5 * MIN + 20_000
    backfilled = [o for t, o, _g in recs if t == ups[1]]
    assert backfilled == list(range(60, 101, 5)), "missed readings came by RACP from the emulator firmware"
    live = [o for t, o, _g in recs if t == o * MIN]
    assert len(live) == len(recs) - len(backfilled)
    print(f"\n[ble] central + emulator firmware, 3 virtual hours with a 40 min link loss: {wall:.2f} s wall")


# ---- board code -------------------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_emulator_type_checks_against_port_stubs(port, tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy not installed")
    stubs = Path(os.environ.get(f"BASALT_STUBS_{port.upper()}", BUILD_DIR / "stubs" / port))
    if not (stubs / "bluetooth.pyi").exists():
        pytest.skip(f"no {port} stubs in {stubs} (make test installs them)")
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nignore_errors = True\n[mypy-cgm_emulator.*]\nignore_errors = False\n")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--check-untyped-defs", "--no-site-packages",
         "--custom-typeshed-dir", str(stubs), "--cache-dir", str(tmp_path / "cache"),
         "cgm_emulator/emulator.py", "cgm_emulator/board_main.py"],
        cwd=FIRMWARE_DIR, env=dict(os.environ, MYPYPATH=str(stubs)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Success" in r.stdout, f"mypy ({port} stubs):\n{r.stdout}\n{r.stderr}"


def test_deploy_stages_the_emulator(tmp_path):
    out = stage()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["main.py", "basalt/cgm/cgms.mpy", "basalt/cgm/sfloat.mpy", "basalt/cgm/rx.mpy",
                            "basalt/cgm/conn.mpy", "basalt/lib/__init__.mpy",
                            "cgm_emulator/emulator.mpy", "cgm_emulator/board_main.mpy"])
    assert "import cgm_emulator.board_main" in (out / "main.py").read_text()
    cmds = deploy_commands(out, "/dev/ttyFAKE1", "mpremote")
    assert cmds[0][:5] == ["mpremote", "connect", "/dev/ttyFAKE1", "fs", "cp"] and cmds[-1][-1] == "reset"
    csv = tmp_path / "g.csv"
    csv.write_text("minutes,mgdl\n0,120\n5,131.6\n# note\n10,140\n")
    assert trace_rows(csv) == [(0, 120), (5, 132), (10, 140)]
