"""SimHardware (hil/sim/hardware.py): the sensor readings it answers trains with, the real-motion
log behind them, and every injectable fault - driven here through its bus hooks directly, the way
SimPump drives it, so each rule is checked without the firmware. With the firmware in the loop:
tests/test_occlusion_bench.py (its readings, reading for reading) and the hazard tests of
tests/e2e/test_safety.py (each fault and the firmware's control)."""
import pytest

from hil.sim.battery import BatteryParams
from hil.sim.hardware import IDLE_PUSH_MS, SimHardware, next_tick_ms, tick_sample_ms
from hil.sim.plant import SyringePlant
from hil.sim.pressure import PressureParams

H = 3_600_000


class Bus:
    """Stands in for SimPump: logs emitted trains on the plant as SimPump does, collects S lines."""

    mode = "lockstep"

    def __init__(self, seed=0, **kw):
        self.plant = SyringePlant()
        self.hw = SimHardware(self.plant, seed=seed, **kw)
        self.lines: list[str] = []
        self.hw.on_message(self, "R", ["1234"])

    def send_line(self, line):
        self.lines.append(line)

    def train(self, t0, n, direction=1, hz=None):
        hz = hz or n
        self.plant.on_train(t0, n, hz, direction)
        self.hw.on_message(self, "M", [str(t0), str(n), str(hz), str(direction)])
        return self.s()

    def cut(self, t, emitted):
        self.plant.on_truncate(t, emitted)
        self.hw.on_message(self, "X", [str(t), str(emitted)])
        return self.s()

    def pause(self, t):
        """The firmware paused at t (run_until's stop): the device acts."""
        n = len(self.lines)
        self.hw.on_message(self, "A", [str(t)])
        self.hw.at(self, t)
        return self.s() if len(self.lines) > n else None

    def s(self):
        f = self.lines[-1].split()
        assert f[0] == "S" and len(f) == 5
        return tuple(int(x) for x in f[1:])


def basal(bus, hours, every_ms=18_000, t0=1000):
    t = t0
    while t < t0 + hours * H:
        bus.train(t, 1)
        t += every_ms
    return t


def test_every_train_and_cut_gets_one_reading_of_the_next_tick():
    b = Bus(seed=3)
    n0 = len(b.lines)  # the reading pushed on ready
    assert n0 == 1
    s = b.train(5000, 5)
    assert len(b.lines) == 2
    p, v, flags, enc = s
    hw = b.hw
    assert (p, v, flags, enc) == hw.reading(6000)
    assert p == hw.pressure.sensor_at(tick_sample_ms(6000)) and flags == 1 and enc == 5
    # paused at 5500 a command cuts the train: 3 steps were made (5000, 5200, 5400)
    s = b.cut(5500, 3)
    assert len(b.lines) == 3 and s[3] == 3 == hw.position_at(5999)
    assert hw.motion.net_steps() == b.plant.net_steps() == 3
    assert next_tick_ms(5000) == 6000 and next_tick_ms(5999) == 6000 and tick_sample_ms(6000) == 5999


def test_idle_readings_every_virtual_minute_and_at_events():
    b = Bus()
    assert b.hw.due_ms(0) == IDLE_PUSH_MS and b.hw.due_ms(IDLE_PUSH_MS) == 2 * IDLE_PUSH_MS
    assert b.pause(30_000) is None  # not on the minute: nothing new to say
    assert b.pause(IDLE_PUSH_MS) is not None
    b.hw.occlude(at_ms=90_500)
    assert b.hw.due_ms(60_000) == 90_500  # run_until stops the firmware there
    before = len(b.lines)
    assert b.pause(90_500) is not None and len(b.lines) == before + 1
    assert b.hw.log[-1] == (90_500, "occlude", (None,))


def test_injecting_in_the_past_is_refused():
    b = Bus()
    b.pause(10_000)
    with pytest.raises(ValueError):
        b.hw.stall(at_ms=5_000)


def test_without_faults_the_mechanism_follows_the_emitted_trains():
    b = Bus(seed=1)
    end = basal(b, 2)
    b.train(end, 25)  # a bolus second
    hw = b.hw
    assert [(t.t0_ms, t.emitted, t.direction) for t in hw.motion.trains] == \
           [(t.t0_ms, t.emitted, t.direction) for t in b.plant.trains]
    assert hw.encoder_at(end + 1000) == b.plant.net_steps() == 400 + 25
    # a minute later everything pushed has left the cannula
    assert hw.delivered_nl_between(0, end + 60_000) == pytest.approx(425 * 50, rel=1e-6)


def test_stall_emits_pulses_but_moves_nothing():
    b = Bus(seed=2)
    end = basal(b, 1)
    b.pause(end)
    b.hw.stall()
    p0 = b.hw.position_at(end)
    for k in range(10):
        _, _, _, enc = b.train(end + 1000 + k * 18_000, 1)
        assert enc == p0  # the encoder sees no motion
    assert b.plant.net_steps() == p0 + 10  # ... though the driver emitted every pulse
    # nothing reaches the patient
    t1 = end + 200_000
    assert b.hw.delivered_nl_between(end + 30_000, t1) == pytest.approx(0, abs=1)
    b.pause(t1)
    b.hw.motor_ok()
    assert b.train(t1 + 1000, 1)[3] == p0 + 1


def test_missed_steps_lose_an_exact_fraction():
    b = Bus(seed=4)
    b.hw.missed_steps(0.25)
    for k in range(40):
        b.train(1000 + k * 1000, 8)
    assert b.plant.net_steps() == 320
    assert b.hw.motion.net_steps() == b.hw.encoder_at(50_000) == 240
    # the real steps of a train are spread over its second, not bunched at its start
    tr = b.hw.motion.trains[0]
    assert tr.emitted == 6 and (tr.emitted - 1) / tr.hz > 0.7


def test_runaway_moves_without_a_train_until_the_driver_is_disabled():
    b = Bus(seed=5)
    end = basal(b, 1)
    b.pause(end)
    p0 = b.hw.position_at(end)
    b.hw.run_away(hz=20)
    # the firmware's next tick sees 20 steps it never commanded
    assert b.hw.reading(end + 1000)[3] == p0 + 20
    # it disables the driver at that tick: the motion stops there
    b.hw.on_message(b, "E", [str(end + 1000), "0"])
    assert b.hw.position_at(end + 60_000) == p0 + 21  # the step at exactly t counts (HAL rule)
    assert b.hw.delivered_nl_between(end, end + 60_000) == pytest.approx(21 * 50, rel=1e-3)
    # a disabled driver moves nothing even when trains are emitted
    b.train(end + 2000, 5)
    assert b.hw.position_at(end + 3000) == p0 + 21
    b.hw.on_message(b, "E", [str(end + 3000), "1"])
    assert b.train(end + 3000, 5)[3] == p0 + 26


def test_runaway_ends_with_the_fault_or_at_the_end_of_the_reservoir():
    b = Bus(seed=5)
    b.hw.run_away(hz=100, until_ms=10_000)
    b.pause(10_000)
    assert b.hw.position_at(60_000) == 1001
    b2 = Bus(seed=5, pressure=PressureParams(travel_steps=500))
    b2.hw.run_away(hz=100)
    assert b2.hw.position_at(3_600_000) == 500


def test_encoder_offset_and_miscount():
    b = Bus(seed=6)
    b.train(1000, 10)
    b.pause(2000)
    b.hw.encoder_fault(offset=-7)
    assert b.pause(IDLE_PUSH_MS)[3] == 3
    b.hw.encoder_fault(scale=0.5, at_ms=61_000)
    b.pause(61_000)
    assert b.train(62_000, 10)[3] == 3 + 5
    assert b.hw.position_at(63_000) == 20
    b.hw.encoder_ok(at_ms=64_000)
    b.pause(64_000)
    assert b.lines[-1].split()[4] == "20"


def test_reservoir_switch_and_its_force_reading():
    b = Bus(seed=7)
    end = basal(b, 1)
    seated = b.train(end, 1)
    b.pause(end)
    b.hw.remove_reservoir()
    p, _, flags, _ = b.s()
    assert flags == 0 and seated[2] == 1
    # no stopper, no fluid: the force sensor reads its zero (+ drift and noise), far below friction
    hw = b.hw
    assert p == pytest.approx(hw.pressure.zero + hw.pressure.gain * hw.pressure.drift_n_at(end + 999), abs=20)
    assert seated[0] - p > 100
    b.hw.seat_reservoir(at_ms=end + 5000)
    b.pause(end + 5000)
    assert b.s()[2] == 1


def test_rewind_home_starts_a_fresh_reservoir():
    b = Bus(seed=8)
    b.train(1000, 400)
    b.train(2000, 400)
    assert b.hw.pressure.reservoir(0).index == 0
    b.train(3000, 400, direction=-1)
    b.train(4000, 400, direction=-1)  # home at the last step of this train
    assert b.hw.position_at(5000) == 0
    assert any(what == "new_reservoir" for _, what, _ in b.hw.log)
    assert b.hw.pressure._state(6000)[9].index == 1  # the model's reservoir from there


def test_a_reservoir_seated_after_a_rewind_with_it_out_is_new():
    b = Bus(seed=8)
    b.train(1000, 400)
    b.pause(1500)
    b.hw.remove_reservoir()
    b.train(2000, 400, direction=-1)  # rewound home, nothing seated
    b.hw.seat_reservoir(at_ms=IDLE_PUSH_MS)
    b.pause(IDLE_PUSH_MS)
    assert b.hw.pressure._state(IDLE_PUSH_MS + 1)[9].index == 1
    assert not any(what == "new_reservoir" for _, what, _ in b.hw.log)


def test_a_rewind_cut_short_before_home_keeps_the_reservoir():
    b = Bus(seed=8)
    b.train(1000, 400)
    b.train(2000, 400, direction=-1)
    b.cut(2500, 201)  # stopped half-way (the step at 2500 counts, as the HAL counts it)
    b.train(3000, 10)
    assert b.hw.position_at(4000) == 400 - 201 + 10
    assert [what for _, what, _ in b.hw.log] == ["new_reservoir", "new_reservoir_cancelled"]
    assert b.hw.pressure._state(4000)[9].index == 0


def test_battery_drain_and_replacement():
    b = Bus(seed=9, battery=BatteryParams(adc_noise_counts=0))
    full = b.pause(IDLE_PUSH_MS)[1]
    b.hw.battery_soc(0.05, at_ms=2 * IDLE_PUSH_MS)
    low = b.pause(2 * IDLE_PUSH_MS)[1]
    b.hw.replace_battery(at_ms=3 * IDLE_PUSH_MS)
    new = b.pause(3 * IDLE_PUSH_MS)[1]
    volts = b.hw.battery.counts_to_volts
    assert volts(full) > 4.1 and 3.3 < volts(low) < 3.5 and volts(new) > 4.1
    with pytest.raises(ValueError):
        b.hw.battery_soc(1.5)


def test_occlusion_holds_the_volume_and_releases_it_when_cleared():
    b = Bus(seed=10)
    end = basal(b, 1)
    b.pause(end)
    b.hw.occlude()
    t = end
    for _ in range(30):
        b.train(t, 1)
        t += 18_000
    hw = b.hw
    assert hw.delivered_nl_between(end, t) == pytest.approx(0, abs=5)
    stored = hw.pressure.stored_nl_at(t)
    assert stored == pytest.approx(30 * 50, rel=0.01)
    b.pause(t)
    hw.clear_occlusion()
    assert hw.delivered_nl_between(t, t + 60_000) == pytest.approx(stored, rel=1e-3)


def test_partial_occlusion_leaks():
    b = Bus(seed=10)
    end = basal(b, 1)
    b.pause(end)
    b.hw.occlude(factor=100)
    t = end
    for _ in range(30):
        b.train(t, 1)
        t += 18_000
    assert 0 < b.hw.delivered_nl_between(end, t) < 30 * 50


def test_readings_are_deterministic_per_seed_and_differ_between_units():
    def run(seed):
        b = Bus(seed=seed)
        basal(b, 1)
        return b.lines

    assert run(11) == run(11)
    assert run(11) != run(12)
