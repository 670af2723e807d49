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
from host.units import flat


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

    @property
    def lockstep(self) -> bool:
        return self.sim is not None and self.sim.mode == "lockstep"

    def wait(self, ms: int) -> None:
        if self.lockstep:
            self.sim.advance(ms)
        else:
            time.sleep(ms / 1000)

    def now_ms(self) -> int:
        return self.sim.now_ms if self.lockstep else int(time.monotonic() * 1000)

    def wait_for(self, pred, timeout_ms: int = 600_000, step_ms: int = 1000) -> dict:
        """Advance time a tick at a time until pred(status) holds; return that status."""
        waited = 0
        while True:
            st = self.request("status")
            if pred(st):
                return st
            if waited >= timeout_ms:
                raise TimeoutError(f"pump did not reach the expected state; last status {st}")
            self.wait(step_ms)
            waited += step_ms

    def change_reservoir(self, reservoir_mu: int = 300_000, prime_ms: int = 0, cannula_mu: int = 0) -> None:
        """The reservoir workflow: suspend, rewind, insert, prime (for prime_ms), fill the cannula."""
        if self.request("status")["state"] != "suspended":
            self.request("suspend")
        self.request("rewind")
        self.wait_for(lambda st: st["reservoir_state"] == "rewound")
        self.request("reservoir_insert", mU=reservoir_mu)
        self.request("prime_start")
        if prime_ms:
            self.wait(prime_ms)
        self.request("prime_stop")
        self.request("cannula_fill", mU=cannula_mu)
        self.wait_for(lambda st: st["reservoir_state"] == "ready")

    def prepare(self, reservoir_mu: int = 300_000, segments: list | None = None,
                limits: dict | None = None) -> int:
        """A known therapy state: reservoir changed (no priming, so the plant log holds therapy
        only), schedule (flat, or [[start, rate], ...]) and limits set, running. Returns the time
        delivery started (ms)."""
        self.change_reservoir(reservoir_mu)
        if limits:
            self.request("limits_set", **limits)
        self.request("basal_set", segments=flat(segments or [[0, 1000]]))
        self.request("resume")
        return self.now_ms()

    def close(self) -> None:
        self.client.close()
        if self.sim is not None:
            self.sim.close()
