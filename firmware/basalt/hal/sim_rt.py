# Real-time mode of the simulator HAL: the wall clock drives the ticks, for people driving the
# simulated pump by hand and for latency measurements. Everything else is sim.py's.
import time

from basalt.hal.sim import TICK_MS, Hal

# Never read: one object constant, because a loaded module with none, whose name table ends on a
# heap block, pins the next block for good (docs/memory.md; tests/e2e/test_power_cut.py checks).
_ANCHOR = ("real-time simulator HAL",)


class RealtimeHal(Hal):
    # made by sim_boot.py, which also sets `boot`: ticks_ms() at boot (not t0: the train start)

    def now_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.boot)

    def _train(self, line):
        self.send(line)  # real time: the harness pushes readings on its own schedule

    def wait(self):
        if self.ble:
            self.ble.deliver()
        if self.wdt_ms and self.now_ms() - self.fed > self.wdt_ms:
            self.send(b"%c %d" % (84, self.now_ms()))
            raise SystemExit(3)
        d = self.next_tick - self.now_ms()
        if d <= 0:
            self.next_tick += TICK_MS  # (the heap is sampled on the harness's I only)
            return False
        self.poll(d if d < 50 else 50)
        return True

    def wdt_start(self, ms):
        self.wdt_ms = ms
        self.fed = self.now_ms()
        self.send(b"%c %d %d" % (87, self.fed, ms))

    def wdt_feed(self):
        self.fed = self.now_ms()


