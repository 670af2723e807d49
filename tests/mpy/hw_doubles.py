# Hardware test doubles for firmware unit tests under MicroPython: the things *around* the
# firmware (a motor with a counter, a console byte pipe, a storage dict), never the firmware.


class CountingMotor:
    """Emits every commanded step by the next tick unless cut short; keeps running totals only
    (a day of trains would not fit the heap as a list)."""

    def __init__(self):
        self.n_trains = 0
        self.max_n = 0
        self.done = 0  # net steps of all finished trains
        self.last = None  # [n, emitted, direction] of the latest train
        self.unread = False  # a train was started and its counter not read since

    def start(self, n, hz, direction):
        assert not self.unread, "train started before the last one was accounted"
        assert hz >= 1 and n >= 1
        if self.last:
            self.done += self.last[1] * self.last[2]
        self.last = [n, n, direction]
        self.n_trains += 1
        self.max_n = max(self.max_n, n)
        self.unread = True

    def count(self):
        self.unread = False
        return self.last[1] if self.last else 0

    def busy(self):
        return False

    def stop(self):
        return self.count()

    def cut(self, emitted):
        """The running train got only `emitted` steps out before the next stop()/count()."""
        self.last[1] = emitted

    def total(self):
        return self.done + (self.last[1] * self.last[2] if self.last else 0)


class PipeConsole:
    def __init__(self):
        self.inbox = bytearray()
        self.out = bytearray()
        self.accept = 1 << 30  # bytes write() takes per call

    def feed(self, data):
        self.inbox += data

    def readinto(self, buf):
        n = min(len(buf), len(self.inbox))
        buf[0:n] = self.inbox[0:n]
        self.inbox = self.inbox[n:]
        return n

    def write(self, mv):
        n = min(len(mv), self.accept)
        self.out += bytes(mv[0:n])
        return n

    def lines(self):
        ls = bytes(self.out).split(b"\n")
        self.out = bytearray(ls[-1])
        return [x for x in ls[:-1] if x]


class DictStorage:
    def __init__(self):
        self.files = {}

    def read(self, name):
        return self.files.get(name)

    def write_atomic(self, name, data):
        # bytes, or a sequence of chunks, as the storage HAL contract allows
        self.files[name] = bytes(data) if isinstance(data, (bytes, bytearray)) else b"".join(data)
