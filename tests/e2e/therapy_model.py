"""An independent model of the pump's documented delivery rules (docs/protocol.md), used as the
oracle that the firmware's plant log is checked against.

It is written from the rules, not from the firmware's code:
- each control tick covers one second of uptime u, at the rates in force at its start;
- basal accrues rate[mU/h] x 1000 per tick (x pct/100 for a percentage temp basal) into an
  accumulator, one step per 5000 uU x 3600, remainder carried (also across suspend);
- a temp basal covers the seconds [start, start + minutes*60);
- a normal bolus accrues speed[mU/min] x 1000 per tick, one step per 5000 uU x 60;
- an extended bolus of N steps over D seconds accrues N per tick, one step per D; after D
  seconds whatever is left goes at once;
- suspend and cancel end boluses (their accumulators restart at 0) and suspend ends a temp basal.
Commands are applied only at the instants the test issues them, between ticks (the test only
issues them when no step train is in flight, so no train is ever cut short).
"""
from __future__ import annotations

from dataclasses import dataclass, field

UU_PER_STEP = 5000
BASAL_UNIT = UU_PER_STEP * 3600
BOLUS_UNIT = UU_PER_STEP * 60


@dataclass
class TherapyModel:
    profiles: dict[str, list[int]] = field(default_factory=lambda: {"default": [0] * 48})
    active: str = "default"
    offset_s: int = 0  # local time minus uptime
    running: bool = False
    speed_mu_min: int = 1500
    basal_acc: int = 0
    temp: tuple | None = None  # (pct or -1, rate, end_u)
    normal: list | None = None  # [requested, delivered, acc]
    ext: list | None = None  # [requested, delivered, acc, start_u, duration_s]
    steps: int = 0  # therapy steps owed and delivered so far
    u: int = 0  # next second to deliver

    # ---- commands ---------------------------------------------------------------------------
    @staticmethod
    def slots(segments: list[list[int]]) -> list[int]:
        out = [0] * 48
        for i, (start, rate) in enumerate(segments):
            end = segments[i + 1][0] if i + 1 < len(segments) else 1440
            for s in range(start // 30, end // 30):
                out[s] = rate
        return out

    def profile_set(self, name, segments):
        self.profiles[name] = self.slots(segments)

    def suspend(self):
        self.running = False
        self.normal = self.ext = self.temp = None

    def bolus(self, now_steps, ext_steps=0, minutes=0):
        if now_steps:
            self.normal = [now_steps, 0, 0]
        if ext_steps:
            self.ext = [ext_steps, 0, 0, self.u, minutes * 60]

    def cancel(self, kind):
        if kind in ("normal", "all"):
            self.normal = None
        if kind in ("extended", "all"):
            self.ext = None

    def temp_basal(self, pct, rate, minutes):
        self.temp = (pct, rate, self.u + minutes * 60)

    # ---- delivery ---------------------------------------------------------------------------
    def tick(self):
        u = self.u
        minute = ((self.offset_s + u) // 60) % 1440
        self.u = u + 1
        if self.temp and u >= self.temp[2]:
            self.temp = None
        # a bolus whose last steps went out in the previous tick is over now
        if self.normal and self.normal[1] >= self.normal[0]:
            self.normal = None
        if self.ext and self.ext[1] >= self.ext[0]:
            self.ext = None
        if not self.running:
            return 0
        rate = self.profiles[self.active][minute // 30]
        if self.temp is None:
            self.basal_acc += rate * 1000
        elif self.temp[0] < 0:
            self.basal_acc += self.temp[1] * 1000
        else:
            self.basal_acc += rate * self.temp[0] * 10
        n = self.basal_acc // BASAL_UNIT
        self.basal_acc -= n * BASAL_UNIT
        if self.ext:
            req, done, acc, start, dur = self.ext
            if u - start >= dur:
                k = req - done
            else:
                acc += req
                k = min(acc // dur, req - done)
                acc -= (acc // dur) * dur
            self.ext = [req, done + k, acc, start, dur]
            n += k
        if self.normal:
            req, done, acc = self.normal
            acc += self.speed_mu_min * 1000
            k = acc // BOLUS_UNIT
            acc -= k * BOLUS_UNIT
            k = min(k, req - done)
            self.normal = [req, done + k, acc]
            n += k
        self.steps += n
        return n

    def run_to(self, u_end):
        """Deliver every second up to (not including) uptime u_end; return the steps."""
        n = 0
        while self.u < u_end:
            n += self.tick()
        return n
