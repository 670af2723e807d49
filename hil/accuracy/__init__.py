"""Delivery accuracy report: IEC 60601-2-24 trumpet curves of the real firmware's basal delivery.

measure() runs the firmware in the simulator (Dut.simulated(), lockstep virtual time) at one basal
rate for two virtual hours, passes the plant's step log through the syringe model
(hil.sim.syringe_model) and analyses the second hour like the standard's balance test
(hil.accuracy.trumpet). `python -m hil.accuracy` does it for several rates and writes JSON + PNG.
"""
from __future__ import annotations

from dataclasses import dataclass

from hil.accuracy.trumpet import (
    ANALYSIS_END_MIN,
    ANALYSIS_START_MIN,
    SAMPLE_INTERVAL_S,
    WINDOWS_MIN,
    TrumpetResult,
    WindowResult,
    analyse_run,
    sample_times_s,
    trumpet_curve,
)
from hil.sim.syringe_model import Delivery, SyringeModel, SyringeParams

NL_PER_UNIT = 10_000  # U-100 insulin: 1 U = 10 uL
DEFAULT_RATES_UH = (0.1, 1.0, 5.0)
DEFAULT_MAX_BASAL_MUH = 3000  # firmware/basalt/core/limits.py; raised with limits_set for faster rates
SETTLE_MS = 1000  # one more tick so the last train of the run is on the plant's log

__all__ = [
    "ANALYSIS_END_MIN", "ANALYSIS_START_MIN", "DEFAULT_RATES_UH", "SAMPLE_INTERVAL_S", "WINDOWS_MIN",
    "Delivery", "RateReport", "SyringeModel", "SyringeParams", "TrumpetResult", "WindowResult",
    "analyse_run", "measure", "sample_times_s", "trumpet_curve",
]


@dataclass
class RateReport:
    rate_uh: float
    steps: int  # forward steps the firmware emitted over the run
    t0_ms: int  # virtual time the basal was started
    result: TrumpetResult  # through the syringe model
    ideal: TrumpetResult  # the same steps at exactly 50 nL each: the firmware's own quantisation
    sample_times_s: list[float]
    readings_nl: list[float]  # balance readings over the whole run, through the model

    def to_dict(self) -> dict:
        return {
            "rate_U_h": self.rate_uh,
            "programmed_nl_per_h": self.rate_uh * NL_PER_UNIT,
            "steps": self.steps,
            "t0_ms": self.t0_ms,
            "overall_error_pct": self.result.overall_pct,
            "trumpet": self.result.to_dict(),
            "ideal_mechanism": self.ideal.to_dict(),
            "balance": {"t_s": self.sample_times_s, "nl": self.readings_nl},
        }


def run_firmware(rate_uh: float, run_min: float = ANALYSIS_END_MIN, micropython: str | None = None):
    """Run the real firmware at one basal rate for run_min virtual minutes; return (plant, t0_ms)."""
    from hil.dut import Dut  # the simulator is only needed here, not for the analysis

    rate_muh = round(rate_uh * 1000)
    d = Dut.simulated(micropython=micropython)
    try:
        if rate_muh > DEFAULT_MAX_BASAL_MUH:
            d.request("limits_set", max_basal_mUh=rate_muh)
        d.prepare(reservoir_mu=300_000, segments=[[0, rate_muh]])
        t0 = d.sim.now_ms
        d.sim.run_until(t0 + int(run_min * 60_000) + SETTLE_MS)
        return d.sim.plant, t0
    finally:
        d.close()


def measure(rate_uh: float, params: SyringeParams | None = None, seed: int = 0,
            micropython: str | None = None, plant=None, t0_ms: int = 0) -> RateReport:
    """Trumpet curve of basal delivery at rate_uh through the syringe model.

    With plant=None the real firmware is run in the simulator; pass a recorded SyringePlant (and
    the time its basal started) to analyse an existing step log instead.
    """
    if plant is None:
        plant, t0_ms = run_firmware(rate_uh, micropython=micropython)
    rate_nl_h = rate_uh * NL_PER_UNIT
    model = SyringeModel(params, seed=seed)
    delivery = model.run_plant(plant)
    res, t, readings = analyse_run(delivery.volume_at, rate_nl_h, t0_s=t0_ms / 1000)
    ideal_delivery = SyringeModel(SyringeParams.ideal()).run_plant(plant)
    ideal, _, _ = analyse_run(ideal_delivery.volume_at, rate_nl_h, t0_s=t0_ms / 1000)
    steps = int((delivery.direction > 0).sum())
    return RateReport(rate_uh, steps, t0_ms, res, ideal, [float(x) for x in t],
                      [round(float(x), 3) for x in readings])
