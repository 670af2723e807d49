# The ESP32 HAL (ESP32 DevKitC, MicroPython 1.24+ on ESP-IDF 5). Console, clock, storage and
# annunciator come from board_common; this module adds the step generator:
#
#   RMT   esp32.RMT emits the train on PINS["step"]: each step is a STEP_HIGH_US high pulse, then
#         the rest of the 1/hz period low. A low longer than RMT.PULSE_MAX ticks (1 MHz
#         resolution, so ~32.7 ms: any rate under ~31 Hz) is split into several low items.
#   PCNT  esp32.PCNT counts rising edges on PINS["step_sense"], a GPIO wired to the STEP line at
#         the driver's input, so count() is what the driver actually saw - not what was queued.
#
# The driver steps on STEP's rising edge and PCNT counts rising edges, so a train cut short
# mid-pulse is still counted exactly: the edge that moved the motor is the edge that was counted.
import time

import esp32
from machine import Pin
from micropython import const

from basalt.hal.board_common import make_board_hal

_RES_HZ = const(1_000_000)  # RMT resolution: 1 us per tick (80 MHz APB / 80)
_STEP_HIGH_US = const(10)  # STEP high time; A4988 needs >= 1 us, TMC2209 >= 100 ns
_DIR_SETUP_US = const(5)  # low lead-in so DIR is settled before the first rising edge
_PCNT_UNIT = const(0)
_PCNT_FILTER = const(80)  # ignore glitches shorter than 1 us (80 ticks of 80 MHz)
_PCNT_MAX = const(32767)  # the 16-bit counter's ceiling: the longest train one start() may ask
_SETTLE_MS = const(2)  # slack past a train's nominal end before a short count is believed
_ANNUNCIATOR_TIMER = const(0)  # hardware timer 0 (ESP32 has 0..3)


class Motor:
    def __init__(self, pins, dir_deliver_level=1):
        self.dir = Pin(pins["dir"], Pin.OUT, value=0)
        self.en = Pin(pins["enable"], Pin.OUT, value=1)  # EN is active low: start disabled
        self.deliver_level = dir_deliver_level
        self.sense = Pin(pins["step_sense"], Pin.IN)
        self.rmt = esp32.RMT(pin=Pin(pins["step"], Pin.OUT, value=0), resolution_hz=_RES_HZ, idle_level=False)
        self.pcnt = esp32.PCNT(_PCNT_UNIT, pin=self.sense, rising=esp32.PCNT.INCREMENT,
                               falling=esp32.PCNT.IGNORE, filter=_PCNT_FILTER)
        self.pcnt.start()
        self.n = 0
        self.final = 0  # steps of the last train once it is over; -1 while one runs
        self.t_end = time.ticks_ms()  # by when the running train must be over
        self.kn = 0  # (n, hz) the cached pattern was built for
        self.khz = 0
        self.durations = []
        self.levels = []

    def _pattern(self, n, hz):
        """RMT items for n steps at hz (mode 3: durations and levels). The same train is asked
        for tick after tick (steady basal, bolus at speed), so the last lists are reused."""
        if n == self.kn and hz == self.khz:
            return
        pulse_max = esp32.RMT.PULSE_MAX
        period = _RES_HZ // hz
        low = period - _STEP_HIGH_US
        d = [_DIR_SETUP_US]
        lv = [False]
        for i in range(n):
            d.append(_STEP_HIGH_US)
            lv.append(True)
            if i == n - 1:
                break  # no trailing low: the line idles low and busy() ends with the last edge
            rest = low
            while rest > 0:
                chunk = rest if rest <= pulse_max else pulse_max
                d.append(chunk)
                lv.append(False)
                rest -= chunk
        self.durations = d
        self.levels = lv
        self.kn = n
        self.khz = hz

    def _idle(self):
        """Close the running train once the RMT is idle and the count is final: every edge
        counted, or the nominal length passed (so a transmission that has not visibly begun
        right after write_pulses() is never taken for a finished one)."""
        if self.final < 0 and not self.rmt.active():
            c = self.pcnt.value()
            if c >= self.n or time.ticks_diff(time.ticks_ms(), self.t_end) >= 0:
                self.final = c
                self.en.value(1)

    def start(self, n, hz, direction):
        if self.final < 0:
            self.stop()
        if n <= 0 or n > _PCNT_MAX or hz <= 0 or hz > _RES_HZ // (2 * _STEP_HIGH_US):
            raise ValueError("step train out of range")
        self._pattern(n, hz)
        self.dir.value(self.deliver_level if direction > 0 else 1 - self.deliver_level)
        self.en.value(0)
        self.pcnt.value(0)
        self.n = n
        self.final = -1
        self.t_end = time.ticks_add(time.ticks_ms(), (n - 1) * 1000 // hz + _SETTLE_MS)
        self.rmt.write_pulses(self.durations, self.levels)

    def count(self):
        self._idle()
        return self.final if self.final >= 0 else self.pcnt.value()

    def busy(self):
        self._idle()
        return self.final < 0

    def stop(self):
        if self.final < 0:
            self.rmt.active(False)  # abort the transmission; the line returns to idle (low)
            self.final = self.pcnt.value()
            self.en.value(1)
        return self.final


def make_hal(board, argv):
    motor = Motor(board.PINS, getattr(board, "DIR_DELIVER_LEVEL", 1))
    return make_board_hal(board, motor, _ANNUNCIATOR_TIMER)
