# Restoring settings at boot: profiles.json (rate tables) and settings.json (active profile,
# limits, calculator, clock), written by _save.py through the storage HAL's write-new/verify/
# rename. Validated whole on load - anything wrong and the pump keeps its safe defaults and
# raises settings_lost.
import json
from binascii import unhexlify

from ..core.profiles import MAX_PROFILES, SLOTS
from ._limits import SPEC
from ._save import FILE, PROFILES
from ._util import check_int


def load(pump):
    """Restore settings; return False (and change nothing) when they are missing or invalid."""
    st = pump.storage
    raw = st.read(FILE) if st is not None else None
    praw = st.read(PROFILES) if st is not None else None
    if not raw and not praw:
        return True  # a new pump
    try:
        from array import array

        doc = json.loads(raw)
        lim = doc["limits"]
        for k in SPEC:
            check_int(lim[k], k, SPEC[k][0], SPEC[k][1])
        # profiles.json is written only when a profile changes: without it the defaults stand
        names, rates = ([], []) if praw else (pump.profiles.names, pump.profiles.rates)
        for name, h in json.loads(praw)["profiles"] if praw else ():
            r = array("H", unhexlify(h))  # see _save.py: uint16 slot rates, hex
            if type(name) is not str or len(r) != SLOTS:
                raise ValueError("profile")
            for x in r:
                check_int(x, "rate", 0, lim["max_basal_mUh"])
            names.append(name)
            rates.append(r)
        if not 1 <= len(names) <= MAX_PROFILES:
            raise ValueError("profiles")
        active = check_int(doc["active"], "active", 0, len(names) - 1)
        calc = doc.get("calc")
        if calc is not None:
            from . import calc_cfg as c

            for k in ("cr", "isf", "target"):
                calc[k] = list(array("H", unhexlify(calc[k])))
            scratch = _Scratch(pump)
            c.calc_set(scratch, calc)  # validates (on a scratch object: nothing saved)
            calc = scratch.calc
        offset = doc.get("clock_offset_s", 0)
        if type(offset) is not int:
            raise ValueError("clock")
    except Exception:  # noqa: BLE001 - any fault in stored settings: keep the safe defaults
        return False
    for k in SPEC:
        setattr(pump.limits, k, lim[k])
    pump.set_caps()
    pump.profiles.names, pump.profiles.rates, pump.profiles.active = names, rates, active
    pump.calc = calc
    pump.clock_offset_s = offset
    return True


class _Scratch:
    """Stands in for the pump while stored calculator settings are validated."""

    def __init__(self, pump):
        self.calc = None
        self.limits = pump.limits
        self.storage = None
