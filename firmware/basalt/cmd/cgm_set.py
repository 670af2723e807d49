# Changing the CGM client's settings: pairing (the pump talks to one sensor, by address, and
# ignores every other) and the alerts. Saved with the settings (cmd/_save.py). Reading them is
# cmd/cgm_cmd.py; docs/cgm_client.md.
from micropython import const

from ..core import Refused
from . import check_int, commit, only, opt

# core/cgm.py CgmLink.v slots
_STATE = const(0)
_CONN = const(1)
_DUE = const(2)
_RETRY_S = const(3)
_LAST = const(4)
_VALID_T = const(6)
_LOSS_S = const(7)
_LOW = const(8)
_HIGH = const(9)


def _link(pump):
    if pump.cgm is None:
        raise Refused("state", "this board has no radio")
    return pump.cgm


def cgm_pair(pump, args):
    """{address: "C0:98:E5:49:00:01"} binds the pump to that sensor (any other is ignored);
    {address: null} unpairs. Saved with the settings."""
    only(args, "address")
    c = _link(pump)
    a = opt(args, "address", 0)
    if a == 0:
        raise Refused("bad_arg", "missing argument address")
    new = bytearray(7)  # unpaired
    if a is not None:
        if type(a) is not str or len(a) != 17:
            raise Refused("bad_arg", "address is 6 hex bytes like C0:98:E5:49:00:01")
        try:
            for i in range(6):
                if i and a[3 * i - 1] != ":":
                    raise ValueError
                new[i + 1] = int(a[3 * i:3 * i + 2], 16)
        except ValueError:
            raise Refused("bad_arg", "address is 6 hex bytes like C0:98:E5:49:00:01")
        new[0] = 1
    old = bytes(c.pair)

    def undo():
        c.pair[:] = old
    c.pair[:] = new
    commit(pump, undo)
    _restart(pump, c)
    return {"paired": a}


def cgm_set(pump, args):
    """{low_mgdl: 0 or 55..150, high_mgdl: 0 or 120..400, loss_min: 10..120}: the glucose alerts
    (0 = off; low is on at 70 by default) and the signal-loss alert. Saved with the settings."""
    only(args, "low_mgdl", "high_mgdl", "loss_min")
    c = _link(pump)
    low = check_int(opt(args, "low_mgdl", c.v[_LOW]), "low_mgdl", 0, 150)
    high = check_int(opt(args, "high_mgdl", c.v[_HIGH]), "high_mgdl", 0, 400)
    loss = check_int(opt(args, "loss_min", c.v[_LOSS_S] // 60), "loss_min", 10, 120)
    if 0 < low < 55 or 0 < high < 120 or low and high and high <= low:
        raise Refused("range", "low_mgdl is 0 or 55..150, high_mgdl 0 or 120..400, and above low")
    old = (c.v[_LOW], c.v[_HIGH], c.v[_LOSS_S])

    def undo():
        c.v[_LOW], c.v[_HIGH], c.v[_LOSS_S] = old
    c.v[_LOW], c.v[_HIGH], c.v[_LOSS_S] = low, high, loss * 60
    commit(pump, undo)
    return {"low_mgdl": low, "high_mgdl": high, "loss_min": loss}


def _restart(pump, c):
    """A new pairing: drop the link and the session mapping; scan now."""
    if c.v[_STATE]:
        try:
            if c.v[_STATE] == 1:
                c.ble.gap_scan(None)
            elif c.v[_STATE] == 2:
                c.ble.gap_connect(None)
            else:
                c.ble.gap_disconnect(c.v[_CONN])
        except OSError:
            pass
    c.v[_STATE] = c.v[_DUE] = c.v[_RETRY_S] = 0
    c.v[_LAST] = -1
    c.v[_VALID_T] = pump.uptime_s
    c.vs[13] = -0x40000000  # session unknown (basalt/cgm/rx.py)
