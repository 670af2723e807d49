"""Human units <-> protocol integers, exactly (Decimal, never float).

The protocol carries insulin in milliunits (mU) and rates in mU/h. People type units: "2.5"
means 2.5 U = 2500 mU. More precision than 1 mU is refused rather than rounded.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Friendly limit names (what pumpctl and scenarios accept and show) -> (protocol key, display
# unit). Every limit is carried in milli-units of its display unit, so one conversion fits all.
LIMITS = {
    "max_bolus": ("max_bolus_mU", "U"),
    "max_basal": ("max_basal_mUh", "U/h"),
    "max_hour": ("max_hour_mU", "U"),
    "max_day": ("max_day_mU", "U"),
    "max_iob": ("max_iob_mU", "U"),
    "bolus_speed": ("bolus_speed_mU_min", "U/min"),
    "bolus_increment": ("bolus_increment_mU", "U"),
}


class UnitError(ValueError):
    pass


def to_mu(text: str | int | Decimal, what: str = "amount") -> int:
    """'2.5' -> 2500. Refuses negatives, non-numbers and sub-milliunit precision."""
    try:
        d = Decimal(str(text).strip())
    except InvalidOperation:
        raise UnitError(f"{what} {text!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise UnitError(f"{what} {text!r} must be a finite, non-negative number of units")
    mu = d * 1000
    if mu != mu.to_integral_value():
        raise UnitError(f"{what} {text!r} has more precision than 0.001 U")
    return int(mu)


def fmt_u(mu: int, places: int = 3) -> str:
    """2500 -> '2.500' (units)."""
    return f"{Decimal(mu) / 1000:.{places}f}"


def parse_hhmm(text: str) -> int:
    """'06:30' -> 390 minutes after midnight."""
    try:
        h, m = str(text).split(":")
        hh, mm = int(h), int(m)
    except ValueError:
        raise UnitError(f"time {text!r} is not HH:MM") from None
    if not (0 <= hh < 24 and 0 <= mm < 60):
        raise UnitError(f"time {text!r} is out of range")
    return hh * 60 + mm


def fmt_hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_segments(items: list[str]) -> list[int]:
    """['00:00=0.8', '06:30=1.25'] -> [0, 800, 390, 1250]: the protocol's flat segments
    (start minute, mU/h, start minute, mU/h, ...)."""
    out: list[int] = []
    for item in items:
        if "=" not in item:
            raise UnitError(f"segment {item!r} is not HH:MM=RATE")
        t, r = item.split("=", 1)
        out += [parse_hhmm(t), to_mu(r, "rate")]
    return out


def flat(entries: list) -> list:
    """[[0, 800], [390, 1250]] -> [0, 800, 390, 1250]; a flat list is returned as it is."""
    if entries and all(isinstance(e, (list, tuple)) for e in entries):
        return [x for e in entries for x in e]
    return list(entries)


def pairs(flat_list: list, width: int = 2) -> list[list[int]]:
    """[0, 800, 390, 1250] -> [[0, 800], [390, 1250]] (width values per entry)."""
    return [list(flat_list[i:i + width]) for i in range(0, len(flat_list), width)]
