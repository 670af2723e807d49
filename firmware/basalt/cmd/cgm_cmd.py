# CGM commands for the host: the latest reading with the pump's trend, the recent readings,
# pairing (the pump talks to one sensor, by address, and ignores every other) and the alert
# settings, which are saved with the settings (lib/save.py). The client itself is
# basalt/cgm/client.py; docs/cgm_client.md.
from micropython import const

from basalt.cmd import check_int, commit, only, opt
from basalt.core import Refused

# core/cgm.py CgmLink.v slots
_SEARCHING = const(5)  # cgm/client.py states: 0 idle ... 4 up, 5 searching (cgm_scan)
_STATE = const(0)
_CONN = const(1)
_DUE = const(2)
_RETRY_S = const(3)
_LAST = const(4)
_GN = const(5)
_VALID_T = const(6)
_LOSS_S = const(7)
_LOW = const(8)
_HIGH = const(9)
_LOST = const(13)
_FOUND = const(26)  # sensors found by cgm_scan (c.found holds their addresses)


def link(pump):
    if pump.cgm is None:
        raise Refused("state", "this board has no radio")
    return pump.cgm


def cgm(pump, args):
    """{} -> the pairing, the link, the latest valid reading with its age and trend, the alert
    settings, and the readings counted per reason: counts[0] accepted, counts[r] rejected with
    reason r (docs/cgms.md)."""
    only(args)
    c = link(pump)
    p = c.pair
    v = c.v
    out = {"paired": None if not p[0] else ":".join("%02X" % b for b in p[1:7]),
           "link": ("idle", "scanning", "connecting", "discovering", "up", "searching")[v[_STATE]],
           "glucose_mgdl": None, "age_s": None, "trend": None, "low_mgdl": v[_LOW], "high_mgdl": v[_HIGH],
           "loss_min": v[_LOSS_S] // 60, "counts": list(c.vs[29:44]), "events_lost": v[_LOST]}
    if v[_FOUND]:  # what the last cgm_scan found
        out["found"] = [":".join("%02X" % b for b in c.found[7 * j + 1:7 * j + 7]) for j in range(v[_FOUND])]
    if c.v[_GN]:
        i = (c.v[_GN] - 1) % 24
        out["glucose_mgdl"], out["age_s"] = c.g[i], pump.uptime_s - c.gt[i]
        out["trend"] = trend(c, c.gt[i])
    return out


def cgm_history(pump, args):
    """{} -> the valid readings the pump holds (the last 3 hours at most), oldest first, as a
    flat list [pump time s, mg/dL, ...]. Older readings: history with type 22."""
    only(args)
    c = link(pump)
    out = []
    for k in range(c.v[_GN] - 24 if c.v[_GN] > 24 else 0, c.v[_GN]):
        out.append(c.gt[k % 24])
        out.append(c.g[k % 24])
    return {"readings": out}


def trend(c, now):
    """Rate of change over the 20 min before now, tenths of mg/dL per minute: the
    least-squares slope of the valid readings in that window (at least 3), or None."""
    n = sx = sy = sxx = sxy = 0
    for k in range(c.v[_GN] - 1, c.v[_GN] - 25 if c.v[_GN] > 24 else -1, -1):
        t = c.gt[k % 24]
        if now - t > 1200:
            break
        x = (t - now) // 6  # tenths of a minute
        y = c.g[k % 24]
        n += 1
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    d = n * sxx - sx * sx
    if n < 3 or d == 0:
        return None
    return (n * sxy - sx * sy) * 100 // d  # mg/dL per tenth-minute x 100


def cgm_pair(pump, args):
    """{address: "C0:98:E5:49:00:01"} binds the pump to that sensor (any other is ignored);
    {address: null} unpairs. Saved with the settings."""
    only(args, "address")
    c = link(pump)
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
    undo = ((c.pair, None, bytes(c.pair)),)
    c.pair[:] = new
    commit(pump, undo)
    reset(pump, c)  # (before the save: if that fails, the old pairing's link just starts over)
    return {"paired": a}


def cgm_set(pump, args):
    """{low_mgdl: 0 or 55..150, high_mgdl: 0 or 120..400, loss_min: 10..120}: the glucose alerts
    (0 = off; low is on at 70 by default) and the signal-loss alert. Saved with the settings."""
    only(args, "low_mgdl", "high_mgdl", "loss_min")
    c = link(pump)
    low = check_int(opt(args, "low_mgdl", c.v[_LOW]), "low_mgdl", 0, 150)
    high = check_int(opt(args, "high_mgdl", c.v[_HIGH]), "high_mgdl", 0, 400)
    loss = check_int(opt(args, "loss_min", c.v[_LOSS_S] // 60), "loss_min", 10, 120)
    if 0 < low < 55 or 0 < high < 120 or low and high and high <= low:
        raise Refused("range", "low_mgdl is 0 or 55..150, high_mgdl 0 or 120..400, and above low")
    undo = ((c.v, _LOW, c.v[_LOW]), (c.v, _HIGH, c.v[_HIGH]), (c.v, _LOSS_S, c.v[_LOSS_S]))
    c.v[_LOW], c.v[_HIGH], c.v[_LOSS_S] = low, high, loss * 60
    commit(pump, undo)
    return {"low_mgdl": low, "high_mgdl": high, "loss_min": loss}


def cgm_scan(pump, args):
    """{seconds: 5..60 (10)}: an unpaired pump searches for sensors advertising the CGM service
    (0x181F); `cgm` lists what it found ("found", up to 4 addresses) for the user to choose one
    with cgm_pair. It never connects to them. A paired pump talks to its own sensor only."""
    only(args, "seconds")
    c = link(pump)
    t = check_int(opt(args, "seconds", 10), "seconds", 5, 60)
    if c.pair[0]:
        raise Refused("state", "the pump is paired: unpair it (cgm_pair with address null) to search")
    if c.v[_STATE] == _SEARCHING:
        raise Refused("busy", "a search is running")
    c.v[_FOUND] = 0
    try:
        c.ble.gap_scan(t * 1000, 30000, 30000, True)  # active: a sensor may name the service in its scan response
    except OSError as e:
        raise Refused("radio", "the radio refused the scan (%d)" % e.args[0])
    c.v[_STATE] = _SEARCHING
    c.v[_DUE] = pump.uptime_s + t + 10  # the scan reports its end; this is in case it never does
    return {"link": "searching", "seconds": t}


def reset(pump, c):
    """A new pairing: drop the link and the session mapping; scan now."""
    if c.v[_STATE]:
        try:
            if c.v[_STATE] == 1 or c.v[_STATE] == _SEARCHING:
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
