# Basalt's shared helpers, in the package module itself: a module of their own would cost ~0.4 KB
# of module overhead and three interned names each (docs/memory.md). Two things live here:
#
# 1. The overlay loader (call, run, drop). Modules use it as `from basalt import lib as overlay`, then
#    overlay.call(...).
#
# 2. crc16: CRC-16/MCRF4XX, poly 0x1021 reflected (0x8408), init 0xFFFF, reflected in/out, no final
#    XOR. The one CRC in Basalt: the console protocol frames, the history and settings files and
#    the CGMS E2E-CRC (Bluetooth CGMS spec). Not CRC-16/CCITT-FALSE, which also starts at 0xFFFF:
#    "123456789" gives 0x6F91 here, 0x29B1 there. Pure Python for both MicroPython and CPython. A
#    16-entry nibble table: two lookups per byte, 4x faster than bit by bit, for 32 bytes rather
#    than a 512-byte byte table.
#
# Overlays: command handlers live in basalt/cmd/* and are imported for one command, then
# dropped, so their bytecode does not sit in the heap between commands. On boards with frozen
# or ROMFS modules an import is cheap either way; in the Unix port's 64 KB heap it is what lets
# the whole feature set fit. Loading an overlay costs about a millisecond.
import gc
import sys
from array import array

# _T[i]: the CRC of nibble i, four reflected shifts of poly 0x8408 (tests check the vectors)
_T = array("H", (0x0000, 0x1081, 0x2102, 0x3183, 0x4204, 0x5285, 0x6306, 0x7387,
                 0x8408, 0x9489, 0xA50A, 0xB58B, 0xC60C, 0xD68D, 0xE70E, 0xF78F))


def crc16(data, start=0, end=-1, crc=0xFFFF):
    """CRC of data[start:end] (end=-1 means len(data)); pass crc to continue a running CRC."""
    if end < 0:
        end = len(data)
    t = _T
    for i in range(start, end):
        b = data[i]
        crc = (crc >> 4) ^ t[(crc ^ b) & 15]
        crc = (crc >> 4) ^ t[(crc ^ (b >> 4)) & 15]
    return crc


def call(module, name, *args):
    """basalt.cmd.<module>.<name>(*args) (or <module>.<name> for a dotted module path: the CGM
    client); then every overlay is dropped, and so is the basalt.cmd package, whose __init__
    holds the helpers they share."""
    gc.collect()  # the biggest free block is what an import needs
    try:
        return run(module, name, *args)
    finally:
        drop()


def run(module, name, *args, **kw):
    """Call basalt.cmd.<module>.<name> and drop just that module again. Commands run their large
    helpers this way (the limit guard, the settings save), so two never sit in the heap at once."""
    key = module if "." in module else "basalt.cmd." + module
    try:
        return getattr(__import__(key, None, None, (name,)), name)(*args, **kw)
    finally:
        if key in sys.modules:
            del sys.modules[key]
            i = key.rfind(".")
            try:
                delattr(sys.modules[key[:i]], key[i + 1:])
            except (AttributeError, KeyError):
                pass


def drop():
    """Forget every overlay module and the basalt.cmd package, so the collector can reclaim them;
    and what overlays load beside them: the request checker (basalt.proto.req and .frame, per line),
    the CGM codec (basalt.cgm, per reading) and the settings save (basalt.lib.save)."""
    for key in [k for k in sys.modules if k.startswith("basalt.cmd") or k.startswith("basalt.cgm")
                or k == "basalt.proto.frame" or k == "basalt.proto.req" or k == "basalt.lib.save"]:
        del sys.modules[key]
    for pkg, attr in (("basalt", "cmd"), ("basalt", "cgm"), ("basalt.proto", "frame"), ("basalt.proto", "req"),
                      ("basalt.lib", "save")):
        try:
            delattr(sys.modules[pkg], attr)
        except (AttributeError, KeyError):
            pass
