"""IEC 60601-2-24 flow-rate accuracy: the trumpet curve and the overall error.

The standard's test weighs what the pump delivers on a balance read every S = 0.5 min over a 2 h
run and analyses the second hour (T = 60 min, 120 sample intervals, 121 readings). With W_i the
volume delivered in interval i and r the programmed rate:

- overall error  A = 100 * (sum of W_i - r*T) / (r*T)
- for each observation window P (2, 5, 11, 19 and 31 min) every run of P/S consecutive intervals,
  sliding one interval at a time, gives a window error
      E_j = 100 * (sum_{i=j}^{j+P/S-1} W_i - r*P) / (r*P)        j = 1 .. m,  m = (T - P)/S + 1
  (the standard writes it as the mean over the window of the per-interval errors
  (S/P) * sum 100 * (Q_i - r)/r, which is the same number), and Ep(max) = max_j E_j,
  Ep(min) = min_j E_j. Plotted against P they narrow with longer windows: the trumpet.

Everything here is plain arithmetic on the balance readings, so it works the same on a
simulated plant, a real balance log or synthetic data.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

SAMPLE_INTERVAL_S = 30
WINDOWS_MIN = (2, 5, 11, 19, 31)
RUN_MIN = 120
ANALYSIS_START_MIN = 60  # the second hour
ANALYSIS_END_MIN = 120


@dataclass
class WindowResult:
    window_min: float
    intervals_per_window: int  # P/S
    windows: int  # m = (T - P)/S + 1
    max_pct: float  # Ep(max)
    min_pct: float  # Ep(min)


@dataclass
class TrumpetResult:
    programmed_nl: float  # r*T over the analysis period
    delivered_nl: float  # what the balance gained over it
    overall_pct: float  # A
    sample_interval_s: float
    analysis_min: float  # T
    samples: int  # balance readings used (intervals + 1)
    points: list[WindowResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def point(self, window_min: float) -> WindowResult:
        for p in self.points:
            if p.window_min == window_min:
                return p
        raise KeyError(window_min)


def sample_times_s(run_min: float = RUN_MIN, interval_s: float = SAMPLE_INTERVAL_S) -> np.ndarray:
    """Balance reading times over the whole run: 0, S, 2S, ... up to and including the end."""
    n = round(run_min * 60 / interval_s)
    return np.arange(n + 1) * float(interval_s)


def trumpet_curve(readings_nl: Sequence[float], rate_nl_per_h: float, interval_s: float = SAMPLE_INTERVAL_S,
            windows_min: Sequence[float] = WINDOWS_MIN) -> TrumpetResult:
    """Trumpet curve and overall error from consecutive cumulative balance readings.

    readings_nl: cumulative delivered volume at the start of the analysis period and then every
    interval_s to its end (so len = intervals + 1). rate_nl_per_h: the programmed rate.
    """
    q = np.asarray(readings_nl, dtype=float)
    if q.ndim != 1 or len(q) < 2:
        raise ValueError("need at least two balance readings")
    if rate_nl_per_h <= 0:
        raise ValueError("the programmed rate must be positive")
    w = np.diff(q)  # W_i: volume per interval
    n_int = len(w)
    t_min = n_int * interval_s / 60
    per_interval = rate_nl_per_h * interval_s / 3600  # r*S
    programmed = rate_nl_per_h * n_int * interval_s / 3600
    delivered = float(q[-1] - q[0])
    res = TrumpetResult(programmed_nl=programmed, delivered_nl=delivered,
                        overall_pct=100 * (delivered - programmed) / programmed,
                        sample_interval_s=interval_s, analysis_min=t_min, samples=len(q))
    csum = np.concatenate(([0.0], np.cumsum(w)))
    for p_min in windows_min:
        k = p_min * 60 / interval_s
        if abs(k - round(k)) > 1e-9 or k < 1:
            raise ValueError(f"window {p_min} min is not a whole number of {interval_s} s intervals")
        k = round(k)
        if k > n_int:
            raise ValueError(f"window {p_min} min is longer than the analysis period ({t_min:g} min)")
        sums = csum[k:] - csum[:-k]  # every run of k consecutive intervals, sliding by one
        err = 100 * (sums - per_interval * k) / (per_interval * k)
        res.points.append(WindowResult(window_min=p_min, intervals_per_window=k, windows=len(err),
                                       max_pct=float(err.max()), min_pct=float(err.min())))
    return res


def analyse_run(volume_at, rate_nl_per_h: float, interval_s: float = SAMPLE_INTERVAL_S,
                start_min: float = ANALYSIS_START_MIN, end_min: float = ANALYSIS_END_MIN,
                windows_min: Sequence[float] = WINDOWS_MIN, t0_s: float = 0.0):
    """Read a balance every interval_s over the run and analyse [start_min, end_min].

    volume_at(times_s) -> cumulative nL at those times (e.g. Delivery.volume_at); t0_s is when the
    run started. Returns (TrumpetResult, sample times relative to t0, readings over the whole run).
    """
    t = sample_times_s(end_min, interval_s)
    readings = np.asarray(volume_at(t0_s + t), dtype=float)
    first = round(start_min * 60 / interval_s)
    return trumpet_curve(readings[first:], rate_nl_per_h, interval_s, windows_min), t, readings
