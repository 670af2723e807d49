"""The fluid path behind the plunger and the occlusion force sensor that watches it.

Groundwork for the occlusion issue (docs/plant.md has the equations, every parameter's source and
what the firmware wiring needs). The model is deterministic for a seed and event-driven: it reads
the step log (SyringePlant's trains, the same "step i at t0 + i*1000/hz ms" rule as everywhere),
and between events the fluid path is linear, so it is solved exactly:

    plunger step  ->  dV = +-nl_per_step into the compliance C (reservoir + line + drive + air)
    compliance    ->  gauge pressure P = V_stored / C                       (kPa)
    outflow       ->  Q = P / R through cannula and tissue                  (nL/s)
    between events: P(t) = P0 * exp(-(t - t0) / (R C)); volume out = C * (P0 - P(t))

An occlusion multiplies R by a very large factor from t_on to t_off, so the plunger's volume stays
stored in the compliance and the pressure climbs ~nl_per_step / C per step; when it clears the
stored volume C*P leaves as an unintended bolus. Retract steps take volume out of the compliance
(the drive is coupled to the stopper) and so relieve the pressure; below p_floor_kpa the liquid
cannot be stretched further and a void (degassing/cavitation) absorbs the rest, refilled first by
forward steps or by backflow from the patient side - volume is conserved throughout.

The sensor is the axial force between drive and stopper:

    F = P * area + friction(position, motion, dwell, reservoir) + drift(t)           (N)
    raw = round(zero + gain * F + noise(t))  clipped to the ADC range                (counts)

Friction is the stopper's: glide friction while it moves (varying along the travel and from
reservoir to reservoir), a break-away excess on a step that follows a dwell (growing with the
dwell), and at rest a relaxation toward a held fraction of glide. Friction opposes the last motion
and does not feed back into the volume (the drive is position-controlled; the displacement errors
of the mechanism are hil.sim.syringe_model's job - `from_delivery` composes the two).

Time: step times are integer microseconds (plant convention), query times milliseconds (float).
Noise is a hash of (seed, t_ms), so a reading at a given time is the same however often and in
whatever order it is sampled.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

MS_PER_DAY = 86_400_000
P_ATM_KPA = 101.325
_M64 = (1 << 64) - 1


# ---- deterministic noise ------------------------------------------------------------------------
def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def hash_normal(key: int, t: float) -> float:
    """A standard normal variate that depends only on (key, t) - Box-Muller over two hashes."""
    h = _splitmix64((key * 0x100000001B3) ^ (hash(float(t)) & _M64))
    u1 = ((h >> 11) + 1) / 9007199254740993.0  # (0, 1]
    u2 = (_splitmix64(h) >> 11) / 9007199254740992.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# ---- parameters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PressureParams:
    """Every figure of the fluid path and the sensor. docs/plant.md gives each one's source."""
    # mechanism (boards/README.md)
    area_mm2: float = 40.0
    nl_per_step: int = 50
    travel_steps: int = 60_000  # 3 mL reservoir, 75 mm
    # compliance, nL per kPa of gauge pressure
    c_line_nl_kpa: float = 1.0  # 60 cm PE tubing, ID 0.38 mm (thick-wall estimate)
    c_stopper_nl_kpa: float = 10.0  # elastomer stopper face, 5 mm long, E_eff ~20 MPa
    c_barrel_full_nl_kpa: float = 18.0  # PP barrel wall, full 3 mL; scales with what is left
    drive_stiffness_n_mm: float = 250.0  # drive chain (as syringe_model); adds area^2 / k
    air_ul_median: float = 2.0  # trapped air per reservoir, lognormal
    air_ul_sigma: float = 0.8
    air_linearise_kpa: float = 50.0  # secant compliance of the bubble taken at this pressure
    c_spread: float = 0.15  # lognormal sigma of the solid compliances per reservoir
    # outflow
    r_open_kpa_s_nl: float = 0.02  # cannula + tissue: 5 kPa at 1.5 U/min
    r_open_sigma: float = 0.4  # lognormal per infusion site (drawn with each reservoir)
    r_occluded_factor: float = 1e6  # occlusion: R x this (leak 0.002 U/h at 100 kPa)
    p_floor_kpa: float = -80.0  # below this a void opens instead of the pressure falling further
    # stopper friction, N
    glide_n: float = 2.0  # median glide force per reservoir
    glide_sigma: float = 0.25  # lognormal across reservoirs
    glide_profile: float = 0.10  # relative amplitude of the variation along the travel
    glide_trend: float = 0.10  # relative change from start to end of travel (+- per reservoir)
    glide_roughness: float = 0.03  # step-to-step relative variation (stick-slip texture)
    breakaway_base: float = 0.20  # relative excess after a long dwell, saturating with 1 s
    breakaway_log: float = 0.15  # further relative excess per decade of dwell (s)
    breakaway_sigma: float = 0.3  # lognormal spread of both across reservoirs
    breakaway_ms: float = 20.0  # how long the break-away peak lasts after the step
    hold_ratio: float = 0.5  # friction held at rest, as a fraction of glide
    friction_relax_s: float = 20.0  # glide -> held relaxation time constant
    # sensor: bipolar load cell + amplifier into a 12-bit ADC
    adc_max: int = 4095
    zero_counts: float = 512.0
    zero_sigma_counts: float = 20.0  # per unit
    counts_per_n: float = 150.0
    gain_sigma: float = 0.02  # per unit, relative
    noise_counts: float = 4.0  # white, per sample
    drift_rate_n_day: float = 0.005  # aging, sign random per unit
    drift_diurnal_n: float = 0.03  # amplitude of the daily (temperature) term
    drift_slow_n: float = 0.05  # RMS of a multi-day wander (3 sinusoids, periods 2-12 days)

    def with_(self, **changes) -> PressureParams:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def quiet(cls) -> PressureParams:
        """No noise, drift, friction or spread: the bare fluid physics (for tests)."""
        return cls(air_ul_sigma=0.0, c_spread=0.0, r_open_sigma=0.0, glide_n=0.0, zero_sigma_counts=0.0,
                   gain_sigma=0.0, noise_counts=0.0, drift_rate_n_day=0.0, drift_diurnal_n=0.0,
                   drift_slow_n=0.0, breakaway_sigma=0.0, glide_sigma=0.0)

    @property
    def c_drive_nl_kpa(self) -> float:
        # plunger lag P*A/k (P in kPa -> N/1000) times A: P * A^2 / k / 1000 mm^3 = P * A^2 / k nL
        return self.area_mm2 ** 2 / self.drive_stiffness_n_mm


@dataclass(frozen=True)
class Reservoir:
    """The per-reservoir (and per-site) draw."""
    index: int
    air_ul: float
    c_fixed_nl_kpa: float  # line + stopper + drive + air (linearised)
    c_barrel_full_nl_kpa: float
    r_open_kpa_s_nl: float
    glide_n: float
    trend: float
    profile: tuple  # ((amplitude, wavelength_steps, phase), ...)
    breakaway_base: float
    breakaway_log: float
    rough_key: int

    def compliance(self, x_steps: float, travel: int) -> float:
        left = min(1.0, max(0.0, 1.0 - x_steps / travel))
        return self.c_fixed_nl_kpa + self.c_barrel_full_nl_kpa * left

    def glide(self, x_steps: int, travel: int) -> float:
        if not self.glide_n:
            return 0.0
        g = 1.0 + self.trend * (x_steps / travel - 0.5) * 2
        for a, w, ph in self.profile:
            g += a * math.sin(2 * math.pi * x_steps / w + ph)
        return self.glide_n * g


def draw_reservoir(p: PressureParams, seed: int, index: int) -> Reservoir:
    rng = np.random.default_rng([seed, 1, index])
    z = rng.normal(size=8)
    air = p.air_ul_median * math.exp(p.air_ul_sigma * z[0]) if p.air_ul_median else 0.0
    c_air = air * 1000.0 / (P_ATM_KPA + p.air_linearise_kpa)
    solid = math.exp(p.c_spread * z[1])
    c_fixed = p.c_line_nl_kpa + p.c_stopper_nl_kpa * solid + p.c_drive_nl_kpa + c_air
    r_open = p.r_open_kpa_s_nl * math.exp(p.r_open_sigma * z[2])
    glide = p.glide_n * math.exp(p.glide_sigma * z[3])
    trend = float(p.glide_trend * (1 if z[4] >= 0 else -1) * min(1.0, abs(z[4])))
    # 3 sinusoids along the travel, wavelengths 4-40 mm (3200-32000 steps), RMS = glide_profile
    amps = p.glide_profile * math.sqrt(2.0 / 3.0)
    profile = tuple((amps, float(rng.uniform(3200, 32000)), float(rng.uniform(0, 2 * math.pi)))
                    for _ in range(3))
    bs = math.exp(p.breakaway_sigma * z[5])
    return Reservoir(index, air, c_fixed, p.c_barrel_full_nl_kpa * solid, r_open, glide, trend, profile,
                     p.breakaway_base * bs, p.breakaway_log * bs,
                     int(rng.integers(1, 2 ** 62)))


# ---- step sources -------------------------------------------------------------------------------
class _TrainCursor:
    """Walks a SyringePlant's trains step by step, as they are appended and cut short."""

    def __init__(self, plant, nl_per_step: int):
        self.plant = plant
        self.nl = nl_per_step
        self.k = 0
        self.i = 0

    def reset(self) -> None:
        self.k = self.i = 0

    def consistent(self) -> bool:
        tr = self.plant.trains
        return self.k >= len(tr) or tr[self.k].emitted >= self.i

    def peek(self) -> int | None:
        trains = self.plant.trains
        while self.k < len(trains):
            tr = trains[self.k]
            if self.i < tr.emitted:
                return tr.t0_ms * 1000 + self.i * 1_000_000 // tr.hz
            if self.k == len(trains) - 1:
                return None  # the last train may still be cut short: stay on it
            self.k += 1
            self.i = 0
        return None

    def pop(self) -> tuple[int, int, float]:
        tr = self.plant.trains[self.k]
        t = tr.t0_ms * 1000 + self.i * 1_000_000 // tr.hz
        self.i += 1
        return t, tr.direction, tr.direction * self.nl


class _ArrayCursor:
    def __init__(self, t_us, direction, dv_nl):
        self.t = [int(v) for v in t_us]
        self.d = [int(v) for v in direction]
        self.v = [float(v) for v in dv_nl]
        if any(b < a for a, b in zip(self.t, self.t[1:], strict=False)):
            raise ValueError("step times must ascend")
        self.j = 0

    def reset(self) -> None:
        self.j = 0

    def consistent(self) -> bool:
        return True

    def peek(self) -> int | None:
        return self.t[self.j] if self.j < len(self.t) else None

    def pop(self) -> tuple[int, int, float]:
        j = self.j
        self.j += 1
        return self.t[j], self.d[j], self.v[j]


# ---- the model ----------------------------------------------------------------------------------
class PressureModel:
    """Fluid pressure, outflow and the force sensor of one pump, for one seed.

    Step sources: a SyringePlant (`plant=`, read lazily as its trains grow), or explicit arrays
    (`steps=(t_us, direction)` or `from_delivery`). Configuration events (`occlude`, `clear`,
    `remove_reservoir`, `new_reservoir`) may be given at any time; one earlier than what has already
    been evaluated makes the model re-evaluate from the start (cheap, and exact).
    """

    def __init__(self, params: PressureParams | None = None, seed: int = 0, plant=None,
                 steps: tuple | None = None):
        self.params = params if params is not None else PressureParams()
        self.seed = seed
        p = self.params
        if plant is not None:
            self._src = _TrainCursor(plant, p.nl_per_step)
        else:
            t, d = steps if steps is not None else ([], [])
            self._src = _ArrayCursor(t, d, [di * p.nl_per_step for di in d])
        self._cfg: list[tuple[int, int, str, float]] = []  # (t_us, order, kind, value)
        self._reservoirs: dict[int, Reservoir] = {}
        # the sensor unit
        rng = np.random.default_rng([seed, 2])
        z = rng.normal(size=3)
        self.zero = p.zero_counts + p.zero_sigma_counts * z[0]
        self.gain = p.counts_per_n * (1.0 + p.gain_sigma * z[1])
        self.drift_rate = p.drift_rate_n_day * (1 if z[2] >= 0 else -1)
        self.diurnal_phase = float(rng.uniform(0, 2 * math.pi))
        amp = p.drift_slow_n * math.sqrt(2.0 / 3.0)
        self.slow = [(amp, float(rng.uniform(2, 12)) * MS_PER_DAY, float(rng.uniform(0, 2 * math.pi)))
                     for _ in range(3)]
        self.noise_key = _splitmix64(seed * 7919 + 17)
        self._reset()

    @classmethod
    def from_delivery(cls, delivery, params: PressureParams | None = None, seed: int = 0) -> PressureModel:
        """Compose with hil.sim.syringe_model: its plunger displacement per step drives the fluid."""
        m = cls(params, seed)
        dv = np.diff(np.concatenate(([0.0], delivery.plunger_nl)))
        m._src = _ArrayCursor(delivery.t_us, delivery.direction, dv)
        m._reset()
        return m

    # ---- configuration --------------------------------------------------------------------------
    def occlude(self, t_on_ms: float, t_off_ms: float | None = None, factor: float | None = None) -> None:
        """Block the outflow from t_on (R x factor, default r_occluded_factor) until t_off (or for ever)."""
        f = self.params.r_occluded_factor if factor is None else factor
        self._add_cfg(t_on_ms, "r", f)
        if t_off_ms is not None:
            self.clear(t_off_ms)

    def clear(self, t_ms: float) -> None:
        self._add_cfg(t_ms, "r", 1.0)

    def remove_reservoir(self, t_ms: float) -> None:
        """Reservoir out (e.g. for the rewind): steps move the drive only; nothing is stored."""
        self._add_cfg(t_ms, "out", 0)

    def new_reservoir(self, t_ms: float) -> None:
        """A fresh reservoir (and infusion site) at position 0: new friction, compliance, resistance."""
        self._add_cfg(t_ms, "in", 0)

    def reservoir(self, index: int) -> Reservoir:
        if index not in self._reservoirs:
            self._reservoirs[index] = draw_reservoir(self.params, self.seed, index)
        return self._reservoirs[index]

    def _add_cfg(self, t_ms: float, kind: str, value: float) -> None:
        t_us = int(round(t_ms * 1000))
        self._cfg.append((t_us, len(self._cfg), kind, value))
        self._cfg.sort()
        if t_us <= self._t:
            self._reset()

    # ---- evaluation -----------------------------------------------------------------------------
    def _reset(self) -> None:
        self._src.reset()
        self._ci = 0
        self._res = self.reservoir(0)
        self._loaded = True
        self._factor = 1.0
        # state just after the last event
        self._t = -1
        self._p = 0.0
        self._void = 0.0
        self._out = 0.0
        self._x = 0
        self._c = self._res.compliance(0, self.params.travel_steps)
        self._r = self._res.r_open_kpa_s_nl
        self._last_step_t = None  # type: int | None
        self._last_dir = 1
        self._dwell_us = 0
        self._steps_fwd = 0
        self._steps_back = 0
        # history, one row per event, for queries into the past
        self._h_t: list[int] = []
        self._h: list[tuple] = []

    def _relax(self, p: float, void: float, c: float, r: float, dt_s: float) -> tuple[float, float, float]:
        """(pressure, void, volume out) after dt_s with nothing but the outflow acting."""
        out = 0.0
        if dt_s <= 0:
            return p, void, 0.0
        if void > 0.0:
            q = -p / r  # backflow into the void at the floor pressure (nL/s, p < 0)
            t_fill = void / q if q > 0 else math.inf
            if dt_s < t_fill:
                return p, void - q * dt_s, -q * dt_s
            out -= void
            void = 0.0
            dt_s -= t_fill
        p1 = p * math.exp(-dt_s / (r * c))
        return p1, void, out + c * (p - p1)

    def _record(self) -> None:
        self._h_t.append(self._t)
        self._h.append((self._p, self._void, self._out, self._x, self._c, self._r, self._last_step_t,
                        self._last_dir, self._dwell_us, self._res, self._loaded))

    def _advance(self, t_us: int) -> None:
        """Process every event with time <= t_us."""
        if not self._src.consistent():  # a train was cut short behind what was evaluated
            self._reset()
        src, cfg = self._src, self._cfg
        travel = self.params.travel_steps
        while True:
            ts = src.peek()
            tc = cfg[self._ci][0] if self._ci < len(cfg) else None
            if ts is not None and ts <= t_us and (tc is None or ts < tc):
                t, d, dv = src.pop()
                if t < self._t:
                    raise ValueError("steps must come in time order (trains overlap or are out of order)")
                self._go(t)
                if self._loaded:
                    self._x += d
                    v = self._c * self._p - self._void + dv
                    self._c = self._res.compliance(self._x, travel)
                    if v >= 0:
                        self._p, self._void = v / self._c, 0.0
                    else:
                        self._p = max(v / self._c, self.params.p_floor_kpa)
                        self._void = self._p * self._c - v
                    self._dwell_us = t - self._last_step_t if self._last_step_t is not None else 10 ** 12
                    self._last_step_t = t
                    self._last_dir = d
                if d > 0:
                    self._steps_fwd += 1
                else:
                    self._steps_back += 1
                self._record()
            elif tc is not None and tc <= t_us:
                t, _, kind, value = cfg[self._ci]
                self._ci += 1
                self._go(t)
                if kind == "r":
                    self._factor = value
                elif kind == "out":
                    self._loaded = False
                    self._p = self._void = 0.0
                    self._last_step_t = None
                elif kind == "in":
                    self._loaded = True
                    self._res = self.reservoir(self._res.index + 1)
                    self._x = 0
                    self._p = self._void = 0.0
                    self._c = self._res.compliance(0, travel)
                    self._last_step_t = None
                self._r = self._res.r_open_kpa_s_nl * self._factor
                self._record()
            else:
                break

    def _go(self, t: int) -> None:
        if self._t >= 0 and self._loaded:
            self._p, self._void, dout = self._relax(self._p, self._void, self._c, self._r,
                                                    (t - self._t) / 1e6)
            self._out += dout
        self._t = t

    def _state(self, t_ms: float) -> tuple:
        """(p, void, out, x, c, r, last_step_t, last_dir, dwell, reservoir, loaded) at t_ms."""
        t_us = int(math.floor(t_ms * 1000 + 1e-6))
        self._advance(t_us)
        j = bisect.bisect_right(self._h_t, t_us) - 1
        if j < 0:
            res = self.reservoir(0)
            return (0.0, 0.0, 0.0, 0, res.compliance(0, self.params.travel_steps), res.r_open_kpa_s_nl,
                    None, 1, 0, res, True)
        p, void, out, x, c, r, lst, ld, dw, res, loaded = self._h[j]
        if loaded:
            p, void, dout = self._relax(p, void, c, r, (t_ms * 1000 - self._h_t[j]) / 1e6)
            out += dout
        return p, void, out, x, c, r, lst, ld, dw, res, loaded

    # ---- measurements ---------------------------------------------------------------------------
    def pressure_at(self, t_ms: float) -> float:
        """Gauge pressure of the fluid, kPa."""
        return self._state(t_ms)[0]

    def delivered_nl_at(self, t_ms: float) -> float:
        """Cumulative volume out of the cannula since t = 0 (negative flow = backflow)."""
        return self._state(t_ms)[2]

    def delivered_nl_between(self, t0_ms: float, t1_ms: float) -> float:
        return self.delivered_nl_at(t1_ms) - self.delivered_nl_at(t0_ms)

    def stored_nl_at(self, t_ms: float) -> float:
        """Volume held in the compliance (what would leave if the line opened now), nL."""
        s = self._state(t_ms)
        return s[0] * s[4] - s[1]

    def compliance_at(self, t_ms: float) -> float:
        return self._state(t_ms)[4]

    def resistance_at(self, t_ms: float) -> float:
        return self._state(t_ms)[5]

    def position_steps_at(self, t_ms: float) -> int:
        return self._state(t_ms)[3]

    def friction_n_at(self, t_ms: float) -> float:
        return self._friction(t_ms, self._state(t_ms))

    def _friction(self, t_ms: float, s: tuple) -> float:
        _, _, _, x, _, _, last, d, dwell, res, loaded = s
        if not loaded or last is None or not res.glide_n:
            return 0.0
        p = self.params
        g = res.glide(x, p.travel_steps)
        if p.glide_roughness:
            g *= 1.0 + p.glide_roughness * hash_normal(res.rough_key, x)
        since_ms = t_ms - last / 1000.0
        f = p.hold_ratio * g + (1.0 - p.hold_ratio) * g * math.exp(-since_ms / (p.friction_relax_s * 1000))
        if since_ms < p.breakaway_ms:
            dw_s = dwell / 1e6
            f += g * (res.breakaway_base * (1.0 - math.exp(-dw_s)) + res.breakaway_log * math.log10(1.0 + dw_s))
        return d * f

    def drift_n_at(self, t_ms: float) -> float:
        p = self.params
        f = self.drift_rate * t_ms / MS_PER_DAY
        f += p.drift_diurnal_n * math.sin(2 * math.pi * t_ms / MS_PER_DAY + self.diurnal_phase)
        for a, per, ph in self.slow:
            f += a * math.sin(2 * math.pi * t_ms / per + ph)
        return f

    def force_n_at(self, t_ms: float, with_drift: bool = True) -> float:
        """Noise-free axial force on the sensor, N (pressure * area + friction [+ drift])."""
        s = self._state(t_ms)
        f = s[0] * self.params.area_mm2 / 1000.0 + self._friction(t_ms, s) if s[10] else 0.0
        return f + (self.drift_n_at(t_ms) if with_drift else 0.0)

    def sensor_at(self, t_ms: float) -> int:
        """The raw ADC reading of the force sensor at t_ms (deterministic for seed and t)."""
        v = self.zero + self.gain * self.force_n_at(t_ms)
        if self.params.noise_counts:
            v += self.params.noise_counts * hash_normal(self.noise_key, t_ms)
        return int(min(self.params.adc_max, max(0, round(v))))

    def counts_to_n(self, counts: float) -> float:
        """Nominal conversion (datasheet zero and gain - the firmware does not know the unit's)."""
        return (counts - self.params.zero_counts) / self.params.counts_per_n

    def series(self, t_ms, what: str = "sensor") -> np.ndarray:
        """Sample `what` (sensor, pressure, delivered, force, friction) at each time."""
        fn = {"sensor": self.sensor_at, "pressure": self.pressure_at, "delivered": self.delivered_nl_at,
              "force": self.force_n_at, "friction": self.friction_n_at, "stored": self.stored_nl_at}[what]
        return np.array([fn(float(t)) for t in t_ms])

    # ---- derived figures ------------------------------------------------------------------------
    def kpa_per_step_occluded(self, x_steps: int = 0, reservoir: int = 0) -> float:
        """Pressure rise per forward step with the outflow blocked."""
        return self.params.nl_per_step / self.reservoir(reservoir).compliance(x_steps, self.params.travel_steps)

    def time_constant_s(self, x_steps: int = 0, reservoir: int = 0) -> float:
        res = self.reservoir(reservoir)
        return res.r_open_kpa_s_nl * res.compliance(x_steps, self.params.travel_steps)
