"""The simulated board's hardware behind the firmware: force sensor, battery, reservoir switch,
motor encoder - and the faults that can be injected into them.

SimHardware is the SimDevice every SimPump carries (`sim.hardware`). It answers each step train
(@M) and each cut (@X) with one `S <pressure> <battery> <flags> <encoder>` line: the readings the
firmware will see at its next tick, sampled 1 ms before that tick (`tick_sample_ms`), after the
train has run. While the firmware is paused it pushes idle readings every 60 s of virtual time
(`IDLE_PUSH_MS`) and at every injected event. In real-time mode it pushes one every second.

Two motion logs, kept apart on purpose:

- `sim.plant` (SyringePlant): what the motor driver *emitted* - the firmware's step trains,
  exactly as the firmware counts them. It is the record the delivery tests check against.
- `hardware.motion` (a SyringePlant too): what the mechanism *really did*. Without faults it is a
  copy of the emitted trains. A stall logs nothing (pulses, no motion), missed steps log fewer
  steps, a runaway logs motion no train asked for, and a disabled driver (@E 0) moves nothing.
  The fluid path (`PressureModel`) and the encoder read this log, so the force sensor and the
  insulin that reaches the patient (`delivered_nl_between`) follow the real motion.

The battery reads the emitted log: the driver is energised for every train it emits, moving or
stalled (a runaway's own current is not modelled; it lasts until the next tick at most).

Reservoir: seated from the start (reservoir 0 of the pressure model). When a rewind brings the
plunger home (real position back to 0) the old reservoir is taken to be out and a fresh one (new
friction, compliance, air and infusion site) is the one primed and delivered from, so the normal
reservoir workflow needs no injection. `remove_reservoir`/`seat_reservoir` model the switch
explicitly (flags bit 0) for the tests of a reservoir pulled out during delivery.

Injections take effect at a virtual time `at_ms` (default: now). A time in the future is
scheduled: SimPump.run_until pauses the firmware there (due_ms) and the event is applied and
pushed while it is paused, so its effect reaches the firmware at exactly that time. Faults end at
`until_ms` or with `motor_ok()`/`encoder_ok()`. docs/plant.md has the model, docs/scenarios.md
the scenario actions.
"""
from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass

from hil.sim.battery import BatteryModel, BatteryParams
from hil.sim.firmware import SimDevice
from hil.sim.plant import SyringePlant, Train
from hil.sim.pressure import PressureModel, PressureParams

TICK_MS = 1000
IDLE_PUSH_MS = 60_000  # idle readings (no trains) reach the firmware once a virtual minute
RESERVOIR_SEATED = 1  # S flags bit 0


def next_tick_ms(t_ms: int) -> int:
    """The firmware's next control tick after virtual time t_ms (paused at a tick, it has run)."""
    return (int(t_ms) // TICK_MS + 1) * TICK_MS


def tick_sample_ms(tick_ms: int) -> int:
    """When the readings a tick sees are sampled: 1 ms before it - after the train of the tick
    before (its last step is at most 997.5 ms in, at 400 Hz), before the tick starts its own."""
    return tick_ms - 1


def steps_by(tr: Train, t_ms: float) -> int:
    """Steps of a train done at or before t_ms (step i at t0 + i*1000/hz ms, the HAL's rule)."""
    if t_ms < tr.t0_ms:
        return 0
    d_us = int(round((t_ms - tr.t0_ms) * 1000))
    return min(tr.emitted, ((d_us + 1) * tr.hz + 999_999) // 1_000_000)


@dataclass(order=True)
class _Event:
    t_ms: int
    seq: int
    what: str = ""
    args: tuple = ()


class SimHardware(SimDevice):
    """Sensors, encoder and injected faults of one simulated pump (seed = the pump's unit)."""

    def __init__(self, plant: SyringePlant, seed: int = 0, pressure: PressureParams | None = None,
                 battery: BatteryParams | None = None, record: bool = False):
        self.seed = seed
        self.plant = plant  # emitted trains (SimPump's)
        self.motion = SyringePlant(nl_per_step=plant.nl_per_step)  # real motion
        self.pressure = PressureModel(pressure, seed, plant=self.motion)
        self.battery = BatteryModel(battery, seed, plant=plant)
        self.seated = True
        self.enabled = True  # the driver's enable pin (@E)
        self.readings: list[tuple[int, int, int, int, int]] | None = [] if record else None
        self.log: list[tuple[int, str, tuple]] = []  # (t_ms, event, args) as applied
        self.now_ms = 0
        # faults
        self.stalled = False
        self.missed = 0.0  # fraction of steps not executed
        self._missed_acc = 0.0
        self.runaway: Train | None = None  # the motion a runaway is making, while it lasts
        self.enc_offset = 0
        self.enc_scale = 1.0
        self._enc_from = 0  # real position when the scale fault began
        # bookkeeping
        self._net = 0  # sum of the real trains' signed steps
        self._real: Train | None = None  # the real train made of the emitted one in flight
        self._home: tuple[Train, int] | None = None  # a rewind train and the steps that bring it home
        self._new_on_seat = False
        self._homed: tuple | None = None  # the latest rewind home: (train, steps, new-reservoir time)
        self._events: list[_Event] = []
        self._seq = 0
        self._lock = threading.RLock()
        self._sim = None
        self._ready = False
        self._rt: threading.Thread | None = None

    # ---- SimDevice ------------------------------------------------------------------------------
    def due_ms(self, now_ms: int) -> int | None:
        with self._lock:
            nxt = (now_ms // IDLE_PUSH_MS + 1) * IDLE_PUSH_MS
            if self._events and now_ms < self._events[0].t_ms < nxt:
                nxt = self._events[0].t_ms
            return nxt

    def at(self, sim, t_ms: int) -> None:
        with self._lock:
            self.now_ms = t_ms
            fired = self._apply_due(t_ms)
            if fired or t_ms % IDLE_PUSH_MS == 0:
                self._push(next_tick_ms(t_ms))

    def on_message(self, sim, kind: str, fields: list[str]) -> None:
        if kind == "M":
            with self._lock:
                t0 = int(fields[0])
                self.now_ms = t0
                self._apply_due(t0)
                self._train(t0, int(fields[1]), int(fields[2]), int(fields[3]))
                self._answer(next_tick_ms(t0))
        elif kind == "X":
            with self._lock:
                t = int(fields[0])
                self.now_ms = t
                self._cut(t)
                self._answer(next_tick_ms(t))
        elif kind == "A":
            with self._lock:
                self.now_ms = int(fields[0])
        elif kind == "E":
            with self._lock:
                self._enable(int(fields[0]), fields[1] == "1")
        elif kind == "R":
            with self._lock:
                self._sim = sim
                self._ready = True
                self._push(next_tick_ms(self.now_ms))
            if sim.mode == "realtime" and self._rt is None:
                self._rt = threading.Thread(target=self._realtime, args=(sim,), daemon=True, name="sim-hw")
                self._rt.start()

    # ---- injection (Python API; the scenario actions call these) -------------------------------
    def occlude(self, at_ms: int | None = None, factor: float | None = None, until_ms: int | None = None) -> None:
        """Block the line (factor: resistance x factor, default a complete occlusion; 10-1000 is
        partial) from at_ms, until until_ms or clear_occlusion()."""
        self._schedule(at_ms, "occlude", (factor,))
        if until_ms is not None:
            self._schedule(until_ms, "clear", ())

    def clear_occlusion(self, at_ms: int | None = None) -> None:
        self._schedule(at_ms, "clear", ())

    def remove_reservoir(self, at_ms: int | None = None) -> None:
        self._schedule(at_ms, "remove", ())

    def seat_reservoir(self, at_ms: int | None = None, new: bool = False) -> None:
        """The reservoir switch closes: the same reservoir back where it was, or a new one (always
        a new one after the plunger was rewound home with the reservoir out)."""
        self._schedule(at_ms, "seat", (new,))

    def battery_soc(self, soc: float, at_ms: int | None = None) -> None:
        """Drain (or charge) the cell in use to `soc` (0..1) at at_ms."""
        if not 0.0 <= soc <= 1.0:
            raise ValueError("state of charge is 0..1")
        self._schedule(at_ms, "drain", (soc,))

    def replace_battery(self, at_ms: int | None = None, soc: float = 1.0) -> None:
        self._schedule(at_ms, "battery", (soc,))

    def stall(self, at_ms: int | None = None, until_ms: int | None = None) -> None:
        """The motor stalls: pulses are emitted (and counted), the mechanism does not move."""
        self._schedule(at_ms, "stall", ())
        self._end_at(until_ms)

    def missed_steps(self, fraction: float, at_ms: int | None = None, until_ms: int | None = None) -> None:
        """A fraction (0..1) of the emitted steps is not executed (spread evenly)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError("missed fraction is in (0, 1]")
        self._schedule(at_ms, "missed", (fraction,))
        self._end_at(until_ms)

    def run_away(self, hz: int = 10, at_ms: int | None = None, until_ms: int | None = None) -> None:
        """The motor turns forward at hz without any train, until the firmware disables the driver
        (@E 0), the fault ends, or the plunger reaches the end of the reservoir."""
        if not 1 <= hz <= 10_000:
            raise ValueError("runaway rate is 1..10000 Hz")
        self._schedule(at_ms, "runaway", (int(hz),))
        self._end_at(until_ms)

    def motor_ok(self, at_ms: int | None = None) -> None:
        """End every motor fault (stall, missed steps, runaway)."""
        self._schedule(at_ms, "motor_ok", ())

    def encoder_fault(self, offset: int = 0, scale: float = 1.0, at_ms: int | None = None,
                      until_ms: int | None = None) -> None:
        """The encoder jumps by `offset` counts and/or counts `scale` counts per real step from at_ms."""
        if not 0.0 <= scale <= 10.0:
            raise ValueError("encoder scale is 0..10")
        self._schedule(at_ms, "encoder", (int(offset), float(scale)))
        if until_ms is not None:
            self._schedule(until_ms, "encoder_ok", ())

    def encoder_ok(self, at_ms: int | None = None) -> None:
        """The encoder counts right again (its reading then matches the real position)."""
        self._schedule(at_ms, "encoder_ok", ())

    def _end_at(self, until_ms: int | None) -> None:
        if until_ms is not None:
            self._schedule(until_ms, "motor_ok", ())

    def _schedule(self, at_ms: int | None, what: str, args: tuple) -> None:
        with self._lock:
            t = self.now_ms if at_ms is None else int(at_ms)
            if t < self.now_ms:
                raise ValueError(f"cannot inject {what} in the past ({t} ms < now {self.now_ms} ms)")
            self._seq += 1
            heapq.heappush(self._events, _Event(t, self._seq, what, args))
            if t == self.now_ms:  # now: the firmware is paused here - apply and tell it at once
                self._apply_due(t)
                self._push(next_tick_ms(t))

    def _apply_due(self, t_ms: int) -> bool:
        fired = False
        while self._events and self._events[0].t_ms <= t_ms:
            e = heapq.heappop(self._events)
            self._apply(e.t_ms, e.what, e.args)
            fired = True
        return fired

    def _apply(self, t: int, what: str, args: tuple) -> None:
        self.log.append((t, what, args))
        p = self.pressure
        if what == "occlude":
            p.occlude(t, factor=args[0])
        elif what == "clear":
            p.clear(t)
        elif what == "remove":
            if self.seated:
                self.seated = False
                p.remove_reservoir(t)
        elif what == "seat":
            if not self.seated:
                self.seated = True
                (p.new_reservoir if args[0] or self._new_on_seat else p.reseat_reservoir)(t)
                self._new_on_seat = False
        elif what == "drain":
            self.battery.drain(t, args[0])
        elif what == "battery":
            self.battery.replace(t, args[0])
        elif what in ("stall", "runaway", "motor_ok"):
            if what != "motor_ok":
                self._cut_real(t)  # the train in flight stops moving at t
            self._end_runaway(t)
            self.stalled = what == "stall"
            self.missed = 0.0
            if what == "runaway" and self.enabled:
                room = max(0, self.pressure.params.travel_steps - self.position_at(t))
                if room:
                    self.runaway = self._add_real(Train(t, room, args[0], 1, room))
        elif what == "missed":
            self.stalled = False
            self.missed = args[0]
        elif what == "encoder":
            # keep the error counted so far, add the jump, count at the new scale from here
            pos = self.position_at(t)
            self.enc_offset = self.encoder_at(t) - pos + args[0]
            self.enc_scale, self._enc_from = args[1], pos
        elif what == "encoder_ok":
            self.enc_offset, self.enc_scale = 0, 1.0

    # ---- motion ---------------------------------------------------------------------------------
    def _add_real(self, tr: Train) -> Train:
        self.motion.trains.append(tr)
        self._net += tr.emitted * tr.direction
        return tr

    def _truncate(self, tr: Train, emitted: int) -> None:
        if emitted < tr.emitted:
            self._net -= (tr.emitted - emitted) * tr.direction
            tr.emitted = emitted

    def _cut_real(self, t: int) -> None:
        """The real train in flight makes no further steps after t."""
        if self._real is not None:
            self._truncate(self._real, steps_by(self._real, t))

    def _end_runaway(self, t: int) -> None:
        if self.runaway is not None:
            self._truncate(self.runaway, steps_by(self.runaway, t))
            self.runaway = None

    def _enable(self, t: int, on: bool) -> None:
        self.log.append((t, "enable", (on,)))
        if not on:
            self._cut_real(t)
            self._end_runaway(t)
        self.enabled = on

    def _train(self, t0: int, n: int, hz: int, direction: int) -> None:
        """An emitted train: what the mechanism really does with it."""
        self._real = self._homed = None
        if self.runaway is not None and steps_by(self.runaway, t0) >= self.runaway.emitted:
            self.runaway = None  # ran to the end of the reservoir
        if not self.enabled or self.stalled or self.runaway is not None or n <= 0:
            return
        real = n
        if self.missed:
            self._missed_acc += n * self.missed
            lost = min(n, int(self._missed_acc))
            self._missed_acc -= lost
            real = n - lost
        if real <= 0:
            return
        before = self._net
        # missed steps are spread over the train: the real ones come at a proportionally lower rate
        self._real = self._add_real(Train(t0, real, max(1, hz * real // n), direction, real))
        if direction < 0 and before > 0 >= self._net:
            self._home = (self._real, before)  # a rewind that reaches home (unless it is cut short)

    def _reached_home(self, t_ms: float) -> None:
        """A rewind brought the plunger home by t_ms: the old reservoir is out and a fresh one is
        primed and delivered from, just after the last step back."""
        tr, needed = self._home
        if tr.emitted < needed:  # cut short before home
            self._home = None
            return
        home_us = tr.t0_ms * 1000 + (needed - 1) * 1_000_000 // tr.hz
        if home_us > t_ms * 1000:
            return
        self._home = None
        if self.seated:
            self.pressure.new_reservoir((home_us + 1) / 1000)
            self.log.append((home_us // 1000, "new_reservoir", ()))
            self._homed = (tr, needed, (home_us + 1) / 1000)
        else:
            self._new_on_seat = True  # rewound with the reservoir out: the next one seated is new

    def _cut(self, t: int) -> None:
        """The emitted train was cut short at t (SimPump logs that): the real one stops there too,
        and a rewind cut before home changes no reservoir after all."""
        self._cut_real(t)
        if self._homed is not None and self._homed[0].emitted < self._homed[1]:
            self.pressure.cancel(self._homed[2], "in")
            self.log.append((t, "new_reservoir_cancelled", ()))
        self._homed = None

    def position_at(self, t_ms: float) -> int:
        """Real net position of the mechanism (steps, forward positive) at t_ms."""
        pos = self._net
        for tr in reversed(self.motion.trains):  # trains never overlap: only the last may be partial
            done = steps_by(tr, t_ms)
            pos -= (tr.emitted - done) * tr.direction
            if tr.t0_ms <= t_ms and done == tr.emitted:
                break
        return pos

    def encoder_at(self, t_ms: float) -> int:
        pos = self.position_at(t_ms)
        return pos + self.enc_offset + round((self.enc_scale - 1.0) * (pos - self._enc_from))

    # ---- readings -------------------------------------------------------------------------------
    def reading(self, tick_ms: int) -> tuple[int, int, int, int]:
        """(pressure, battery, flags, encoder) as the firmware sees them at tick_ms."""
        t = tick_sample_ms(tick_ms)
        return (self.pressure.sensor_at(t), self.battery.adc_at(t), RESERVOIR_SEATED if self.seated else 0,
                self.encoder_at(t))

    def _answer(self, tick_ms: int) -> None:
        if self._home is not None:
            self._reached_home(tick_sample_ms(tick_ms))
        r = self.reading(tick_ms)
        if self.readings is not None:
            self.readings.append((tick_ms, *r))
        self._sim.send_line(f"S {r[0]} {r[1]} {r[2]} {r[3]}")

    def _push(self, tick_ms: int) -> None:
        if self._ready and self._sim is not None and self._sim.mode == "lockstep":
            self._answer(tick_ms)

    def _realtime(self, sim) -> None:
        """Real-time mode: the firmware's clock is the wall clock since it said ready; right after
        each tick, the readings for the next one."""
        t_boot = time.monotonic()
        while sim.proc is not None and sim.proc.poll() is None:
            now = int((time.monotonic() - t_boot) * 1000)
            tick = next_tick_ms(now)
            with self._lock:
                self.now_ms = now
                self._apply_due(now)
                try:
                    self._answer(tick)
                except (OSError, RuntimeError):
                    return
            time.sleep(max(0.01, (tick - now) / 1000 + 0.005))

    # ---- what reached the patient ---------------------------------------------------------------
    def delivered_nl_between(self, t0_ms: float, t1_ms: float) -> float:
        """Insulin out of the cannula in (t0, t1], nL - after faults, compliance and occlusions."""
        return self.pressure.delivered_nl_between(t0_ms, t1_ms)

    def moved_steps_between(self, t0_ms: float, t1_ms: float) -> int:
        """Net real plunger travel in (t0, t1], steps."""
        return self.position_at(t1_ms) - self.position_at(t0_ms)

