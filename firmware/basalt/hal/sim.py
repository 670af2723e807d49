# The simulator HAL for the MicroPython Unix port: one object, the simulated board, that is
# the core's clock, motor, console and annunciator at once (one class: in a 64 KB heap each
# class and name costs). The harness (hil/sim) owns the hardware: this process talks to it
# over a TCP "bus" of one-line messages, and serves the pump's console on its own TCP port,
# so hosts connect with pyserial's socket://127.0.0.1:PORT.
#
# Bus, firmware -> harness                      harness -> firmware
#   @R <console_port>         ready               G <t_ms>   grant: run until virtual t_ms
#   @A <t_ms>                 paused at t_ms      I          ask for heap figures
#   @M <t_ms> <n> <hz> <dir>  step train start    Q          quit
#   @X <t_ms> <emitted>       train cut short
#   @B <t_ms> <pattern>       buzzer     @L <t_ms> <pattern>  LED
#   @I <t_ms> <alloc> <free> <peak>  heap after a collect; peak = highest live heap seen
#
# Lockstep (here): virtual time moves only when the harness grants it, and console input is
# handled only while paused, so a run is the same every time. Real time: sim_rt.py.
# Motor: steps of a train fall at t0 + i*1000/hz ms (i = 0..n-1); the harness's plant expands
# @M messages by the same rule, so both agree on every step and its time.
import gc
import select
import socket

from ..lib.filestore import FileStore

TICK_MS = 1000
GC_EVERY_TICKS = 600  # sample the live heap every 10 simulated minutes


def _addr(port):
    return socket.getaddrinfo("127.0.0.1", port)[0][-1]


class Hal:
    def __init__(self, bus_port, console_port, root):
        gc.threshold(4096)  # in a 64 KB heap fragmentation, not total use, is what fails
        self.clock = self.motor = self.console = self.annunciator = self
        self.storage = FileStore(root)
        self.poller = select.poll()
        s = socket.socket()
        s.connect(_addr(bus_port))
        self.bus = s
        self.rx = bytearray(64)
        self.rx_len = 0
        self.poller.register(s, select.POLLIN)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(_addr(console_port))
        ls.listen(1)
        self.poller.register(ls, select.POLLIN)
        self.listener = ls
        self.client = None
        self.port = console_port
        self.now = self.granted = self.ticks = self.peak = 0
        self.next_tick = TICK_MS
        self.acked = -1
        self.t0 = self.n = self.final = 0
        self.hz = 1

    # ---- bus ----------------------------------------------------------------------------
    def send(self, line):
        data = ("@" + line + "\n").encode()
        while data:
            data = data[self.bus.write(data):]

    def _read_bus(self):
        chunk = self.bus.recv(64 - self.rx_len)  # recv: a blocking readinto waits to fill
        if not chunk:
            raise SystemExit(0)  # the harness went away: nothing left to drive us
        n = self.rx_len + len(chunk)
        self.rx[self.rx_len:n] = chunk
        start = 0
        for i in range(n):
            if self.rx[i] == 10:
                m = bytes(self.rx[start:i])
                start = i + 1
                if m[:1] == b"G":
                    self.granted = int(m[2:])
                elif m[:1] == b"I":
                    self._sample()
                    self.send("I %d %d %d %d" % (self.now_ms(), gc.mem_alloc(), gc.mem_free(), self.peak))
                elif m[:1] == b"Q":
                    raise SystemExit(0)
        self.rx[0:n - start] = self.rx[start:n]
        self.rx_len = n - start

    def _sample(self):
        gc.collect()
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a

    def _poll(self, timeout):
        """Serve the bus and the console listener; True when console input waits."""
        io = False
        for ev in self.poller.ipoll(timeout):
            if ev[0] is self.bus:
                self._read_bus()
            elif ev[0] is self.listener:
                c = self.listener.accept()[0]
                c.setblocking(False)
                self._drop()  # a new connection replaces the old, like reopening a UART
                self.client = c
                self.poller.register(c, select.POLLIN)
            else:
                io = True
        return io

    # ---- clock --------------------------------------------------------------------------
    def now_ms(self):
        return self.now

    def _ticked(self):
        self.next_tick += TICK_MS
        self.ticks += 1
        if self.ticks % GC_EVERY_TICKS == 0:
            self._sample()
        return False

    def wait(self):
        if self.next_tick <= self.granted:
            self.now = self.next_tick
            return self._ticked()
        self.now = self.granted
        if self.acked != self.granted:
            self.acked = self.granted
            self.send("A %d" % self.granted)
        # Paused: serve the console at this instant until the harness grants more time; the
        # short timeout lets pending console output drain.
        self._poll(20)
        return True

    # ---- console ------------------------------------------------------------------------
    def _drop(self):
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
            self._drop()  # closed or broken
        return n or 0

    def write(self, mv):
        try:
            return (self.client.write(mv) or 0) if self.client else len(mv)  # unplugged: discard
        except OSError:
            self._drop()
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
        self.send("M %d %d %d %d" % (self.t0, n, hz, direction))

    def busy(self):
        return self.count() < self.n

    def stop(self):
        if self.final < 0:
            e = self.count()
            if e < self.n:
                self.send("X %d %d" % (self.now_ms(), e))
            self.final = e
        return self.final

    # ---- annunciator --------------------------------------------------------------------
    def buzzer(self, pattern):
        self.send("B %d %s" % (self.now_ms(), pattern))

    def led(self, pattern):
        self.send("L %d %s" % (self.now_ms(), pattern))


def make_hal(board, argv):
    if board.TICK_MS != TICK_MS:
        raise ValueError("the core's control period is 1000 ms")
    o = {"--bus": None, "--console": None, "--storage": "/tmp/basalt-sim", "--mode": "lockstep"}
    for i in range(0, len(argv) - 1, 2):
        o[argv[i]] = argv[i + 1]
    if o["--bus"] is None or o["--console"] is None:
        # MicroPython sockets have no getsockname(), so the harness picks both ports.
        raise ValueError("the simulator HAL needs --bus PORT --console PORT (started by hil/sim)")
    cls = Hal
    if o["--mode"] == "realtime":
        from .sim_rt import RealtimeHal as cls
    h = cls(int(o["--bus"]), int(o["--console"]), o["--storage"])
    h.send("R %d" % h.port)
    return h
