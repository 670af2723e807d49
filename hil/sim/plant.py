"""The syringe and motor plant: the hardware the firmware drives, recorded step by step.

The firmware's sim HAL reports each step train it starts (@M t0 n hz dir) and any train it cuts
short (@X t emitted). Step i of a train happens at t0 + i*1000/hz ms - the same rule the HAL uses
to count - so the plant's log and the pump's counter agree on every step and its virtual time.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class Train:
    t0_ms: int
    n: int
    hz: int
    direction: int
    emitted: int

    def step_times_us(self):
        base = self.t0_ms * 1000
        return [base + i * 1_000_000 // self.hz for i in range(self.emitted)]


@dataclass
class SyringePlant:
    nl_per_step: int = 50
    trains: list[Train] = field(default_factory=list)

    # ---- bus messages -----------------------------------------------------------------------
    def on_train(self, t0_ms: int, n: int, hz: int, direction: int) -> None:
        self.trains.append(Train(t0_ms, n, hz, direction, n))

    def on_truncate(self, t_ms: int, emitted: int) -> None:
        if self.trains:
            self.trains[-1].emitted = min(self.trains[-1].emitted, emitted)

    # ---- measurements -----------------------------------------------------------------------
    @property
    def steps_per_unit(self) -> int:
        return 10_000 // self.nl_per_step

    def net_steps(self) -> int:
        """Plunger travel in steps, forward minus back."""
        return sum(t.emitted * t.direction for t in self.trains)

    def delivered_nl(self) -> int:
        return self.net_steps() * self.nl_per_step

    def step_times_us(self, direction: int = 1) -> list[int]:
        out: list[int] = []
        for t in self.trains:
            if t.direction == direction:
                out.extend(t.step_times_us())
        return out

    def steps_between(self, t_from_ms: float, t_to_ms: float) -> int:
        """Forward steps with t_from <= t < t_to."""
        times = self.step_times_us()
        return bisect.bisect_left(times, t_to_ms * 1000) - bisect.bisect_left(times, t_from_ms * 1000)

    def max_gap_ms(self, t_from_ms: float, t_to_ms: float) -> float:
        times = [t for t in self.step_times_us() if t_from_ms * 1000 <= t < t_to_ms * 1000]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0) / 1000
