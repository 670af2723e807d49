# The console protocol server: assembles lines from the console HAL, validates frames,
# dispatches commands, and queues replies and events. It never blocks: output waits in a
# fixed buffer and is drained as the console accepts it; when the buffer is full, events are
# dropped (counted, and visible to the host as a gap in `seq`) rather than stall the pump.
import gc
import json

from ..core.errors import Refused
from ..lib import overlay
from .commands import lookup
from .frame import MAX_FRAME, FrameError, check, encode

TX_SIZE = 1024
CACHE_SLOT = 320  # a therapy command's reply (a bolus report is ~260 bytes)
REPLY_RESERVE = 512
REPLY_CACHE = 2  # recent request ids whose replies are replayed on retransmission
REPLAY_WINDOW_S = 30  # ... within this many seconds; after that an id is free for reuse


class ConsoleServer:
    def __init__(self, console, version):
        self.console = console
        self.version = version
        self.pump = None
        self.rx = bytearray(MAX_FRAME)
        self.rx_len = 0
        self.discarding = False  # inside an over-long line: drop bytes until its newline
        self.chunk = bytearray(128)
        self.tx = bytearray(TX_SIZE)
        self.tx_mv = memoryview(self.tx)
        self.tx_head = 0
        self.tx_tail = 0
        self.seq = 0
        self.collect = False
        self.dropped = 0
        self.frames_bad = 0
        # Reply cache: fixed slots allocated once (long-lived objects made later would fragment
        # the heap), each [id, body crc, uptime, length] + a frame buffer.
        self.cache_meta = [[0, 0, 0, 0] for _ in range(REPLY_CACHE)]
        self.cache_buf = [bytearray(CACHE_SLOT) for _ in range(REPLY_CACHE)]
        self.cache_next = 0

    # ---- output -----------------------------------------------------------------------
    def _queue(self, frame, droppable):
        # Events may fill the buffer only up to REPLY_RESERVE short of full, so a reply always
        # finds room while the host is not reading events.
        n = len(frame)
        cap = TX_SIZE - REPLY_RESERVE if droppable else TX_SIZE
        if self.tx_tail + n > cap and self.tx_head:
            live = self.tx_tail - self.tx_head
            self.tx[0:live] = self.tx_mv[self.tx_head:self.tx_tail]
            self.tx_head, self.tx_tail = 0, live
        if self.tx_tail + n > cap:
            self.dropped += 1
            return False
        self.tx[self.tx_tail:self.tx_tail + n] = frame
        self.tx_tail += n
        self.flush()
        return True

    def flush(self):
        if self.tx_head == self.tx_tail:
            return
        n = self.console.write(self.tx_mv[self.tx_head:self.tx_tail])
        if n:
            self.tx_head += n
            if self.tx_head == self.tx_tail:
                self.tx_head = self.tx_tail = 0

    def event(self, name, data):
        self.seq += 1
        t = self.pump.uptime_s if self.pump else 0
        body = json.dumps({"ev": name, "seq": self.seq, "t": t, "data": data})
        self._queue(encode(body.encode()), True)

    def _reply(self, rid, ok, payload):
        if ok:
            doc = {"id": rid, "ok": True, "data": payload}
        else:
            doc = {"id": rid, "ok": False, "err": payload[0], "msg": payload[1]}
        frame = encode(json.dumps(doc).encode())
        self._queue(frame, False)
        return frame

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
                    if self.discarding:
                        self.discarding = False
                        self.frames_bad += 1
                        self._reply(0, False, ("too_long", "frame longer than %d bytes" % MAX_FRAME))
                    elif self.rx_len:
                        self._line(self.rx_len)
                    self.rx_len = 0
                elif not self.discarding:
                    if self.rx_len >= MAX_FRAME - 1:
                        self.discarding = True
                        self.rx_len = 0
                    else:
                        self.rx[self.rx_len] = b
                        self.rx_len += 1

    def _line(self, n):
        if n == 1 and self.rx[0] == 13:  # a bare CRLF (Enter on a terminal): nothing to answer
            return
        rid = 0
        crc = 0
        try:
            start, end, crc = check(self.rx, n)
            try:
                req = json.loads(bytes(self.rx[start:end]))
            except ValueError:
                raise FrameError("json", "body is not valid JSON")
            if type(req) is not dict:
                raise FrameError("bad_request", "a request is a JSON object")
            rid = req.get("id")
            if type(rid) is not int or not 1 <= rid <= 65535:
                rid = 0
                raise FrameError("bad_request", "id must be an integer 1..65535")
            for i in range(REPLY_CACHE):
                m = self.cache_meta[i]
                if m[0] == rid and m[1] == crc and self.pump.uptime_s - m[2] <= REPLAY_WINDOW_S:
                    # a retransmission: the same reply again, never a second bolus
                    if m[3]:
                        self._queue(memoryview(self.cache_buf[i])[0:m[3]], False)
                    else:
                        self._reply(rid, False, ("duplicate", "already executed; its reply was too long to keep: ask status"))
                    return
            cmd = req.get("cmd")
            args = req.get("args", {})
            if type(args) is not dict:
                raise FrameError("bad_request", "args must be an object")
            read_only = True
            if cmd == "ping":
                if args:
                    raise FrameError("bad_arg", "this command takes no arguments")
                data = {"uptime_s": self.pump.uptime_s, "version": self.version,
                        "frames_bad": self.frames_bad, "events_dropped": self.dropped}
            else:
                entry = lookup(cmd) if type(cmd) is str and 0 < len(cmd) < 24 and " " not in cmd else None
                if entry is None:
                    raise FrameError("unknown_cmd", "unknown command %r" % (cmd,))
                read_only = entry[1]
                self.collect = True
                data = overlay.call(entry[0], cmd, self.pump, args)
            frame = self._reply(rid, True, data)
            if not read_only:
                self._remember(rid, crc, frame)
        except Refused as e:  # FrameError is Refused
            self.frames_bad += 1
            frame = self._reply(rid, False, (e.code, e.msg))
            if rid:
                self._remember(rid, crc, frame)
        except Exception as e:  # noqa: BLE001 - a bug in one command must not take the pump down
            self.frames_bad += 1
            self._reply(rid, False, ("internal", "internal error: %s" % type(e).__name__))
        if self.collect:  # reclaim the overlay before the next tick allocates around it
            self.collect = False
            gc.collect()

    def _remember(self, rid, crc, frame):
        n = len(frame)
        i = self.cache_next
        self.cache_next = (i + 1) % REPLY_CACHE
        if n > CACHE_SLOT:
            n = 0  # remembered as executed, without its reply
        else:
            self.cache_buf[i][0:n] = frame
        m = self.cache_meta[i]
        m[0], m[1], m[2], m[3] = rid, crc, self.pump.uptime_s, n
