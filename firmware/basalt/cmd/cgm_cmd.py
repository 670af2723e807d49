# CGM commands for the host: the latest reading with the pump's trend, the recent readings,
# pairing (the pump talks to one sensor, by address, and ignores every other) and the alert
# settings. The client itself is basalt/cgm/client.py; docs/cgm_client.md.
from micropython import const

from ..core import Refused
from . import only

# core/cgm.py CgmLink.v slots
_STATE = const(0)
_GN = const(5)
_LOSS_S = const(7)
_LOW = const(8)
_HIGH = const(9)
_LOST = const(13)


def _link(pump):
    if pump.cgm is None:
        raise Refused("state", "this board has no radio")
    return pump.cgm


def cgm(pump, args):
    """{} -> the pairing, the link, the latest valid reading with its age and trend, the alert
    settings, and the readings counted per reason: counts[0] accepted, counts[r] rejected with
    reason r (docs/cgms.md)."""
    only(args)
    c = _link(pump)
    p = c.pair
    v = c.v
    out = {"paired": None if not p[0] else ":".join("%02X" % b for b in p[1:7]),
           "link": ("idle", "scanning", "connecting", "discovering", "up")[v[_STATE]],
           "glucose_mgdl": None, "age_s": None, "trend": None, "low_mgdl": v[_LOW], "high_mgdl": v[_HIGH],
           "loss_min": v[_LOSS_S] // 60, "counts": list(c.vs[29:44]), "events_lost": v[_LOST]}
    if c.v[_GN]:
        i = (c.v[_GN] - 1) % 24
        out["glucose_mgdl"], out["age_s"] = c.g[i], pump.uptime_s - c.gt[i]
        out["trend"] = _trend(c, c.gt[i])
    return out


def cgm_history(pump, args):
    """{} -> the valid readings the pump holds (the last 3 hours at most), oldest first, as a
    flat list [pump time s, mg/dL, ...]. Older readings: history with type 22."""
    only(args)
    c = _link(pump)
    out = []
    for k in range(c.v[_GN] - 24 if c.v[_GN] > 24 else 0, c.v[_GN]):
        out.append(c.gt[k % 24])
        out.append(c.g[k % 24])
    return {"readings": out}


def _trend(c, now):
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
