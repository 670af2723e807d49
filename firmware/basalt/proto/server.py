# The console protocol server: assembles lines from the console HAL, validates frames,
# dispatches commands, and queues replies and events. It never blocks: output waits in a
# fixed buffer and is drained as the console accepts it; when the buffer is full, events are
# dropped (counted, and visible to the host as a gap in `seq`) rather than stall the pump.
#
# Frames are written straight into that buffer: json.dump streams a reply or event body into
# it through write() (the server is its own output stream) and the CRC is computed in place.
# No frame ever exists as a string of its own - a 48-segment reply would otherwise need three
# ~600-byte blocks at once, and in a fragmented 64 KB heap contiguous blocks are what run out.
import gc
import io
import json

from micropython import const

from basalt import lib as overlay
from basalt.core import Refused
from basalt.lib import crc16
from basalt.proto import HEX, MAX_FRAME

_TX_SIZE = const(1024)
_CACHE_SLOT = const(320)  # a therapy command's reply (a bolus report is ~260 bytes)
_REPLY_RESERVE = const(512)
_REPLY_CACHE = const(2)  # recent request ids recognised on retransmission (proto/req.py)


def command(pump, module, name, args):
    """Run command `name` (an overlay). Then, with its code dropped, save the settings change it
    made, if any (cmd.commit left it in pump.pending): a command's code and the save overlay are
    never in the heap together (docs/memory.md). A save that fails - the save overlay not loading
    included - puts back what changed: nothing changed, and the command is refused."""
    data = overlay.call(module, name, pump, args)
    if pump.pending:
        try:
            overlay.call("basalt.lib.save", "commit", pump)
        except Exception as e:  # noqa: BLE001 - storage full, flash error, out of memory: all the same
            undo, pump.pending = pump.pending[0], None
            for o, k, v in undo:  # (object, attribute name | dict key | index | None: its contents, old value)
                if k is None:
                    o[:] = v  # copied back into the same array or list: nothing new stays in the heap
                elif type(k) is str and type(o) is not dict:
                    setattr(o, k, v)
                else:
                    o[k] = v
            pump.set_caps()  # the caps follow the limits
            raise Refused("storage", "settings could not be saved (%s); nothing was changed" % type(e).__name__)
    return data


class ConsoleServer(io.IOBase):
    def __init__(self, console, version):
        self.console = console
        self.version = version
        self.pump = None
        self.rx = bytearray(MAX_FRAME)
        self.rx_len = 0  # -1: inside an over-long line, dropping bytes until its newline
        self.chunk = bytearray(128)
        self.tx = bytearray(_TX_SIZE)
        self.tx_head = 0
        self.tx_tail = 0
        self.w = self.end = 0  # the frame being written: its next byte, and the end of its room
        self.seq = 0
        self.dropped = 0
        self.frames_bad = 0
        # Retransmission cache, oldest first: [id, body crc, uptime, reply length] per recent
        # request, allocated once (long-lived objects made later would fragment the heap). Only
        # the newest reply is kept (cache_buf; length 0 for the others): a retransmission of an
        # older request is still never executed twice, but answered "duplicate".
        self.cache = [[0, 0, 0, 0] for _ in range(_REPLY_CACHE)]
        self.cache_buf = bytearray(_CACHE_SLOT)

    # ---- output -----------------------------------------------------------------------
    def write(self, buf):
        """The stream json.dump writes to: append to the frame being written. Bytes past the end
        of its room are counted, not stored: the frame is then dropped whole."""
        n = len(buf)
        w = self.w
        if w + n <= self.end:
            self.tx[w:w + n] = buf
        self.w = w + n
        return n

    def send(self, doc, event):
        """Queue doc as one frame, $<json>*<CRC>\n (proto/__init__.py) - or, when doc is a
        memoryview, those bytes as they are (a kept reply, replayed). Return the frame's start in
        the buffer, or -1 if it did not fit (dropped and counted). Events may fill the buffer only
        up to REPLY_RESERVE short of full, so a reply always finds room while the host is not
        reading events."""
        tx = self.tx
        h = self.tx_head
        if h:  # what waits moves to the front; the frame goes after it
            self.tx_head, self.tx_tail = 0, self.tx_tail - h
            tx[0:self.tx_tail] = memoryview(tx)[h:h + self.tx_tail]
        start = self.w = self.tx_tail
        self.end = _TX_SIZE - _REPLY_RESERVE if event else _TX_SIZE
        if type(doc) is memoryview:
            self.write(doc)
        else:
            self.end -= 6  # room for '*', the CRC and the newline
            self.write(b"$")
            json.dump(doc, self)
            w = self.w
            if w <= self.end:
                c = crc16(tx, start + 1, w)
                tx[w] = 42  # '*'
                for i in range(4, 0, -1):
                    tx[w + i] = HEX[c & 15]
                    c >>= 4
                tx[w + 5] = 10  # '\n'
                self.w = w + 6
                self.end += 6
        if self.w > self.end:
            self.dropped += 1
            return -1
        self.tx_tail = self.w
        return start

    def flush(self):
        if self.tx_head == self.tx_tail:
            return
        n = self.console.write(memoryview(self.tx)[self.tx_head:self.tx_tail])
        if n:
            self.tx_head += n
            if self.tx_head == self.tx_tail:
                self.tx_head = self.tx_tail = 0

    def event(self, name, data):
        self.seq += 1
        t = self.pump.uptime_s if self.pump else 0
        self.send({"ev": name, "seq": self.seq, "t": t, "data": data}, True)
        self.flush()

    def reply(self, rid, ok, data, crc=-1):
        """Queue a reply (data, or (code, msg) when not ok); with crc >= 0 also keep it for
        retransmissions of that request."""
        if ok:
            doc = {"id": rid, "ok": True, "data": data}
        else:
            doc = {"id": rid, "ok": False, "err": data[0], "msg": data[1]}
        start = self.send(doc, False)
        if crc >= 0:
            self._remember(rid, crc, start)
        self.flush()

    # ---- input ------------------------------------------------------------------------
    def poll(self):
        """Read what the console has and handle every complete line in it."""
        while True:
            n = self.console.readinto(self.chunk)
            if not n:
                return
            for i in range(n):
                b = self.chunk[i]
                if b == 10:  # '\n'
                    if self.rx_len < 0:
                        self.frames_bad += 1
                        self.reply(0, False, ("too_long", "frame longer than %d bytes" % MAX_FRAME))
                    elif self.rx_len:
                        self.line(self.rx_len)
                    self.rx_len = 0
                elif self.rx_len >= 0:
                    if self.rx_len >= MAX_FRAME - 1:
                        self.rx_len = -1
                    else:
                        self.rx[self.rx_len] = b
                        self.rx_len += 1

    def line(self, n):
        """Handle the line rx[0:n]. Checking it - frame, JSON, id, retransmission, ping - and
        finding its command is the request overlay's (basalt/proto/req.py): loaded per line and
        dropped before the command's overlay loads, so neither that code nor the command table
        sits in the heap between requests or beside a command."""
        rid = crc = 0
        try:
            # The JSON body of "$<json>*<crc>", parsed in place before the checker loads (req.py:
            # it checks the frame and the CRC before anything is acted on).
            rx, req = self.rx, None
            k = n - 1 if n and rx[n - 1] == 13 else n
            if k > 6 and rx[0] == 36 and rx[k - 5] == 42:
                try:
                    req = json.loads(memoryview(rx)[1:k - 5])
                except ValueError:
                    pass
            r = overlay.call("basalt.proto.req", "parse", self, n, req)  # None: answered there
            req = None
            if r is None:
                return
            rid, crc, module, read_only, cmd, args = r
            r = None
            if not read_only:
                self.pump.user_t = self.pump.uptime_s  # the user acted: auto-off restarts
            data = command(self.pump, module, cmd, args)
            if not read_only:  # the new state is in flash before the reply says so
                self.pump.history.save(self.pump)
            self.reply(rid, True, data, -1 if read_only else crc)
        except Refused as e:  # a refused command
            self.frames_bad += 1
            self.reply(rid, False, (e.code, e.msg), crc if rid else -1)
        except Exception as e:  # noqa: BLE001 - a bug in one command must not take the pump down
            self.frames_bad += 1
            if not rid:  # the checker itself failed (out of memory): the line's id, read raw, so
                rid = self._raw_id(n)  # the host can match the refusal (it was not executed)
            self.reply(rid, False, ("internal", "internal error: %s" % type(e).__name__))
        finally:
            gc.collect()  # reclaim the overlays before the next tick allocates around them

    def _raw_id(self, n):
        """The digits after '"id":' in rx[0:n], without allocating; 0 if there are none."""
        rx = self.rx
        for i in range(n - 5):
            if rx[i] == 34 and rx[i + 1] == 105 and rx[i + 2] == 100 and rx[i + 3] == 34:  # "id"
                i += 4
                while i < n and (rx[i] == 32 or rx[i] == 58):  # ' ' ':'
                    i += 1
                v = 0
                while i < n and 48 <= rx[i] <= 57 and v < 65536:
                    v = v * 10 + rx[i] - 48
                    i += 1
                return v if v < 65536 else 0
        return 0

    def _remember(self, rid, crc, start):
        """Keep the reply queued at start (-1: it was dropped) for retransmissions of rid, in
        place of the oldest one kept."""
        n = self.tx_tail - start if start >= 0 else 0
        m = self.cache.pop(0)
        for k in self.cache:
            k[3] = 0  # its reply is overwritten below: remembered as executed, without it
        self.cache.append(m)
        if n > _CACHE_SLOT:
            n = 0  # remembered as executed, without its reply
        else:
            self.cache_buf[0:n] = memoryview(self.tx)[start:start + n]
        m[0], m[1], m[2], m[3] = rid, crc, self.pump.uptime_s, n
