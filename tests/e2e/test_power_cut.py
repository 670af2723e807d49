"""The power-cut campaign (hil/power/campaign.py, docs/persistence.md): 1,000 cuts of the real
firmware in the simulator - killed at random virtual times (mid-train too), and torn inside
history, journal and settings writes at a random byte - each followed by a restart on the same
storage and every check the campaign makes (acknowledged records kept, nothing corrupt, the
unaccounted delivery within the bound, nothing delivered twice, a safe state). Two pumps per
worker, two workers. `make powercut` runs a longer campaign."""
from hil.build import build
from hil.power import campaign, flash

CUTS = 1000
HEAP = "64K"


def test_a_thousand_power_cuts():
    s = campaign.run(CUTS, workers=2, seed=7, heap=HEAP)
    restart_ms = sorted(s.restart_s)[len(s.restart_s) // 2] * 1000
    print(f"\n{s.cuts} cuts: {s.kills} kills, {s.storage_cuts} torn writes ({s.cuts_in_commands} in commands, "
          f"{s.cuts_in_ticks} in ticks), {s.torn_records} torn records dropped, {s.bolus_interrupted} boluses "
          f"interrupted; worst unaccounted {s.worst_unaccounted_steps} steps, {s.unaccounted_steps} in all; "
          f"restart median {restart_ms:.0f} ms; live heap after boot {min(s.boot_heap)}-{max(s.boot_heap)} B")
    assert not s.failures
    assert s.cuts == CUTS
    # the campaign reached every kind of cut it claims to
    assert s.kills >= CUTS // 10 and s.cuts_in_commands >= CUTS // 10 and s.cuts_in_ticks >= CUTS // 10
    assert s.torn_records >= CUTS // 20 and s.bolus_interrupted >= CUTS // 50
    # default bolus speed (1.5 U/min: 5-step trains): the bound is CKPT steps
    assert s.worst_unaccounted_steps <= flash.CKPT + 1


def test_the_cut_that_left_the_console_deaf_at_64k():
    """Seed 8, cut 38: basalt.app, imported after boot, kept the recovery overlay alive (below);
    the heap ran out in the next commands and the request checker could no longer load, so every
    request got an answer without its id. The campaign now also fails any restart whose boot
    leaves more live heap than the others, and any answer without an id."""
    s = campaign.Campaign(8, heap="64K").run(39)
    assert not s.failures, s.failures[:1]


def _mpy_tables(path) -> tuple[int, int]:
    """(names, objects) in a .mpy's module constant tables (header: M, version, flags, bits)."""
    b = path.read_bytes()
    i, out = 4, []
    for _ in range(2):
        v = 0
        while True:
            c = b[i]
            i += 1
            v = v << 7 | c & 0x7F
            if not c & 0x80:
                break
        out.append(v)
    return out[0], out[1]


def test_no_module_that_stays_loaded_keeps_a_stray_block_alive():
    """MicroPython allocates a loaded module's name table (2 bytes a name, in 8-byte words) and
    object table as one block, and points the object table just past the names. With no objects
    and names ending on a 32-byte heap block, that pointer is the next block's address, and the
    collector keeps whatever lives there alive as long as the module is loaded. basalt.app (31
    names, no objects) was imported after boot and pinned the recovery overlay's globals (4.8 KB
    with what they reach). Overlays are dropped after each command and basalt/boot.py by main()
    before the loop: every other module must not have that shape, on the sim or on a board (a
    module with it needs one object constant, e.g. a string of 11+ characters, or a name more or
    less)."""
    bad = []
    # the sim (the 64-bit Unix port: 8-byte words, 32-byte blocks) and the boards (32-bit: 4-byte
    # words, 16-byte blocks), each with the modules it deploys
    for board, word, block in (("sim", 8, 32), ("esp32", 4, 16), ("pico_w", 4, 16)):
        tree = build(board)
        for p in sorted(tree.rglob("*.mpy")):
            rel = p.relative_to(tree).as_posix()
            if rel.startswith("basalt/cmd/") or rel in ("basalt/boot.mpy", "basalt/lib/cpython.mpy"):
                continue
            names, objs = _mpy_tables(p)
            if objs == 0 and (names * 2 + word - 1) // word * word % block == 0:
                bad.append(f"{board}: {rel} ({names} names, no objects)")
    assert not bad, bad
