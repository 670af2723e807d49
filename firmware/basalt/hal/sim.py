# The simulator HAL for the MicroPython Unix port. The harness (hil/sim) owns the hardware:
# this process talks to it over a TCP "bus" carrying one-line messages, and serves the pump's
# console on its own TCP port, so hosts connect with pyserial's socket://127.0.0.1:PORT.
#
# Bus, firmware -> harness                      harness -> firmware
#   @R <console_port>         ready               G <t_ms>   grant: run until virtual t_ms
#   @A <t_ms>                 paused at t_ms      I          ask for heap figures
#   @M <t_ms> <n> <hz> <dir>  step train start    Q          quit
#   @X <t_ms> <emitted>       train cut short
#   @B <t_ms> <pattern>       buzzer
#   @L <t_ms> <pattern>       LED
#   @I <t_ms> <alloc> <free> <peak>  heap after a collect; peak = highest live heap seen
#
# Lockstep mode: virtual time only moves when the harness grants it, and console input is
# handled only while paused, so a run is the same every time. Realtime mode: the wall clock.
import gc
import os
import select
import socket
import time

TICK_MS = 1000
GC_EVERY_TICKS = 600  # collect (and sample the live heap) every 10 simulated minutes


class Bus:
    def __init__(self, port):
        s = socket.socket()
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.sock = s
        self.rx = bytearray(128)  # harness messages are short; allocated once
        self.rx_len = 0

    def send(self, line):
        data = ("@" + line + "\n").encode()
        while data:
            n = self.sock.write(data)
            data = data[n:]

    def read_lines(self, handle):
        """Read what is waiting (the caller polled first); call handle(line) per complete line."""
        # recv, not readinto: a blocking stream's readinto waits to fill the whole buffer.
        chunk = self.sock.recv(len(self.rx) - self.rx_len)
        n = len(chunk)
        if not n:
            raise SystemExit(0)  # harness went away: nothing left to drive us
        self.rx[self.rx_len:self.rx_len + n] = chunk
        end = self.rx_len + n
        start = 0
        for i in range(self.rx_len, end):
            if self.rx[i] == 10:
                if i > start:
                    handle(bytes(self.rx[start:i]).decode())
                start = i + 1
        rest = end - start
        if rest >= len(self.rx):
            raise ValueError("bus line too long")
        self.rx[0:rest] = self.rx[start:end]
        self.rx_len = rest


class Console:
    """One client at a time on a TCP port; a new connection replaces the old, like reopening a UART."""

    def __init__(self, poller, port):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        ls.listen(1)
        self.listener = ls
        self.port = port
        self.client = None
        self.poller = poller
        poller.register(ls, select.POLLIN)

    def accept(self):
        c, _ = self.listener.accept()
        c.setblocking(False)
        self._drop()
        self.client = c
        self.poller.register(c, select.POLLIN)

    def _drop(self):
        if self.client is not None:
            try:
                self.poller.unregister(self.client)
                self.client.close()
            except OSError:
                pass
            self.client = None

    def readinto(self, buf):
        c = self.client
        if c is None:
            return 0
        try:
            n = c.readinto(buf)
        except OSError:
            self._drop()
            return 0
        if n is None:
            return 0
        if n == 0:
            self._drop()
        return n

    def write(self, mv):
        c = self.client
        if c is None:
            return len(mv)  # nobody listening: output goes nowhere, like an unplugged UART
        try:
            n = c.write(mv)
        except OSError:
            self._drop()
            return len(mv)
        return n or 0


class _Clock:
    def __init__(self, bus, console, poller):
        self.bus = bus
        self.console = console
        self.poller = poller
        self.ticks = 0
        self.peak = 0
        poller.register(bus.sock, select.POLLIN)

    def _ticked(self):
        self.ticks += 1
        if self.ticks % GC_EVERY_TICKS == 0:
            gc.collect()
            a = gc.mem_alloc()
            if a > self.peak:
                self.peak = a

    def _bus(self, line):
        if line[0] == "G":
            self.granted = int(line[2:])
        elif line[0] == "I":
            gc.collect()
            a = gc.mem_alloc()
            if a > self.peak:
                self.peak = a
            self.bus.send("I %d %d %d %d" % (self.now_ms(), a, gc.mem_free(), self.peak))
        elif line[0] == "Q":
            raise SystemExit(0)

    def _service(self, timeout):
        """Poll bus, console listener and client once. Return True when console input waits."""
        io = False
        for ev in self.poller.ipoll(timeout):
            obj = ev[0]
            if obj is self.bus.sock:
                self.bus.read_lines(self._bus)
            elif obj is self.console.listener:
                self.console.accept()
            else:
                io = True
        return io


class LockstepClock(_Clock):
    def __init__(self, bus, console, poller):
        super().__init__(bus, console, poller)
        self.now = 0
        self.next_tick = TICK_MS
        self.granted = 0
        self.acked = -1

    def now_ms(self):
        return self.now

    def wait(self):
        while True:
            if self.next_tick <= self.granted:
                self.now = self.next_tick
                self.next_tick += TICK_MS
                self._ticked()
                return False
            self.now = self.granted
            if self.acked != self.granted:
                self.acked = self.granted
                self.bus.send("A %d" % self.granted)
            # Paused: serve the console at this instant until the harness grants more time.
            # The short timeout lets pending console output drain.
            if self._service(20):
                return True
            if self.next_tick > self.granted:
                return True


class RealtimeClock(_Clock):
    def __init__(self, bus, console, poller):
        super().__init__(bus, console, poller)
        self.t0 = time.ticks_ms()
        self.next_tick = TICK_MS
        self.granted = 0

    def now_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.t0)

    def wait(self):
        d = self.next_tick - self.now_ms()
        if d <= 0:
            self.next_tick += TICK_MS
            self._ticked()
            return False
        self._service(d if d < 50 else 50)
        return True


class Motor:
    """A step generator with a counter. Steps of a train fall at t0 + i*1000/hz ms (i = 0..n-1);
    the harness's plant expands @M messages with the same rule, so both agree on every step."""

    def __init__(self, clock, bus):
        self.clock = clock
        self.bus = bus
        self.t0 = 0
        self.n = 0
        self.hz = 1
        self.final = 0

    def _emitted(self):
        dt = self.clock.now_ms() - self.t0
        if dt < 0 or self.n == 0:
            return 0
        k = dt * self.hz // 1000 + 1
        return k if k < self.n else self.n

    def start(self, n, hz, direction):
        if self.final < 0:
            self.stop()
        self.t0 = self.clock.now_ms()
        self.n = n
        self.hz = hz
        self.final = -1
        self.bus.send("M %d %d %d %d" % (self.t0, n, hz, direction))

    def count(self):
        return self.final if self.final >= 0 else self._emitted()

    def busy(self):
        return self.final < 0 and self._emitted() < self.n

    def stop(self):
        if self.final < 0:
            e = self._emitted()
            if e < self.n:
                self.bus.send("X %d %d" % (self.clock.now_ms(), e))
            self.final = e
        return self.final


class Storage:
    def __init__(self, root):
        self.root = root
        try:
            os.mkdir(root)
        except OSError:
            pass

    def _path(self, name):
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_atomic(self, name, data):
        tmp = self._path(name + ".new")
        with open(tmp, "wb") as f:
            f.write(data)
        with open(tmp, "rb") as f:
            if f.read() != data:
                raise OSError("storage verify failed")
        os.rename(tmp, self._path(name))


class Annunciator:
    def __init__(self, clock, bus):
        self.clock = clock
        self.bus = bus

    def buzzer(self, pattern):
        self.bus.send("B %d %s" % (self.clock.now_ms(), pattern))

    def led(self, pattern):
        self.bus.send("L %d %s" % (self.clock.now_ms(), pattern))


class Hal:
    pass


def _opts(argv):
    o = {"--bus": None, "--console": None, "--storage": "/tmp/basalt-sim", "--mode": "lockstep"}
    i = 0
    while i < len(argv) - 1:
        if argv[i] in o:
            o[argv[i]] = argv[i + 1]
        i += 2
    return o


def make_hal(board, argv):
    if board.TICK_MS != TICK_MS:
        raise ValueError("the core's control period is 1000 ms")
    o = _opts(argv)
    if o["--bus"] is None or o["--console"] is None:
        # MicroPython sockets have no getsockname(), so the harness picks both ports.
        raise ValueError("the simulator HAL needs --bus PORT --console PORT (started by hil/sim)")
    # Collect early and often: in a 64 KB heap, fragmentation - not total use - is what fails.
    gc.threshold(4096)
    poller = select.poll()
    bus = Bus(int(o["--bus"]))
    console = Console(poller, int(o["--console"]))
    clock_cls = RealtimeClock if o["--mode"] == "realtime" else LockstepClock
    h = Hal()
    h.clock = clock_cls(bus, console, poller)
    h.console = console
    h.motor = Motor(h.clock, bus)
    h.storage = Storage(o["--storage"])
    h.annunciator = Annunciator(h.clock, bus)
    bus.send("R %d" % console.port)
    return h
