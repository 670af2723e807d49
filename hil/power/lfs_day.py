# A typical pump day on real littlefs, under MicroPython (run by hil/power/bench.py): the firmware's
# own Pump, history and journal, and FileStore, on os.VfsLfs2 over a RAM "flash chip" that counts
# what the chip would see - programs and block erases, per block. Commands run through the same
# overlays as over the protocol; after each one the journal snapshot the server writes, after each
# tick the sync the main loop makes. Prints one JSON line of figures.
#   micropython -X heapsize=4M hil/power/lfs_day.py BLOCKS DAYS   (MICROPYPATH=firmware)
import json
import os
import sys

import basalt.lib as overlay
from basalt.core import Mechanics
from basalt.core.pump import Pump
from basalt.lib.filestore import FileStore
from basalt.proto.req import lookup

BS = 4096


class Flash:
    """NOR flash in RAM, with littlefs's extended block-device protocol; counts erases per block."""

    def __init__(self, blocks):
        self.data = bytearray(BS * blocks)
        self.erases = bytearray(blocks) if blocks < 256 else [0] * blocks
        self.erase_n = [0] * blocks
        self.progs = self.prog_bytes = 0

    def readblocks(self, n, buf, off=0):
        a = n * BS + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            self.ioctl(6, n)
            off = 0
        a = n * BS + off
        self.data[a:a + len(buf)] = buf
        self.progs += 1
        self.prog_bytes += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // BS
        if op == 5:
            return BS
        if op == 6:
            self.erase_n[arg] += 1
            a = arg * BS
            self.data[a:a + BS] = b"\xff" * BS
            return 0
        return 0


class Motor:
    """Emits every commanded step by the next tick."""

    def __init__(self):
        self.n = 0

    def start(self, n, hz, direction):
        self.n = n

    def count(self):
        return self.n

    def busy(self):
        return False

    def stop(self):
        return self.n


def cmd(p, name, **args):
    r = overlay.call(lookup(name)[0], name, p, args)
    p.history.save(p)  # the server's snapshot after every command
    return r


def tick(p, n=1):
    for _ in range(n):
        p.tick()
        p.history.sync(p, 0)  # the main loop's sync after every tick


def main(blocks, days):
    flash = Flash(blocks)
    os.VfsLfs2.mkfs(flash)
    os.mount(os.VfsLfs2(flash), "/f")
    p = Pump(Motor(), Mechanics(50, 60000, 400))
    p.storage = FileStore("/f/data")
    # set-up (not counted): reservoir, a 24-segment profile around 1 U/h, limits
    cmd(p, "rewind")
    tick(p)
    cmd(p, "reservoir_insert", mU=300000)
    cmd(p, "prime_start")
    tick(p, 10)
    cmd(p, "prime_stop")
    cmd(p, "cannula_fill", mU=300)
    tick(p, 20)
    cmd(p, "basal_set", segments=[x for h in range(24) for x in (h * 60, 800 + (h % 6) * 100)])
    cmd(p, "resume")
    base = (flash.progs, flash.prog_bytes, sum(flash.erase_n), p.history.seq, p.history.sseq, list(flash.erase_n))
    settings_writes = 0
    day = 86400
    for _ in range(days):
        # a day: meals, corrections, a temp basal, a shower suspend, a profile switch
        plan = {7 * 3600: ("bolus", {"mU": 6000}), 9 * 3600: ("bolus", {"mU": 1500}),
                12 * 3600: ("bolus", {"mU": 8000}), 15 * 3600: ("temp_basal", {"percent": 70, "minutes": 60}),
                17 * 3600: ("suspend", {}), 17 * 3600 + 1800: ("resume", {}),
                19 * 3600: ("bolus", {"mU": 7000, "ext_mU": 2000, "minutes": 120}),
                22 * 3600: ("bolus", {"mU": 2000}), 23 * 3600: ("limits_set", {"max_bolus_mU": 10000})}
        t0 = p.uptime_s
        for s in range(day):
            a = plan.get(s)
            if a:
                cmd(p, a[0], **a[1])
                settings_writes += a[0] == "limits_set"
            tick(p)
        assert p.uptime_s == t0 + day
        if p.reservoir_steps < 20000:  # a reservoir change every few days (counted: it is use)
            cmd(p, "suspend")
            cmd(p, "rewind")
            while p.res_state != "rewound":
                tick(p)
            cmd(p, "reservoir_insert", mU=300000)
            cmd(p, "prime_start")
            tick(p, 10)
            cmd(p, "prime_stop")
            cmd(p, "cannula_fill", mU=300)
            while p.res_state != "ready":
                tick(p)
            cmd(p, "resume")
    per_block = [flash.erase_n[i] - base[5][i] for i in range(blocks)]
    out = {"days": days, "blocks": blocks, "records": p.history.seq - base[3], "snapshots": p.history.sseq - base[4],
           "settings_writes": settings_writes, "programs": flash.progs - base[0],
           "program_bytes": flash.prog_bytes - base[1], "erases": sum(flash.erase_n) - base[2],
           "max_block_erases": max(per_block), "blocks_erased": sum(1 for x in per_block if x)}
    os.umount("/f")
    print(json.dumps(out))


main(int(sys.argv[1]), int(sys.argv[2]))
