# Settings on storage: profiles, limits, calculator, clock. Saved whole and atomically (the
# storage HAL writes a new file, verifies it, renames it over the old one); validated whole on
# load - anything wrong and the pump keeps its safe defaults and raises settings_lost.
import json

from ..core.profiles import MAX_PROFILES, SLOTS
from ._limits import SPEC
from ._save import FILE
from ._util import check_int


def load(pump):
    """Restore settings; return False (and change nothing) when they are missing or invalid."""
    raw = pump.storage.read(FILE) if pump.storage is not None else None
    if not raw:
        return True
    try:
        from array import array

        doc = json.loads(raw)
        lim = doc["limits"]
        for k in SPEC:
            check_int(lim[k], k, SPEC[k][0], SPEC[k][1])
        names, rates = [], []
        for name, r in doc["profiles"]:
            if type(name) is not str or type(r) is not list or len(r) != SLOTS:
                raise ValueError("profile")
            for x in r:
                check_int(x, "rate", 0, lim["max_basal_mUh"])
            names.append(name)
            rates.append(array("H", r))
        if not 1 <= len(names) <= MAX_PROFILES:
            raise ValueError("profiles")
        active = check_int(doc["active"], "active", 0, len(names) - 1)
        calc = doc.get("calc")
        if calc is not None:
            from . import calc_cfg as c

            c.calc_set(_Scratch(pump), calc)  # validates (on a scratch object: nothing saved)
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
