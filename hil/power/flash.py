"""The pump's flash logs read from the host side: the simulator's storage directory, decoded with
the firmware's own layout (firmware/basalt/core/history.py, loaded from source so there is one
definition). The power-cut campaign checks the pump against this independent reader: what is
really in flash, record by record, CRC by CRC.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from basalt.lib import crc16

from hil.paths import FIRMWARE_DIR
from host.render import RECORD_CODE


def _firmware_history() -> dict:
    """core/history.py's names, on CPython (const() is MicroPython's; here it is the identity)."""
    path = FIRMWARE_DIR / "basalt" / "core" / "history.py"
    src = path.read_text().replace("from micropython import const\n", "")
    ns: dict = {"const": lambda x: x, "__name__": "basalt.core.history", "__package__": "basalt.core"}
    exec(compile(src, str(path), "exec"), ns)
    return ns


H = _firmware_history()
H.update({name.upper(): code for name, code in RECORD_CODE.items()})  # record types (tests/test_record_types.py)
REC, PER, SEGS = H["LOGS"]["h"]
SREC, SPER, SSEGS, SFMT = H["LOGS"]["s"]
CKPT = H["CKPT"]
# journal snapshot fields after (seq, history seq), in History.save() order
SNAP_FIELDS = ("uptime_s", "clock_offset_s", "flags", "reservoir_steps", "plunger_steps", "basal_steps",
               "bolus_steps", "prime_steps", "extra_steps", "nb_req", "nb_done", "nb_id", "xb_req", "xb_done",
               "xb_dur", "xb_start", "xb_id", "bolus_id", "tb_end", "tb_pct", "tb_rate", "tb_min", "tb_steps",
               "hour_sum", "day_sum", "iob", "alarms_active", "alarms_acked", "prime_run", "fill_target")


@dataclass
class Log:
    """One log as stored: records by seq (None where a record is corrupt), the torn tail bytes
    (a partial last record, which recovery cuts off), and the segment files present."""
    records: dict[int, tuple | None]
    torn: int
    segments: list[int]

    @property
    def newest(self) -> int:
        return max(self.records, default=0)

    @property
    def oldest(self) -> int:
        return min(self.records, default=1)

    def corrupt(self) -> list[int]:
        return [s for s, r in self.records.items() if r is None]


def read_log(root: str | Path, log: str) -> Log:
    size, per = (REC, PER) if log == "h" else (SREC, SPER)
    fmt = H["FMT"] if log == "h" else SFMT
    root = Path(root)
    segs = sorted(int(p.name[1:]) for p in root.iterdir() if re.fullmatch(log + r"\d+", p.name))
    records: dict[int, tuple | None] = {}
    torn = 0
    for k in segs:
        raw = (root / f"{log}{k}").read_bytes()
        n = len(raw) // size
        if k == segs[-1]:
            torn = len(raw) % size
        for i in range(n):
            seq = k * per + i + 1
            off = i * size
            ok = (struct.unpack_from("<I", raw, off)[0] == seq
                  and struct.unpack_from("<H", raw, off + size - 2)[0] == crc16(raw, off, off + size - 2))
            records[seq] = struct.unpack_from(fmt, raw, off) if ok else None
    return Log(records, torn, segs)


def history(root: str | Path) -> Log:
    """History records as (seq, t, type, a, b) (the pad byte dropped), None where corrupt."""
    lg = read_log(root, "h")
    lg.records = {s: (r[0], r[1], r[2], r[4], r[5]) if r else None for s, r in lg.records.items()}
    return lg


def journal(root: str | Path) -> Log:
    """Journal snapshots as dicts of the fields History.save() writes, None where corrupt."""
    lg = read_log(root, "s")
    lg.records = {s: dict(zip(("seq", "hseq", *SNAP_FIELDS), r, strict=True)) if r else None
                  for s, r in lg.records.items()}
    return lg


def newest_snapshot(root: str | Path) -> dict | None:
    recs = journal(root).records
    for s in sorted(recs, reverse=True):
        if recs[s] is not None:
            return recs[s]
    return None
