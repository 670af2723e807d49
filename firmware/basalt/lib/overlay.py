# Overlays: command handlers live in basalt/cmd/* and are imported for one command, then
# dropped, so their bytecode does not sit in the heap between commands. On boards with frozen
# or ROMFS modules an import is cheap either way; in the Unix port's 64 KB heap it is what lets
# the whole feature set fit. Loading an overlay costs about a millisecond.
import gc
import sys

PKG = "basalt.cmd"


def call(module, name, *args):
    full = PKG + "." + module
    gc.collect()  # the biggest free block is what an import needs
    try:
        mod = __import__(full, None, None, (name,))
        return getattr(mod, name)(*args)
    finally:
        drop()


def drop():
    """Forget every overlay module, so the collector can reclaim it."""
    pkg = sys.modules.get(PKG)
    for key in [k for k in sys.modules if k.startswith(PKG + ".")]:
        del sys.modules[key]
        if pkg is not None:
            try:
                delattr(pkg, key[len(PKG) + 1:])
            except AttributeError:
                pass

