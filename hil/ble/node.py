"""Run a MicroPython program other than the pump firmware on the simulated board.

`MpyNode` is a `SimPump` whose process runs `entry` (a module compiled with mpy-cross, found on
`path`) instead of the firmware's main.py, with the same bus, HAL, virtual time and 64 KB heap - so
a radio test program (tests/ble/central_probe.py) or the CGM emulator firmware meets the
`bluetooth` shim and the bumble bridge exactly as the pump firmware will. The program starts the
sim HAL itself (`basalt.hal.sim.make_hal(board, sys.argv[1:])`) and may report results with bus
lines of its own kind (e.g. "@P ..."), which reach `listeners`.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from unittest import mock

import hil.sim.firmware as firmware
from hil.build import compile_one
from hil.paths import BUILD_DIR
from hil.sim.firmware import SimPump


class MpyNode(SimPump):
    def __init__(self, source: str | Path, *args: str, **kw):
        """source: the program (.py); args: extra command-line arguments for it; kw: SimPump's."""
        super().__init__(**kw)
        self.source = Path(source)
        self.args = list(args)
        self.entry = self.source.stem
        self.out_dir = BUILD_DIR / "nodes"
        self.messages: list[tuple[str, list[str]]] = []  # every bus message, in order
        self.listeners.append(lambda kind, f: self.messages.append((kind, f)))

    def start(self, *args, **kw) -> MpyNode:
        # Bytecode, like the firmware: the program's compile would cost its heap what a board
        # never pays. Kept outside the firmware tree, which hil.build prunes.
        mpy = self.out_dir / (self.entry + ".mpy")
        if not mpy.exists() or mpy.stat().st_mtime < self.source.stat().st_mtime:
            compile_one(self.source, mpy, mpy.name)
        real = subprocess.Popen
        out_dir = str(self.out_dir)

        def popen(argv, *a, **kw):  # SimPump runs `-m main` with MICROPYPATH=".": run ours instead
            argv = list(argv)
            if not any(str(a).startswith("--sim=") for a in argv) or argv[argv.index("-m") + 1] != "main":
                return real(argv, *a, **kw)  # the build's mpy-cross runs
            argv[argv.index("-m") + 1] = self.entry
            kw["env"] = dict(kw["env"], MICROPYPATH=".:" + out_dir)
            return real([*argv, *self.args], *a, **kw)

        with mock.patch.object(firmware.subprocess, "Popen", popen):
            super().start(*args, **kw)
        return self

    def reports(self, kind: str = "P") -> list[list[str]]:
        """The fields of every message of `kind` the program sent so far."""
        return [f for k, f in list(self.messages) if k == kind]
