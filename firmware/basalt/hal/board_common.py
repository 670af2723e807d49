# Code shared by the real-board HALs (esp32.py, rp2.py): everything except the step generator.
#
#   Console      the REPL's byte stream (USB-CDC on the Pico W, UART0 behind the USB bridge on an
#                ESP32 DevKitC) through sys.stdin / sys.stdout, polled so it never blocks
#   TickClock    real time from time.ticks_ms; wait() sleeps in poll() until console input or the
#                next TICK_MS boundary, and never drifts (the next tick is the last one + TICK_MS)
#   Storage      small files on the littlefs flash filesystem, replaced by write-new/verify/rename
#   Annunciator  a piezo on a PWM pin and a status LED, patterns clocked by a periodic Timer
#
# The objects have the same public methods as the simulator's (basalt/hal/sim.py); the contracts
# are in basalt/hal/__init__.py. Only the HAL modules and boards may import machine/time/select.
import gc
import select
import sys
import time

import machine
from machine import ADC, PWM, WDT, Pin, Timer
from micropython import const

from basalt.lib.filestore import FileStore

_POLL_SLICE_MS = const(20)  # longest single sleep: pending console output is pushed this often
_WRITE_CHUNK = const(256)  # most bytes handed to the USB/UART driver per write() call
_SLOT_MS = const(125)  # annunciator patterns: 16 slots of 125 ms = a 2 s cycle
_SLOTS = const(16)
_BEEP_HZ = const(2700)  # a typical piezo's resonance
_BEEP_DUTY = const(32768)  # 50 % duty: loudest square wave


def _waiting(poller, timeout_ms):
    """Block up to timeout_ms on poller; True when it reports an event."""
    for _ in poller.ipoll(timeout_ms):
        return True
    return False


class Console:
    """The board's REPL stream as the pump console. Reads never block: a byte is taken only while
    poll() says one is waiting, because sys.stdin.buffer.readinto(buf) on a board blocks until the
    *whole* buffer is filled. Ctrl-C (0x03) still interrupts the program so mpremote can take the
    board back for a redeploy; protocol frames are printable text and never contain it.
    TODO(production): micropython.kbd_intr(-1) once deploys go through a safe-boot pin."""

    def __init__(self):
        self.rx = sys.stdin.buffer
        self.tx = sys.stdout.buffer
        self.one = bytearray(1)
        self.inp = select.poll()
        self.inp.register(sys.stdin, select.POLLIN)
        self.out = select.poll()
        self.out.register(sys.stdout, select.POLLOUT)

    def readinto(self, buf):
        n = 0
        one = self.one
        while n < len(buf) and _waiting(self.inp, 0):
            if not self.rx.readinto(one):
                break
            buf[n] = one[0]
            n += 1
        return n

    def write(self, mv):
        for _ in self.out.ipoll(0):
            n = len(mv)
            if n > _WRITE_CHUNK:
                n = _WRITE_CHUNK
            w = self.tx.write(mv[:n])
            return n if w is None else w
        return 0  # host not draining (or not attached): the server keeps the bytes queued


class TickClock:
    """Control ticks every tick_ms of real time. A late tick is still delivered (the next ones
    follow at once until caught up), so the core sees exactly one tick per period on average."""

    def __init__(self, tick_ms):
        self.inp = select.poll()
        self.inp.register(sys.stdin, select.POLLIN)
        self.tick_ms = tick_ms
        self.t0 = time.ticks_ms()
        self.next_tick = time.ticks_add(self.t0, tick_ms)

    def now_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.t0)  # wraps after ~12 days: logs only

    def wait(self):
        d = time.ticks_diff(self.next_tick, time.ticks_ms())
        if d <= 0:
            self.next_tick = time.ticks_add(self.next_tick, self.tick_ms)
            return False
        _waiting(self.inp, d if d < _POLL_SLICE_MS else _POLL_SLICE_MS)
        return True  # input waits, or a slice passed: the loop polls and flushes, then waits again


# Storage: basalt.lib.filestore.FileStore on the board's littlefs (littlefs renames atomically,
# so a power cut leaves either the old file or the verified new one, never a torn file).
Storage = FileStore

# Patterns: bit i set = on during slot i of the 2 s cycle (bit 0 first).
_BUZZER = {"off": 0, "chirp": 0x0001, "alert": 0x0005, "alarm": 0x5555, "siren": 0xFFFF}
_LED = {"off": 0, "ok": 0x0001, "warn": 0x0005, "alarm": 0x5555}


class Annunciator:
    """Piezo on PWM + LED. A periodic Timer steps both patterns; its callback only shifts ints and
    sets duty/levels (no allocation), as IRQ-context code must. "chirp" sounds one cycle, then off."""

    def __init__(self, buzzer_pin, led_pin, timer_id):
        self.pwm = PWM(Pin(buzzer_pin), freq=_BEEP_HZ, duty_u16=0)
        self.led_pin = Pin(led_pin, Pin.OUT, value=0)
        self.bmask = 0
        self.lmask = 0
        self.slot = 0
        self.once = False
        self._step_cb = self._step  # bind once: creating a bound method allocates
        self.timer = Timer(timer_id)
        self.timer.init(period=_SLOT_MS, mode=Timer.PERIODIC, callback=self._step_cb)

    def _step(self, _t):
        s = self.slot
        self.pwm.duty_u16(_BEEP_DUTY if (self.bmask >> s) & 1 else 0)
        self.led_pin.value((self.lmask >> s) & 1)
        s += 1
        if s >= _SLOTS:
            s = 0
            if self.once:
                self.once = False
                self.bmask = 0
        self.slot = s

    def buzzer(self, pattern):
        self.bmask = _BUZZER[pattern]
        self.once = pattern == "chirp"
        self.slot = 0

    def led(self, pattern):
        self.lmask = _LED[pattern]


class Hal:
    """Sensors (force, battery, reservoir switch; encoder where fitted), the driver's enable
    pin and the watchdog, beside the clock/console/motor/storage/annunciator objects."""

    def __init__(self, clock, console, motor, storage, annunciator, pins):
        self.clock = clock
        self.console = console
        self.motor = motor
        self.storage = storage
        self.annunciator = annunciator
        self.adc_p = ADC(Pin(pins["pressure_adc"]))
        self.adc_v = ADC(Pin(pins["battery_adc"]))
        for a in (self.adc_p, self.adc_v):
            if hasattr(ADC, "ATTN_11DB"):  # ESP32: the full 0-3.3 V range
                a.atten(ADC.ATTN_11DB)
        self.res_sw = Pin(pins["reservoir_switch"], Pin.IN, Pin.PULL_UP)
        self.sensed = [0, 0, 0, 0]
        self.wdt = None

    def sense(self):
        """[force, battery, flags, encoder]: 12-bit ADC counts (read_u16 >> 4), flags bit0 =
        reservoir seated (the switch pulls the pin low), encoder 0 (none fitted on the dev rig;
        board.ENCODER_COUNTS_PER_STEP = 0 skips the check)."""
        s = self.sensed
        s[0] = self.adc_p.read_u16() >> 4
        s[1] = self.adc_v.read_u16() >> 4
        s[2] = 0 if self.res_sw.value() else 1
        return s

    def enable(self, on):
        """Off: stop and de-energise the driver now (EN is active low). The motors energise it
        again only for a train, which the core starts only after a user's resume."""
        if not on:
            self.motor.stop()
            self.motor.en.value(1)

    def wdt_start(self, ms):
        self.wdt = WDT(timeout=ms)

    def wdt_feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def reset_cause(self):
        c = machine.reset_cause()
        return "wdt" if c == machine.WDT_RESET else "soft" if c == machine.SOFT_RESET else "power"

    def radio(self):
        """The `bluetooth` module (ESP32 and Pico W builds have it), or None."""
        try:
            return __import__("bluetooth")
        except ImportError:
            return None

    def health(self):
        gc.collect()
        return {"heap_free": gc.mem_free(), "heap_alloc": gc.mem_alloc()}


def make_board_hal(board, motor, timer_id, storage_root="/data"):
    """Assemble the board HAL around its step generator. The HAL modules call this."""
    if board.TICK_MS != 1000:
        raise ValueError("the core's control period is 1000 ms")
    pins = board.PINS
    console = Console()
    clock = TickClock(board.TICK_MS)
    annunciator = Annunciator(pins["buzzer"], pins["led"], timer_id)
    h = Hal(clock, console, motor, Storage(storage_root), annunciator, pins)
    # TODO(BLE issue): a bluetooth-backed CGM object joins the HAL here (ESP32 and Pico W builds).
    return h
