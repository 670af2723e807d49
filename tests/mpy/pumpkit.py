# Helpers for firmware unit tests: a pump on hardware doubles, driven through the same command
# overlays the protocol uses (so tests exercise the real validation), one tick at a time.
from basalt.core import Mechanics, Refused
from basalt.core.pump import Pump
from basalt.proto.req import lookup
from basalt.proto.server import command
from hw_doubles import CountingMotor, DictStorage


def mech():
    return Mechanics(50, 60000, 400)


def flat(v):
    """[[0, 800], [390, 1250]] -> [0, 800, 390, 1250]: tests write schedules as pairs for
    readability; the protocol carries them flat."""
    if type(v) is list and v and all(type(e) is list for e in v):
        return [x for e in v for x in e]
    return v


def cmd(p, op, **args):
    entry = lookup(op)
    assert entry, op
    for k in ("segments", "cr", "isf", "target"):
        if k in args:
            args[k] = flat(args[k])
    return command(p, entry[0], op, args)  # as the server runs it: the command, then its save


def refused(p, op, **args):
    """Run a command that must be refused; return the Refused."""
    try:
        cmd(p, op, **args)
    except Refused as e:
        return e
    raise AssertionError(op + " was not refused")


def bare(storage=None):
    events = []
    p = Pump(CountingMotor(), mech(), lambda n, d: events.append((n, d)))
    p.storage = storage if storage is not None else DictStorage()
    return p, p.delivery.motor, events


def make(segments=None, reservoir_mu=300000, limits=None):
    """A running pump: reservoir changed (no priming), schedule set, resumed."""
    p, m, events = bare()
    cmd(p, "rewind")
    p.tick()
    cmd(p, "reservoir_insert", mU=reservoir_mu)
    cmd(p, "prime_start")
    cmd(p, "prime_stop")
    cmd(p, "cannula_fill", mU=0)
    if limits:
        cmd(p, "limits_set", **limits)
    cmd(p, "basal_set", segments=segments or [[0, 1000]])
    cmd(p, "resume")
    return p, m, events


def run(p, seconds):
    for _ in range(seconds):
        p.tick()


def owed_basal(spans):
    """Steps owed for [(rate mU/h, ticks), ...] by the documented accrual rule: every tick adds
    rate x 1000 ms to an accumulator, one step per 5000 uU x 3600, remainder carried."""
    acc = 0
    n = 0
    for rate, ticks in spans:
        for _ in range(ticks):
            acc += rate * 1000
            n += acc // (5000 * 3600)
            acc %= 5000 * 3600
    return n
