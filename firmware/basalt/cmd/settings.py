# Restoring settings at boot: profiles.json (rate tables) and settings.json (active profile,
# limits, calculator, clock), written by lib/save.py through the storage HAL's write-new/verify/
# rename. Validated whole on load - anything wrong and the pump keeps its safe defaults and
# raises settings_lost.
import json
from binascii import unhexlify

from micropython import const

from basalt.cmd import check_int
from basalt.cmd._limits import SPEC
from basalt.core import FILE, PROFILES

# core/cgm.py CgmLink.v slots
_LOSS_S = const(7)
_LOW = const(8)
_HIGH = const(9)


def load(pump):
    """Restore settings; return False (and change nothing) when they are missing or invalid."""
    st = pump.storage
    raw = st.read(FILE) if st is not None else None
    praw = st.read(PROFILES) if st is not None else None
    if not raw and not praw:
        return True  # a new pump
    try:
        from array import array


        # settings.json is written only when a setting changes (a basal_set writes profiles only)
        doc = json.loads(raw) if raw else {"active": 0, "limits": dict(pump.limits.__dict__)}
        # profiles.json is written only when a profile changes: without it the defaults stand
        pdoc = json.loads(praw) if praw else {"profiles": ()}
        lim = doc["limits"]
        for k in SPEC:
            check_int(lim[k], k, SPEC[k][0], SPEC[k][1])
        names, rates = [], []
        if not praw:
            names, rates = pump.profiles.names, pump.profiles.rates
        for name, h in pdoc["profiles"]:
            r = array("H", unhexlify(h))  # see lib/save.py: uint16 slot rates, hex
            if type(name) is not str or len(r) != len(pump.profiles.rates[0]):
                raise ValueError("profile")
            for x in r:
                check_int(x, "rate", 0, lim["max_basal_mUh"])
            names.append(name)
            rates.append(r)
        if not 1 <= len(names) <= len(pump.profiles.rates):
            raise ValueError("profiles")
        active = check_int(doc["active"], "active", 0, len(names) - 1)
        calc = doc.get("calc")
        if calc is not None:
            from basalt.cmd import calc_cfg as c

            for k in ("cr", "isf", "target"):
                calc[k] = list(array("H", unhexlify(calc[k])))
            scratch = _Scratch(pump)
            c.calc_set(scratch, calc)  # validates (on a scratch object: nothing saved)
            calc = scratch.calc
        offset = doc.get("clock_offset_s", 0)
        if type(offset) is not int:
            raise ValueError("clock")
        al = doc.get("alarm", (20000, 0, 0))  # reservoir_low_mU, reservoir_low_h, auto_off_s
        check_int(al[0], "alarm", 0, 100000)
        check_int(al[1], "alarm", 0, 72)
        check_int(al[2], "alarm", 0, 86400)
        _cgm_checked(doc.get("cgm"))
    except Exception:  # noqa: BLE001 - any fault in stored settings: keep the safe defaults
        return False
    for k in SPEC:
        setattr(pump.limits, k, lim[k])
    pump.set_caps()
    p = pump.profiles
    for i in range(len(names)):
        p.rates[i][:] = rates[i]  # into the arrays core.Profiles allocated at boot
    p.names, p.active = names, active
    pump.calc = calc
    pump.clock_offset_s = offset
    pump.res_low_mu, pump.res_low_h, pump.auto_off_s = al[0], al[1], al[2]
    return True


def _cgm_checked(g):
    """The stored CGM settings [pairing hex, low, high, loss_s] (cmd/cgm_cmd.py's ranges), or None."""
    if g is None:
        return None
    p = unhexlify(g[0])
    if len(p) != 7 or not 0 <= g[1] <= 150 or not 0 <= g[2] <= 400 or not 600 <= g[3] <= 7200:
        raise ValueError("cgm")
    return p


def cgm(pump):
    """The CGM client's pairing and alerts, into pump.cgm. Boot makes the client after the
    recovery overlay (the radio's heap would not fit beside it), so after load()."""
    raw = pump.storage.read(FILE) if pump.storage is not None else None
    try:
        g = json.loads(raw).get("cgm") if raw else None
        p = _cgm_checked(g)
    except Exception:  # noqa: BLE001 - load() already judged the file; here: stay unpaired
        return
    if p is not None:
        c = pump.cgm
        c.pair[:] = p
        c.v[_LOW], c.v[_HIGH], c.v[_LOSS_S] = g[1], g[2], g[3]


class _Scratch:
    """Stands in for the pump while stored calculator settings are validated."""

    def __init__(self, pump):
        self.calc = None
        self.limits = pump.limits
        self.storage = None
