# Real-time mode of the simulator HAL: the wall clock drives the ticks, for people driving the
# simulated pump by hand and for latency measurements. Everything else is sim.py's.
import time

from .sim import Hal


class RealtimeHal(Hal):
    def __init__(self, bus_port, console_port, root):
        super().__init__(bus_port, console_port, root)
        self.t0 = time.ticks_ms()

    def now_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.t0)

    def wait(self):
        d = self.next_tick - self.now_ms()
        if d <= 0:
            return self._ticked()
        self._poll(d if d < 50 else 50)
        return True


