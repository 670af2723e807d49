"""Bluetooth LE test tooling without Bluetooth hardware (docs/ble.md).

- `hil.ble.sensor`: the simulated CGMS sensor (noise model, sensor core, bumble GATT server).
- `hil.ble.bleak_bumble`: a bleak backend on bumble's in-process virtual link, so unmodified
  bleak code (host/cgm.py, `pumpctl cgm`) talks to the simulated sensor.
- `hil.ble.bridge`: `BleBridge`, the sim board's radio - the firmware's `bluetooth` shim
  (boards/sim/bluetooth.py) executed on bumble in virtual time, with injectable faults.
- `hil.ble.node`: `MpyNode`, another MicroPython program (test central, CGM emulator) on the sim board.
- `hil.ble.emulator`: the CGM emulator's host side (serial line protocol, CLI, deploy).

They import bumble (and pyserial), harness/test dependencies; import them explicitly.
"""
