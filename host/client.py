"""Client library for the Basalt console protocol (docs/protocol.md) over any pyserial URL.

    with PumpClient("socket://127.0.0.1:7000") as pump:
        pump.request("bolus", mU=2500)
        pump.expect_event("bolus", lambda d: d["phase"] == "complete", timeout=300)

A reader thread splits incoming frames into replies (matched by request id) and events (kept
in order). A request that gets no reply is retransmitted with the same id and body; the pump
replays its cached reply instead of executing twice, so a retry can never double a bolus.
"""
from __future__ import annotations

import json
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import serial
from basalt.proto.frame import MAX_FRAME, FrameError, check, encode


class PumpError(Exception):
    """The pump refused a request; .code is its machine-readable reason."""

    def __init__(self, code: str, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


@dataclass
class Event:
    name: str
    seq: int
    t: int
    data: dict


def frame(doc: dict) -> bytes:
    return encode(json.dumps(doc, separators=(",", ":")).encode())


def parse_frame(line: bytes) -> dict:
    """Check one line (without newline) and return its JSON document."""
    start, end, _ = check(line, len(line))
    return json.loads(line[start:end])


class PumpClient:
    def __init__(self, url: str, timeout: float = 2.0, retries: int = 2, baudrate: int = 115200):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        self._fd = None
        try:
            self._fd = self.ser.fileno()
            self.ser.timeout = 0  # reads after select() must not wait
        except (AttributeError, NotImplementedError, serial.SerialException):
            self._fd = None
        self._next_id = 0
        self._cv = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._events: deque[Event] = deque()
        self.bad_frames = 0
        self.event_gaps = 0
        self._last_seq: int | None = None
        self._closed = False
        self._wlock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name="pump-reader")
        self._reader.start()

    # ---- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._reader.join(timeout=1)
        self.ser.close()

    def __enter__(self) -> PumpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- requests -------------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        with self._wlock:
            self.ser.write(data)
            self.ser.flush()

    def request(self, cmd: str, args: dict | None = None, timeout: float | None = None, **kw) -> dict:
        """Send a command and return its reply data; raise PumpError when the pump refuses it."""
        doc = self.request_doc(cmd, args, timeout, **kw)
        if not doc.get("ok"):
            raise PumpError(doc.get("err", "?"), doc.get("msg", ""))
        return doc.get("data") or {}

    def request_doc(self, cmd: str, args: dict | None = None, timeout: float | None = None, **kw) -> dict:
        """Send a command and return the whole reply document, ok or not."""
        args = dict(args or {}, **kw)
        with self._cv:
            self._next_id = self._next_id % 65535 + 1
            rid = self._next_id
            self._replies.pop(rid, None)
        body = {"id": rid, "cmd": cmd}
        if args:
            body["args"] = args
        data = frame(body)
        if len(data) > MAX_FRAME:
            # The pump would refuse it as too_long with id 0, which no request can be matched to.
            raise ValueError(f"{cmd!r} request is {len(data)} bytes; the pump's limit is {MAX_FRAME}")
        timeout = self.timeout if timeout is None else timeout
        for _attempt in range(self.retries + 1):
            self.send_raw(data)
            with self._cv:
                if self._cv.wait_for(lambda: rid in self._replies or self._closed, timeout) and rid in self._replies:
                    return self._replies.pop(rid)
        raise TimeoutError(f"no reply to {cmd!r} from {self.url} after {self.retries + 1} tries")

    # ---- events ---------------------------------------------------------------------------------
    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they arrive; stop after `timeout` s without one (None: never)."""
        while True:
            ev = self.next_event(timeout)
            if ev is None:
                return
            yield ev

    def next_event(self, timeout: float | None = None) -> Event | None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._events or self._closed, timeout):
                return None
            return self._events.popleft() if self._events else None

    def drain_events(self) -> list[Event]:
        with self._cv:
            out = list(self._events)
            self._events.clear()
            return out

    def expect_event(self, name: str, pred: Callable[[dict], bool] | None = None, timeout: float = 5.0) -> Event:
        """Wait for the next event `name` whose data satisfies pred; earlier events are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ev = self.next_event(max(left, 0)) if left > 0 else None
            if ev is None:
                raise TimeoutError(f"no {name!r} event within {timeout} s")
            if ev.name == name and (pred is None or pred(ev.data)):
                return ev

    # ---- reader ---------------------------------------------------------------------------------
    def _read_chunk(self) -> bytes:
        """Wait up to 50 ms for input and return all that is waiting."""
        if self._fd is not None:
            # Transports with a descriptor (socket://, /dev/tty*): select, then one bulk read
            # with timeout 0. pyserial's socket in_waiting is only 0 or 1, so the read(1) +
            # read(in_waiting) pattern would fetch a reply byte by byte (~1.5 ms each reply).
            if not select.select([self._fd], [], [], 0.05)[0]:
                return b""
            return self.ser.read(65536)
        chunk = self.ser.read(1)  # rfc2217:// and others: returns as soon as a byte arrives
        if chunk and self.ser.in_waiting:
            chunk += self.ser.read(self.ser.in_waiting)
        return chunk

    def _read(self) -> None:
        buf = b""
        while not self._closed:
            try:
                chunk = self._read_chunk()
            except (serial.SerialException, OSError, ValueError):
                break
            if not chunk:
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._on_line(line.rstrip(b"\r"))
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _on_line(self, line: bytes) -> None:
        if not line:
            return
        try:
            doc = parse_frame(line)
        except (FrameError, ValueError):
            self.bad_frames += 1
            return
        with self._cv:
            if "ev" in doc:
                seq = doc.get("seq", 0)
                if self._last_seq is not None and seq != self._last_seq + 1 and seq > 1:
                    self.event_gaps += 1
                self._last_seq = seq
                self._events.append(Event(doc["ev"], seq, doc.get("t", 0), doc.get("data") or {}))
            elif "id" in doc:
                self._replies[doc["id"]] = doc
            self._cv.notify_all()
