# CPython stand-ins for MicroPython's const(), for the modules shared with the host tools
# (basalt/cgm). Imported only when `micropython` is missing, so the firmware never loads it.


def const(x):
    return x


def exports(module_globals):
    """A module __getattr__ that makes every _NAME = const(...) readable as NAME on CPython
    (MicroPython inlines underscore consts and keeps no such names, which saves heap)."""

    def __getattr__(name):
        v = module_globals.get("_" + name)
        if isinstance(v, int) and name.isupper():
            return v
        raise AttributeError(name)

    return __getattr__
