# The CGM emulator in the MicroPython Unix port, on the simulated board: the radio is the
# `bluetooth` shim (boards/sim/bluetooth.py, bridged to bumble by hil/ble/bridge.py) and the
# "serial line" is the sim HAL's console (socket://, the same pyserial URL a board's port would
# be). Run by hil.ble.node.MpyNode; virtual time is the harness's, like the pump's.
import sys

import board
from basalt.hal.sim import make_hal

hal = make_hal(board, sys.argv[1:])
import bluetooth  # noqa: E402

from cgm_emulator.emulator import Emulator, LineIn  # noqa: E402 (the HAL first: the shim needs it)

emu = Emulator(bluetooth.BLE(), bluetooth.UUID)
lines = LineIn()
buf = bytearray(64)


def write(s):
    hal.write(memoryview(s.encode()))


while True:
    if hal.wait():  # paused (or between ticks): serve the host
        n = hal.readinto(buf)
        if n:
            lines.feed(buf[:n], emu, write)
