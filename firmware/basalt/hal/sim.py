# The simulator HAL for the MicroPython Unix port: one object, the simulated board, that is
# the core's clock, motor, console, annunciator, sensors and watchdog at once (one class: in a
# 64 KB heap each class and name costs). The harness (hil/sim) owns the hardware: this process
# talks to it over a TCP "bus" of one-line messages, and serves the pump's console on its own
# TCP port, so hosts connect with pyserial's socket://127.0.0.1:PORT.
#
# Bus, firmware -> harness                      harness -> firmware
#   @R <console_port>         ready               G <t_ms>   grant: run until virtual t_ms
#   @A <t_ms>                 paused at t_ms      I          ask for heap figures
#   @M <t_ms> <n> <hz> <dir>  step train start    Q          quit (orderly shutdown)
#   @X <t_ms> <emitted>       train cut short     S <p> <v> <flags> <enc>  sensor readings
#   @E <t_ms> <0|1>           motor driver enable H          hang (a stuck driver)
#   @B <t_ms> <pattern>       buzzer              K <n>      power cut after n more bytes
#   @L <t_ms> <pattern>       LED                            reach storage (a torn write)
#   @V <t_ms> <pattern>       vibration motor     b ...      radio (boards/sim/bluetooth.py)
#   @W <t_ms> <timeout_ms>    watchdog started
#   @T <t_ms>                 watchdog expired: the process exits with status 3 (a reset)
#   @I <t_ms> <alloc> <free> <peak>  heap after a collect; peak = highest live heap seen
#   @b ...                    radio requests
#
# Lockstep (here): virtual time moves only when the harness grants it, and console input is
# handled only while paused, so a run is the same every time. Real time: sim_rt.py.
# Motor: steps of a train fall at t0 + i*1000/hz ms (i = 0..n-1); the harness's plant expands
# @M messages by the same rule, so both agree on every step and its time. After each @M/@X the HAL
# waits for the harness's S: the readings (force sensor, battery, reservoir switch, encoder)
# the firmware will see at its next tick, once the train has run. Idle readings are pushed
# while the firmware is paused. S fields: ADC counts for pressure and battery, flags bit0 =
# reservoir seated, enc = the motor encoder's cumulative position (counts, forward positive).
import gc
import select

from micropython import const

from basalt import lib as overlay

TICK_MS = 1000
_GC_EVERY_TICKS = const(600)  # sample the live heap every 10 simulated minutes
_RX = const(256)  # longest bus line (radio lines carry hex payloads): sim_boot.py allocates rx
BUS = None  # the Hal, for the radio shim (boards/sim/bluetooth.py)


class Hal:
    # No constructor here: basalt/hal/sim_boot.py makes the board at boot (bus and console
    # sockets, storage; every attribute is listed there) and is then dropped, so that code does
    # not stay in the heap.

    # ---- bus ----------------------------------------------------------------------------
    # Bus lines are bytes, formatted "%c %d ..." with the letter as a number: a str constant is a
    # name interned for good, and the firmware is near MicroPython's qstr pool limit
    # (docs/memory.md); a bytes constant is not, and three formats serve most lines.
    def send(self, line):
        data = b"@" + line + b"\n"
        while data:
            data = data[self.bus.write(data):]

    def _num(self, i):
        """The decimal number at rx[i] (sign allowed), parsed in place; self.at = past its end."""
        rx = self.rx
        neg = rx[i] == 45  # '-'
        i += neg
        v = 0
        while 48 <= rx[i] <= 57:
            v = v * 10 + rx[i] - 48
            i += 1
        self.at = i + 1
        return -v if neg else v

    def _read_bus(self):
        rx = self.rx
        chunk = self.bus.recv(_RX - self.rx_len)  # recv: a blocking readinto waits to fill
        if not chunk:
            raise SystemExit(0)  # the harness went away: nothing left to drive us
        n = self.rx_len + len(chunk)
        rx[self.rx_len:n] = chunk
        start = 0
        for i in range(n):
            if rx[i] != 10:
                continue
            # Numbers are parsed in place; a line becomes an object only for whoever keeps it
            # (the radio shim, request()'s caller).
            c = rx[start]
            if c == 98 or self.waiting and rx.startswith(self.waiting, start):  # 'b'
                m = bytes(rx[start:i])
                if c == 98 and self.ble:
                    self.ble.rx(m)
                if self.waiting and m.startswith(self.waiting):
                    self.reply = m
            if c == 83:  # 'S'
                self.at = start + 2
                for k in range(4):
                    self.sensed[k] = self._num(self.at)
            elif c == 71:  # 'G'
                self.granted = self._num(start + 2)
            elif c == 73:  # 'I'
                self._sample()
                self.send(b"I %d %d %d %d" % (self.now_ms(), gc.mem_alloc(), gc.mem_free(), self.peak))
            elif c == 75:  # 'K'
                self.storage.cut = self._num(start + 2)
            elif c == 72:  # 'H'
                while True:  # a driver that never returns: only the watchdog ends this
                    pass
            elif c == 81:  # 'Q'
                raise SystemExit(0)
            start = i + 1
        if start == 0 and n == _RX:
            raise ValueError("bus line too long")
        rx[0:n - start] = rx[start:n]
        self.rx_len = n - start

    def request(self, line, prefix):
        """Send a bus line and serve the bus until a line starting with prefix arrives (every
        other line is handled as usual meanwhile); return that line."""
        self.waiting = prefix
        self.reply = None
        self.send(line)
        try:
            while self.reply is None:
                self._read_bus()
        finally:
            self.waiting = None
        return self.reply

    def _sample(self):
        gc.collect()
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a

    def poll(self, timeout):
        """Serve the bus and the console listener; True when console input waits."""
        io = False
        for ev in self.poller.ipoll(timeout):
            if ev[0] is self.bus:
                self._read_bus()
            elif ev[0] is self.listener:
                c = self.listener.accept()[0]
                c.setblocking(False)
                self.drop()  # a new connection replaces the old, like reopening a UART
                self.client = c
                self.poller.register(c, select.POLLIN)
            else:
                io = True
        return io

    # ---- clock --------------------------------------------------------------------------
    def now_ms(self):
        return self.now

    def wait(self):
        if self.ble:
            self.ble.deliver()
        if self.wdt_ms and self.now - self.fed > self.wdt_ms:
            self.send(b"%c %d" % (84, self.now))
            raise SystemExit(3)  # the watchdog resets the board
        if self.next_tick <= self.granted:
            self.now = self.next_tick
            self.next_tick += TICK_MS
            self.ticks += 1
            if self.ticks % _GC_EVERY_TICKS == 0:
                self._sample()
            return False
        self.now = self.granted
        if self.acked != self.granted:
            self.acked = self.granted
            self.send(b"%c %d" % (65, self.granted))
        # Paused: serve the console at this instant until the harness grants more time; the
        # short timeout lets pending console output drain.
        self.poll(20)
        return True

    # ---- console ------------------------------------------------------------------------
    def drop(self):
        if self.client is not None:
            self.poller.unregister(self.client)
            self.client.close()
            self.client = None

    def readinto(self, buf):
        try:
            n = self.client.readinto(buf) if self.client else 0
        except OSError:
            n = 0
        if n == 0:
            self.drop()  # closed or broken
        return n or 0

    def write(self, mv):
        try:
            return (self.client.write(mv) or 0) if self.client else len(mv)  # unplugged: discard
        except OSError:
            self.drop()
            return len(mv)

    # ---- motor --------------------------------------------------------------------------
    def count(self):
        if self.final >= 0:
            return self.final
        dt = self.now_ms() - self.t0
        k = dt * self.hz // 1000 + 1 if dt >= 0 else 0
        return k if k < self.n else self.n

    def start(self, n, hz, direction):
        self.stop()
        self.t0, self.n, self.hz, self.final = self.now_ms(), n, hz, -1
        self._train(b"M %d %d %d %d" % (self.t0, n, hz, direction))

    def _train(self, line):
        self.request(line, b"S")  # lockstep: the readings after this train (or cut), before time moves

    def enable(self, on):
        """The driver's enable pin: off de-energises the motor (stops a runaway)."""
        self.send(b"%c %d %d" % (69, self.now_ms(), 1 if on else 0))

    def busy(self):
        return self.count() < self.n

    def stop(self):
        if self.final < 0:
            e = self.count()
            if e < self.n:
                self._train(b"%c %d %d" % (88, self.now_ms(), e))
            self.final = e
        return self.final

    # ---- annunciator --------------------------------------------------------------------
    def buzzer(self, pattern):
        self.send(b"%c %d %s" % (66, self.now_ms(), pattern))

    def led(self, pattern):
        self.send(b"%c %d %s" % (76, self.now_ms(), pattern))

    def vibrate(self, pattern):
        self.send(b"%c %d %s" % (86, self.now_ms(), pattern))

    # ---- sensors and watchdog -------------------------------------------------------------
    def sense(self):
        return self.sensed

    def wdt_start(self, ms):
        self.wdt_ms = ms
        self.fed = self.now
        self.send(b"%c %d %d" % (87, self.now, ms))

    def wdt_feed(self):
        self.fed = self.now

    def reset_cause(self):
        return self.cause

    def radio(self):
        """The `bluetooth` module (boards/sim/bluetooth.py), when the harness attached a radio."""
        return __import__("bluetooth") if self.has_radio else None


def make_hal(board, argv):
    """The simulated board, made by basalt/hal/sim_boot.py (run once, then dropped)."""
    return overlay.run("basalt.hal.sim_boot", "make_hal", board, argv)
