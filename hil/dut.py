"""A device under test: one pump reached over its console, simulated or real.

Tests and scenarios talk to a Dut the same way whichever pump is behind it (the idea of
pytest-embedded's DUT fixture): `dut.client` is a host.client.PumpClient; `dut.sim` is the
SimPump (plant, virtual time) or None for a real board on a serial URL. `wait(ms)` moves time on:
instantly in lockstep, on the wall clock on a board.
"""
from __future__ import annotations

import time

from hil.sim.firmware import SimPump
from host.client import PumpClient


class Dut:
    def __init__(self, client: PumpClient, sim: SimPump | None = None):
        self.client = client
        self.sim = sim

    @classmethod
    def simulated(cls, **sim_kw) -> Dut:
        sim = SimPump(**sim_kw).start()
        return cls(PumpClient(sim.console_url), sim)

    @classmethod
    def board(cls, url: str) -> Dut:
        return cls(PumpClient(url, timeout=3.0))

    @property
    def is_sim(self) -> bool:
        return self.sim is not None

    def request(self, cmd: str, **args) -> dict:
        return self.client.request(cmd, **args)

    def wait(self, ms: int) -> None:
        if self.sim is not None:
            self.sim.advance(ms)
        else:
            time.sleep(ms / 1000)

    def now_ms(self) -> int:
        return self.sim.now_ms if self.sim is not None else int(time.monotonic() * 1000)

    def prepare(self, reservoir_mu: int = 300_000, segments: list[list[int]] | None = None) -> None:
        """Bring the pump to a known therapy state: suspended, reservoir loaded, schedule set, running."""
        if self.request("status")["state"] != "suspended":
            self.request("suspend")
        self.request("reservoir_load", mU=reservoir_mu)
        self.request("basal_set", segments=segments or [[0, 1000]])
        self.request("resume")

    def close(self) -> None:
        self.client.close()
        if self.sim is not None:
            self.sim.close()
