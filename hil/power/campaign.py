"""The power-cut campaign (issue 7, docs/persistence.md): cut the power of the real firmware at
random points - while it delivers basal, during a bolus, inside history and journal appends and
settings writes (torn at a random byte: the bus's K line) - restart it on the same storage, and
check after every cut:

- every history record the host was shown is still in flash, byte for byte; no record in flash
  is corrupt, and nothing corrupt is ever returned (checked against hil/power/flash.py, an
  independent reader of the flash files);
- the delivery the pump's records account for matches the plant's step log within the
  documented bound: each cut leaves at most max(CKPT, the largest 1-s train) steps unaccounted
  (CKPT more while a reservoir change's service trains run), and never accounts a step twice;
- nothing is delivered twice: no bolus is resumed, and after the restart the plant sees only
  basal;
- the pump is in a documented safe state (suspended, or running basal only with a ready
  reservoir, suspended if it was suspended), has raised unexpected_restart, lost no settings,
  and every acknowledged bolus ends in the history (done, cancelled or interrupted);
- boot leaves nothing behind: the live heap after every restart is within BOOT_HEAP_SLACK of the
  other restarts' (a recovery overlay kept alive after boot is what once left the console deaf
  at 64 KB), and the console never answers a valid request without its id.

    python -m hil.power --cuts 5000 --workers 2      # the longer run (make powercut)
"""
from __future__ import annotations

import random
import select
import socket
import time
from dataclasses import dataclass, field

from hil.power import flash
from hil.sim.firmware import DEFAULT_HEAP, FirmwareDied, SimPump
from host.client import frame, parse_frame

MU_PER_STEP = 5  # the sim board: 50 nL a step, U-100
BASAL = [0, 800, 360, 1200, 720, 900, 1080, 1100]  # a flat profile: 0.8-1.2 U/h
RATES = {"default": BASAL, "alt": [0, 1500, 600, 500, 1200, 1000]}
# Live heap after boot varies by ~130 B with what recovery restored; an overlay kept alive after
# boot costs 1-5 KB (tests/e2e/test_power_cut.py).
BOOT_HEAP_SLACK = 1024


class Unanswered(Exception):
    """The firmware died before it replied (a cut inside the command)."""


class Deaf(Exception):
    """The pump answered a valid request without its id: it could not even read the request (out
    of memory), so no host can match the answer - a deaf console."""


class Console:
    """A lean synchronous console client: one request at a time, retransmitted with the same id
    (the pump replays its cached reply, never executes twice), and it notices the firmware dying
    at once instead of timing out."""

    def __init__(self, sim: SimPump):
        self.sim = sim
        self.sock = socket.create_connection(("127.0.0.1", int(sim.console_url.rsplit(":", 1)[1])), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.rid = 0

    def close(self) -> None:
        self.sock.close()

    def doc(self, cmd: str, **args) -> dict:
        self.rid = self.rid % 65535 + 1
        body = {"id": self.rid, "cmd": cmd}
        if args:
            body["args"] = args
        data = frame(body)
        deadline = time.monotonic() + 30  # generous: other work may load the machine
        while time.monotonic() < deadline:
            try:
                self.sock.sendall(data)
            except OSError:
                raise Unanswered(cmd) from None
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                if not select.select([self.sock], [], [], 0.02)[0]:
                    if self.sim.proc.poll() is not None:
                        raise Unanswered(cmd)
                    continue
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    chunk = b""  # reset: the firmware is gone
                if not chunk:
                    raise Unanswered(cmd)
                self.buf += chunk
                *lines, self.buf = self.buf.split(b"\n")
                for ln in lines:
                    if ln.startswith(b"$"):
                        d = parse_frame(ln.rstrip(b"\r"))
                        if d.get("id") == self.rid:
                            return d
                        if d.get("id") == 0:  # our frames are valid: an answer without id is a failure
                            raise Deaf(f"{cmd} answered without its id: {d}")
        raise TimeoutError(f"no reply to {cmd}")

    def req(self, cmd: str, **args) -> dict:
        d = self.doc(cmd, **args)
        if not d.get("ok"):
            raise AssertionError(f"{cmd} {args} refused: {d}")
        return d.get("data") or {}


@dataclass
class Stats:
    cuts: int = 0
    kills: int = 0
    storage_cuts: int = 0
    cuts_in_commands: int = 0
    cuts_in_ticks: int = 0
    torn_records: int = 0
    worst_unaccounted_steps: int = 0
    unaccounted_steps: int = 0
    bolus_interrupted: int = 0
    boot_heap: list[int] = field(default_factory=list)  # live heap bytes after each restart
    restart_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def merge(self, o: Stats) -> None:
        for k in ("cuts", "kills", "storage_cuts", "cuts_in_commands", "cuts_in_ticks", "torn_records",
                  "unaccounted_steps", "bolus_interrupted"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.worst_unaccounted_steps = max(self.worst_unaccounted_steps, o.worst_unaccounted_steps)
        self.boot_heap += o.boot_heap
        self.restart_s += o.restart_s
        self.failures += o.failures


class Campaign:
    """One pump, many cuts. Randomness comes from seed only: a failure is reproducible."""

    def __init__(self, seed: int, heap: str = DEFAULT_HEAP, storage_dir: str | None = None):
        self.rng = random.Random(seed)
        self.seed = seed
        self.sim = SimPump(storage_dir=storage_dir, heap=heap)
        self.stats = Stats()
        self.seen: dict[int, tuple] = {}  # every history record the host was shown
        self.acked_boluses: list[int] = []  # seqs of acknowledged bolus requests
        self.state = "suspended"  # the state the last acknowledged command left
        self.maybe: set[str] = set()  # states an unacknowledged command may have left
        self.settings: dict[str, object] = {}  # acknowledged settings (profile, limits)
        self.pending_settings: dict[str, object] = {}
        self.gap = 0  # plant forward steps - pump forward steps, at the last restart
        self.max_train = 0
        self.service = False  # a reservoir change ran since the last restart
        self.c: Console | None = None

    # ---- running ----------------------------------------------------------------------------
    def run(self, cuts: int) -> Stats:
        self.sim.start()
        try:
            self.c = Console(self.sim)
            self._setup()
            for _ in range(cuts):
                try:
                    self._cycle()
                except (TimeoutError, OSError, Deaf) as e:  # the firmware stopped answering: say where
                    raise AssertionError(f"seed {self.seed} cut {self.stats.cuts + 1}: {e!r}; firmware running: "
                                         f"{self.sim.proc.poll() is None}; log:\n{self.sim.log_tail(2500)}") from None
        finally:
            if self.c:
                self.c.close()
            self.sim.close()
        return self.stats

    def _setup(self) -> None:
        c = self.c
        c.req("limits_set", max_bolus_mU=5000, max_hour_mU=20000, max_day_mU=200000)
        c.req("profile_set", name="alt", segments=RATES["alt"])
        self._reservoir_change(resume=False)
        c.req("basal_set", segments=BASAL)
        c.req("resume")
        self.state = "running"
        self.settings = {"profile": "default", "max_bolus_mU": 5000}
        self._sync_history()
        self.gap = self._gap()

    def _reservoir_change(self, resume: bool = True) -> None:
        c = self.c
        if c.req("status")["state"] == "running":
            c.req("suspend")
        c.req("rewind")
        while c.req("status")["reservoir_state"] != "rewound":
            self.sim.advance(5_000)
        c.req("reservoir_insert", mU=300_000)
        c.req("prime_start")
        self.sim.advance(2_000)
        c.req("prime_stop")
        c.req("cannula_fill", mU=300)
        while c.req("status")["reservoir_state"] != "ready":
            self.sim.advance(1_000)
        if resume:
            c.req("resume")
        self.service = True

    def _cycle(self) -> None:
        rng = self.rng
        c = self.c
        st = c.req("status")
        n0 = len(self.sim.plant.trains)
        if st["reservoir_steps"] < 8000 and st["reservoir_state"] == "ready":
            self._reservoir_change(resume=st["state"] == "running")
            self.state = "running" if st["state"] == "running" else "suspended"
        # kill: at a random virtual time (mid-train too); command: a cut torn into the writes of
        # random commands (records, snapshots, settings); tick: a cut torn into what delivery
        # writes on its own (snapshots every CKPT steps, bolus records), during basal or a bolus
        mode = rng.choice(("kill", "command", "command", "tick", "tick"))
        ops = [self._random_op() for _ in range(rng.randint(1, 4))]
        if mode == "tick":
            ops = [("resume", {})] if self.state == "suspended" else []
            if rng.random() < 0.6:
                ops.append(("bolus", {"mU": rng.randrange(1, 300) * 10}))
        died = False
        try:
            if mode == "command":
                self.sim.cut_storage(rng.choice((rng.randrange(0, 25), rng.randrange(0, 150), rng.randrange(0, 600))))
            for op in ops:
                self._do(op)
            if mode == "tick":
                self.sim.cut_storage(rng.choice((rng.randrange(0, 25), rng.randrange(0, 150), rng.randrange(0, 300))))
            # then time passes: basal, bolus steps, journal snapshots - and perhaps the cut; an
            # armed cut waits for the next writes (while anything is delivered: a snapshot every
            # CKPT steps at least)
            self.sim.run_until(self.sim.now_ms + rng.randrange(500, 60_000))
            for _ in range(20 if mode != "kill" and self.state == "running" else 0):
                self.sim.run_until(self.sim.now_ms + 60_000)
        except (Unanswered, FirmwareDied) as e:
            died = e
            self.sim.proc.wait(timeout=5)  # its bus closes a moment before it has exited
        if self.sim.proc.poll() is None:
            assert not died, f"{died!r} but the firmware runs"
            self.sim.kill()
            self.stats.kills += 1
        else:
            self.stats.storage_cuts += 1
            if self.sim._acked < self.sim._granted:
                self.stats.cuts_in_ticks += 1
            else:
                self.stats.cuts_in_commands += 1
        self.max_train = max((t.n for t in self.sim.plant.trains[n0:]), default=0)
        self._restart_and_check()

    def _random_op(self) -> tuple:
        rng = self.rng
        k = rng.randrange(14)
        if k < 4:
            return ("bolus", {"mU": rng.randrange(1, 300) * 10})
        if k == 4:
            return ("bolus", {"mU": rng.randrange(0, 100) * 10, "ext_mU": rng.randrange(1, 200) * 10, "minutes": 30})
        if k == 5:
            return ("bolus_cancel", {})
        if k == 6:
            return ("temp_basal", {"percent": rng.randrange(0, 200), "minutes": 15 * rng.randint(1, 8)}
                    if rng.random() < 0.6 else {"rate_mUh": rng.randrange(0, 2000), "minutes": 30})
        if k == 7:
            return ("temp_basal_cancel", {})
        if k == 8:
            return ("suspend", {}) if self.state == "running" else ("resume", {})
        if k == 9:
            return ("profile_select", {"name": rng.choice(("default", "alt"))})
        if k == 10:
            return ("limits_set", {"max_bolus_mU": rng.choice((4000, 5000, 6000))})
        if k == 11:
            return ("time_set", {"local_s": rng.randrange(0, 10**9)})
        if k == 12:
            return ("advance", {"ms": rng.randrange(100, 20_000)})
        return ("history", {})

    def _do(self, op: tuple) -> None:
        cmd, args = op
        if cmd == "advance":
            self.sim.run_until(self.sim.now_ms + args["ms"])
            return
        if cmd == "history":
            self._sync_history()
            return
        after = {"suspend": "suspended", "resume": "running"}.get(cmd)
        if after:
            self.maybe = {after}
        if cmd in ("profile_select", "limits_set"):
            key, val = ("profile", args["name"]) if cmd == "profile_select" else ("max_bolus_mU", args["max_bolus_mU"])
            self.pending_settings = {key: val}
        d = self.c.doc(cmd, **args)  # Unanswered: the cut came inside this command
        self.maybe = set()
        self.pending_settings = {}
        if d.get("ok"):
            if after:
                self.state = after
            if cmd == "profile_select":
                self.settings["profile"] = args["name"]
            elif cmd == "limits_set":
                self.settings["max_bolus_mU"] = args["max_bolus_mU"]
            elif cmd == "bolus":
                self.acked_boluses.append(self._find_request())

    def _find_request(self) -> int:
        """The seq of the bolus request just acknowledged (the host reads it back)."""
        self._sync_history()
        return max(s for s, r in self.seen.items() if r[2] == flash.H["BOLUS_REQUEST"])

    # ---- checks -------------------------------------------------------------------------------
    def _sync_history(self) -> None:
        """Read the records the host has not seen yet over the protocol; remember each."""
        since = max(self.seen, default=0)
        while True:
            d = self.c.req("history", since=since, limit=32)
            assert not d.get("skipped_corrupt"), d
            for r in d["records"]:
                assert r[0] not in self.seen or tuple(r) == self.seen[r[0]], (r, self.seen.get(r[0]))
                self.seen[r[0]] = tuple(r)
            if d["next"] >= d["newest"]:
                return
            since = d["next"]

    def _gap(self) -> int:
        """Forward steps the plant made minus forward steps the pump's records account for."""
        st = self.c.req("status")
        plant = sum(t.emitted for t in self.sim.plant.trains if t.direction > 0)
        return plant - (st["delivered_steps"] + st["prime_steps"])

    def _restart_and_check(self) -> None:
        sim = self.sim
        self.stats.cuts += 1
        self.c.close()
        t = time.perf_counter()
        sim.restart("power")
        try:
            self.c = Console(sim)
            st = self.c.req("status")
        except (OSError, Unanswered) as e:
            raise AssertionError(f"seed {self.seed} cut {self.stats.cuts}: no status after a restart ({e!r}); "
                                 f"firmware running: {sim.proc.poll() is None}; log:\n{sim.log_tail(2500)}") from None
        self.stats.restart_s.append(time.perf_counter() - t)
        heap = sim.heap()["alloc"]  # still at time 0: what boot (and a status request) left live
        where = f"seed {self.seed} cut {self.stats.cuts} (t={sim.now_ms} ms)"
        try:
            hs = self.stats.boot_heap
            hs.append(heap)
            assert max(hs) - min(hs) <= BOOT_HEAP_SLACK, (
                f"live heap after boot {heap} B, other restarts {min(hs)}-{max(hs)} B: boot left something alive")
            self._check(st)
        except AssertionError as e:
            self.stats.failures.append(f"{where}: {e}")
            raise AssertionError(f"{where}: {e}\nlog:\n{sim.log_tail(1500)}") from None

    def _check(self, st: dict) -> None:
        root = self.sim.storage_dir
        hist = flash.history(root)
        # flash: nothing corrupt, no torn tail left, the newest snapshot intact
        assert not hist.corrupt(), f"corrupt records in flash: {hist.corrupt()}"
        assert hist.torn == 0 and flash.journal(root).torn == 0, "a torn record was not cut off"
        assert flash.newest_snapshot(root) is not None
        # every record the host saw is still there, byte for byte (unless the ring dropped it)
        lost = [s for s, r in self.seen.items() if s >= hist.oldest and hist.records.get(s) != r]
        assert not lost, f"acknowledged records changed or lost: {lost[:5]}"
        first_new = max(self.seen, default=0) + 1
        self._sync_history()
        for s in range(first_new, hist.newest + 1):
            assert self.seen.get(s) == hist.records[s], f"record {s}: pump {self.seen.get(s)} flash {hist.records[s]}"
        new = [self.seen[s] for s in range(first_new, hist.newest + 1)]
        kinds = [r[2] for r in new]
        H = flash.H
        boots = [r for r in new if r[2] == H["BOOT"]]
        assert boots and boots[-1][4] == 0, f"no boot record for an unclean restart: {new}"
        self.stats.torn_records += sum(1 for r in new if r[2] == H["REPAIR"] and r[4] in (1, 3))
        assert not any(r[2] == H["REPAIR"] and r[4] in (2, 4) for r in new), f"corruption reported: {new}"
        self.stats.bolus_interrupted += kinds.count(H["BOLUS_INTERRUPTED"])
        # alarms and settings
        assert "unexpected_restart" in st.get("alarms", ["unexpected_restart"]), st
        assert "settings_lost" not in st.get("alarms", []), st
        prof = st["profile"]
        assert prof in {self.settings["profile"], self.pending_settings.get("profile", prof)}, (prof, self.settings)
        mb = self.c.req("limits_get")["max_bolus_mU"]
        assert mb in {self.settings["max_bolus_mU"], self.pending_settings.get("max_bolus_mU", mb)}, mb
        if "profile" in self.pending_settings or "max_bolus_mU" in self.pending_settings:
            self.settings.update(profile=prof, max_bolus_mU=mb)
        # the safe state
        assert st["bolus"] is None and st["extended"] is None, f"a bolus resumed: {st}"
        assert st["state"] in ("running", "suspended")
        possible = {self.state} | self.maybe
        if st["reservoir_state"] != "ready" or not st["reservoir_steps"] or st["reason"] not in ("", "user", "boot"):
            possible = {"suspended"}  # the pump stopped itself before the cut (its alarms say why)
        assert st["state"] in possible, f"state {st['state']} after a cut; possible {possible}"
        self.state = st["state"]
        self.maybe = set()
        # every acknowledged bolus has ended in the history
        ends = {H["BOLUS_DONE"], H["BOLUS_CANCEL"], H["BOLUS_INTERRUPTED"]}
        for req in self.acked_boluses:
            r = self.seen[req]
            want = (r[3] > 0) + (r[4] > 0)
            got = [x for s, x in self.seen.items() if s > req and x[2] in ends]
            assert len(got) >= want, f"bolus request {req} {r} has no end record"
        self.acked_boluses = []
        # delivery: what the cut left unaccounted, within the bound, never negative
        gap = self._gap()
        loss = gap - self.gap
        bound = (flash.CKPT + self.max_train) if self.service else max(flash.CKPT, self.max_train)
        assert 0 <= loss <= bound, f"{loss} steps unaccounted (bound {bound}), gap {self.gap} -> {gap}"
        self.stats.worst_unaccounted_steps = max(self.stats.worst_unaccounted_steps, loss)
        self.stats.unaccounted_steps += loss
        self.gap = gap
        self.service = False
        # nothing delivered twice: after the restart only basal reaches the plant (3 U/h at most
        # here: 200 % of the 1.5 U/h profile), nothing at all while suspended
        n0 = len(self.sim.plant.trains)
        self.sim.run_until(self.sim.now_ms + 20_000)
        moved = sum(t.emitted for t in self.sim.plant.trains[n0:] if t.direction > 0)
        most = 20 * 3000 // 3600 // MU_PER_STEP + 2 if st["state"] == "running" else 0
        assert moved <= most, f"{moved} steps in 20 s after a restart ({st['state']}): more than basal"
        assert self.c.req("status")["bolus_delivered_mU"] == st["bolus_delivered_mU"], "bolus insulin after a restart"


def _run_one(args: tuple) -> Stats:
    seed, cuts, heap = args
    return Campaign(seed, heap).run(cuts)


def run(cuts: int, workers: int = 2, seed: int = 1, heap: str = DEFAULT_HEAP, pumps: int | None = None) -> Stats:
    """cuts in all, over `pumps` simulated pumps (default: 2 per worker) run `workers` at a time."""
    from concurrent.futures import ProcessPoolExecutor

    from hil.build import build

    build("sim")  # once, before the workers start theirs (nothing left to compile then)
    pumps = pumps or max(1, 2 * workers)
    share = [cuts // pumps + (1 if i < cuts % pumps else 0) for i in range(pumps)]
    total = Stats()
    if workers <= 1:
        for i, n in enumerate(share):
            total.merge(_run_one((seed + i, n, heap)))
        return total
    with ProcessPoolExecutor(workers) as ex:
        for s in ex.map(_run_one, [(seed + i, n, heap) for i, n in enumerate(share)]):
            total.merge(s)
    return total
