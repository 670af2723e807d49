# A tiny test runner that runs *under MicroPython* (the Unix port), so firmware unit tests
# execute on the real interpreter, not CPython. tests/conftest.py runs one file per process:
#   micropython -X heapsize=... tests/mpy/mpyunit.py test_module
# and reads one line per test: "PASS name" or "FAIL name: message" followed by the traceback.
import sys


def raises(exc, fn, *args, **kw):
    """Assert that fn(*args, **kw) raises exc; return the exception for further checks."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("expected %s from %s" % (exc.__name__, getattr(fn, "__name__", fn)))


def main(modname, only=None):
    import gc
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    failed = 0
    for n in names:
        if only and n != only:
            continue
        gc.collect()
        try:
            getattr(mod, n)()
            print("PASS", n)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            failed += 1
            print("FAIL", n + ":", repr(e))
            sys.print_exception(e)
            print("END", n)
    print("DONE", len(names), failed)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
