# Unit tests of the occlusion detector (basalt/core/occlusion.py), under the real MicroPython port.
# Readings are synthetic here (a baseline, seeded noise, ramps); the plant-model and firmware-in-
# the-loop figures are in tests/test_occlusion_bench.py and docs/occlusion.md.
import micropython
from basalt.core.occlusion import Occlusion

GAIN = 150  # counts per newton (boards/sim)
LIMIT = 120  # 0.8 N at that gain


def det():
    return Occlusion(512, GAIN)


class Noise:
    """Deterministic uniform noise in [-a, a] (an LCG: no random module needed)."""

    def __init__(self, a, seed=1):
        self.a = a
        self.x = seed

    def __call__(self):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % (2 * self.a + 1) - self.a


def feed(d, readings, steps=1):
    """Feed readings; return the index of the first alarm, or None."""
    for i, r in enumerate(readings):
        if d.update(r, steps):
            return i
    return None


def test_threshold_scales_with_the_sensor_gain():
    assert Occlusion(512, 150).limit == 120
    assert Occlusion(512, 300).limit == 240


def test_learns_the_baseline_from_forward_readings():
    d = det()
    assert not d.update(800, 1)
    assert d.base == 800
    d.update(804, 1)
    d.update(808, 1)
    assert 800 <= d.base <= 808


def test_noisy_friction_never_alarms():
    # glide friction 2.6 N (900 counts) with per-step roughness and ADC noise of +-40 counts
    d = det()
    n = Noise(40)
    assert feed(d, (900 + n() for _ in range(20000))) is None
    assert 850 < d.base < 950


def test_slow_drift_and_friction_profile_are_followed():
    # 0.1 U/h: 20 readings an hour; a drift of 4 counts an hour for 3 days, then back down
    d = det()
    up = [700 + i // 5 + (i * 7) % 9 for i in range(1440)]
    assert feed(d, up + [up[-1] - i // 5 for i in range(1440)]) is None


def test_occlusion_ramp_alarms_at_basal():
    # a blocked line adds 2 counts a step (a large air bubble) to 2.5 N of friction
    d = det()
    n = Noise(10)
    assert feed(d, [900 + n() for _ in range(500)]) is None
    i = feed(d, [900 + 2 * k + n() for k in range(1, 200)])
    assert i is not None and i < 80, i  # < 100 steps: the 0.5 U goal


def test_steep_ramp_alarms_sooner():
    d = det()
    feed(d, [600] * 50)
    i = feed(d, [600 + 6 * k for k in range(1, 60)])
    assert 20 <= i <= 24, i  # 6 counts a step: over 120 counts above base, twice


def test_one_reading_over_is_not_enough():
    d = det()
    feed(d, [600] * 50)
    assert not d.update(600 + 3 * LIMIT, 1)  # a single spike (a break-away, a glitch)
    assert not d.update(600, 1)
    assert not d.update(600 + 3 * LIMIT, 1)


def test_bolus_plateau_is_allowed_and_absorbed():
    d = det()
    feed(d, [700] * 100)
    # 5 steps a tick: the steady bolus pressure adds 80 counts at once (a high-resistance site)
    assert feed(d, [780] * 200, steps=5) is None
    assert d.base > 740  # the baseline has followed most of it
    # and falls back at once when the bolus ends
    feed(d, [700] * 10)
    assert d.base < 710


def test_occlusion_during_a_bolus_alarms_within_100_steps():
    d = det()
    feed(d, [700] * 100)
    feed(d, [730] * 20, steps=5)
    i = feed(d, [730 + 10 * k for k in range(1, 60)], steps=5)  # 2 counts a step, 5 steps a tick
    assert i is not None and (i + 1) * 5 <= 100, i


def test_idle_readings_are_ignored():
    d = det()
    feed(d, [900] * 50)
    base = d.base
    for r in (0, 450, 4095, 4095, 4095):  # at rest friction relaxes; nothing moved
        assert not d.update(r, 0)
    assert d.base == base


def test_alarm_latches_until_reset_and_reset_relearns():
    d = det()
    feed(d, [600] * 20)
    assert feed(d, [600 + 5 * k for k in range(1, 100)]) is not None
    assert d.update(600, 1) and d.update(0, 0)  # latched
    d.reset()
    assert not d.update(1000, 1)
    assert d.base == 1000


def test_back_off_takes_back_what_was_pushed_into_the_blocked_line():
    d = det()
    n = Noise(10)
    feed(d, [900 + n() for _ in range(300)])
    assert d.relief == 0
    k = feed(d, [900 + 3 * s + n() for s in range(1, 200)])  # blocked from the first of these
    pushed = k + 1
    # every step pushed into the blocked line, give or take the few lost in the noise, + margin
    assert pushed + 7 <= d.relief <= pushed + 17, (pushed, d.relief)


def test_back_off_margin_grows_with_the_alarm_train():
    a, b = det(), det()
    feed(a, [700] * 50)
    feed(b, [700] * 50)
    ka = feed(a, [700 + 6 * s for s in range(1, 100)])  # basal, 1 step a tick
    kb = feed(b, [700 + 30 * s for s in range(1, 100)], steps=5)  # bolus, 5 steps a tick
    assert a.relief - (ka + 1) < b.relief - 5 * (kb + 1)  # the bolus's stored pressure


def test_update_does_not_allocate():
    d = det()
    n = Noise(20)
    rs = [900 + n() for _ in range(300)] + [900 + 6 * k for k in range(100)]
    micropython.heap_lock()
    try:
        for r in rs:
            d.update(r, 1)
            d.update(r, 5)
            d.update(r, 0)
        d.reset()
    finally:
        micropython.heap_unlock()
    assert isinstance(d.base, int) and isinstance(d.relief, int)
