"""The pump's battery: one 1200 mAh single-cell Li-ion (LiCoO2/NMC pouch, 3.0-4.2 V).

Groundwork for the power part of the occlusion/power issue (docs/plant.md has the sources). The
cell feeds the board through a buck-boost regulator (so the board runs down to the cell's 3.0 V
cut-off) and is read through the boards' 100 k / 100 k divider into a 12-bit ADC (docs/boards.md).

    charge drawn   Q(t) = I_idle * t + self-discharge * t + I_motor * (time the driver is energised)
    state of charge SoC(t) = SoC0 - Q(t) / capacity                     (clamped at 0)
    terminal volts  V(t) = OCV(SoC) - I(t) * R_int(SoC)                 I = I_idle (+ I_motor in a train)

The driver is energised for each step train (the SyringePlant's trains: from t0 for emitted/hz
seconds, plus hold_ms), so the motor's charge per step is I_motor / hz + a per-train overhead.
At SoC 0 the cell's protection circuit opens: the voltage reads 0 from then on (until `replace`).
Deterministic for a seed: the cell-to-cell variation (capacity, internal resistance, idle current)
is drawn per cell from the seed and the cell's index; the ADC noise is a hash of (seed, t).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from hil.sim.pressure import _splitmix64, hash_normal

MS_PER_H = 3_600_000

# Open-circuit voltage of a LiCoO2/graphite cell at rest, 25 C (engineering estimate from typical
# published OCV curves; 4.20 V full, 3.00 V cut-off, a flat plateau 3.7-3.9 V and a knee below 10%).
OCV_TABLE = ((0.00, 3.00), (0.02, 3.30), (0.05, 3.45), (0.10, 3.60), (0.20, 3.70), (0.30, 3.75),
             (0.40, 3.79), (0.50, 3.83), (0.60, 3.87), (0.70, 3.93), (0.80, 3.99), (0.90, 4.07),
             (1.00, 4.20))


def ocv(soc: float) -> float:
    soc = min(1.0, max(0.0, soc))
    xs = [a for a, _ in OCV_TABLE]
    i = max(1, bisect.bisect_left(xs, soc))
    (s0, v0), (s1, v1) = OCV_TABLE[i - 1], OCV_TABLE[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


@dataclass(frozen=True)
class BatteryParams:
    capacity_mah: float = 1200.0
    capacity_sigma: float = 0.04  # relative, per cell
    self_discharge_month: float = 0.03  # fraction of capacity per 30 days
    idle_ma: float = 4.0  # MCU mostly light-sleeping + BLE advertising + sensor amplifier
    idle_sigma: float = 0.10  # relative, per cell/board
    motor_ma: float = 300.0  # from the cell while the driver is energised (coil current via regulator)
    hold_ms: float = 20.0  # driver enable overhead per train
    r_int_ohm: float = 0.15  # at mid SoC, per cell spread below
    r_int_sigma: float = 0.20
    r_int_empty_factor: float = 2.0  # R_int rises linearly to this factor from 20% to 0% SoC
    soc0: float = 1.0  # a new cell is full
    divider: float = 0.5  # 100 k / 100 k
    adc_vref: float = 3.3
    adc_max: int = 4095
    adc_noise_counts: float = 3.0

    def with_(self, **changes) -> BatteryParams:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    index: int
    t_install_ms: float
    soc0: float
    capacity_mah: float
    idle_ma: float
    r_int_ohm: float
    motor_mah_before: float  # motor charge drawn (from all cells) before this one went in


class BatteryModel:
    """The battery of one pump, reading the motor's load from a SyringePlant's trains."""

    def __init__(self, params: BatteryParams | None = None, seed: int = 0, plant=None):
        self.params = params if params is not None else BatteryParams()
        self.seed = seed
        self.plant = plant
        self._cells: list[Cell] = []
        self._noise_key = _splitmix64(seed * 104729 + 3)
        # prefix sums of energised time over the plant's trains (all but the last, which may shrink)
        self._tr_t0: list[int] = []
        self._tr_cum_ms: list[float] = [0.0]
        self.replace(0.0, self.params.soc0)

    # ---- cells ----------------------------------------------------------------------------------
    def _draw(self, index: int, t_ms: float, soc0: float) -> Cell:
        p = self.params
        z = np.random.default_rng([self.seed, 3, index]).normal(size=3)
        return Cell(index, t_ms, soc0, p.capacity_mah * (1 + p.capacity_sigma * z[0]),
                    p.idle_ma * (1 + p.idle_sigma * z[1]), p.r_int_ohm * math.exp(p.r_int_sigma * z[2]),
                    self._motor_mah(t_ms) if self._cells or self.plant else 0.0)

    def replace(self, t_ms: float, soc: float | None = None) -> None:
        """A new cell goes in at t_ms (instantaneous swap), charged to soc (default params.soc0)."""
        if self._cells and t_ms < self._cells[-1].t_install_ms:
            raise ValueError("cells are replaced in time order")
        self._cells.append(self._draw(len(self._cells), t_ms, self.params.soc0 if soc is None else soc))

    def cell_at(self, t_ms: float) -> Cell:
        i = bisect.bisect_right([c.t_install_ms for c in self._cells], t_ms) - 1
        return self._cells[max(0, i)]

    # ---- load -----------------------------------------------------------------------------------
    def _train_ms(self, tr) -> float:
        return tr.emitted * 1000.0 / tr.hz + (self.params.hold_ms if tr.emitted else 0.0)

    def _sync(self) -> None:
        trains = self.plant.trains
        while len(self._tr_t0) < len(trains) - 1:  # finalised trains only
            tr = trains[len(self._tr_t0)]
            self._tr_t0.append(tr.t0_ms)
            self._tr_cum_ms.append(self._tr_cum_ms[-1] + self._train_ms(tr))

    def _energised_ms(self, t_ms: float) -> tuple[float, bool]:
        """Driver-on time before t_ms over all trains, and whether it is on at t_ms."""
        if self.plant is None or not self.plant.trains:
            return 0.0, False
        self._sync()
        total, on = 0.0, False
        k = bisect.bisect_right(self._tr_t0, t_ms)  # finalised trains started by t_ms
        partial = [self.plant.trains[k - 1]] if k else []
        if k:
            total = self._tr_cum_ms[k - 1]
        last = self.plant.trains[-1]
        if last.t0_ms <= t_ms:
            partial.append(last)
        for tr in partial:
            dur, el = self._train_ms(tr), t_ms - tr.t0_ms
            total += min(el, dur)
            on = on or el < dur
        return total, on

    def _motor_mah(self, t_ms: float) -> float:
        return self._energised_ms(t_ms)[0] * self.params.motor_ma / MS_PER_H

    def current_ma_at(self, t_ms: float) -> float:
        c = self.cell_at(t_ms)
        return c.idle_ma + (self.params.motor_ma if self._energised_ms(t_ms)[1] else 0.0)

    # ---- state ----------------------------------------------------------------------------------
    def drawn_mah_at(self, t_ms: float) -> float:
        """Charge the current cell has given since it went in (load + self-discharge)."""
        p = self.params
        c = self.cell_at(t_ms)
        dt_h = max(0.0, t_ms - c.t_install_ms) / MS_PER_H
        motor = self._motor_mah(t_ms) - c.motor_mah_before
        self_dis = c.capacity_mah * p.self_discharge_month * dt_h / (30 * 24)
        return c.idle_ma * dt_h + self_dis + motor

    def soc_at(self, t_ms: float) -> float:
        c = self.cell_at(t_ms)
        return max(0.0, c.soc0 - self.drawn_mah_at(t_ms) / c.capacity_mah)

    def r_int_at(self, t_ms: float) -> float:
        c = self.cell_at(t_ms)
        soc = self.soc_at(t_ms)
        k = 1.0 + (self.params.r_int_empty_factor - 1.0) * max(0.0, 0.2 - soc) / 0.2
        return c.r_int_ohm * k

    def depleted_at(self, t_ms: float) -> bool:
        return self.soc_at(t_ms) <= 0.0

    def voltage_at(self, t_ms: float) -> float:
        """Terminal voltage under the present load (0 once the protection circuit has opened)."""
        soc = self.soc_at(t_ms)
        if soc <= 0.0:
            return 0.0
        return ocv(soc) - self.current_ma_at(t_ms) / 1000.0 * self.r_int_at(t_ms)

    def ocv_at(self, t_ms: float) -> float:
        soc = self.soc_at(t_ms)
        return ocv(soc) if soc > 0 else 0.0

    def adc_at(self, t_ms: float) -> int:
        """Raw 12-bit reading of the battery pin (through the divider)."""
        p = self.params
        v = self.voltage_at(t_ms) * p.divider / p.adc_vref * p.adc_max
        if p.adc_noise_counts:
            v += p.adc_noise_counts * hash_normal(self._noise_key, t_ms)
        return int(min(p.adc_max, max(0, round(v))))

    def counts_to_volts(self, counts: float) -> float:
        p = self.params
        return counts / p.adc_max * p.adc_vref / p.divider

    def hours_to_soc(self, soc: float, extra_ma: float = 0.0) -> float:
        """Rough remaining time (h) from the present cell's start to `soc` at idle (+extra) current."""
        c = self._cells[-1]
        rate = c.idle_ma + extra_ma + c.capacity_mah * self.params.self_discharge_month / (30 * 24)
        return (c.soc0 - soc) * c.capacity_mah / rate
