"""Bluetooth LE test tooling without Bluetooth hardware (docs/ble.md).

- `hil.ble.sensor`: the simulated CGMS sensor (noise model, sensor core, bumble GATT server).
- `hil.ble.bleak_bumble`: a bleak backend on bumble's in-process virtual link, so unmodified
  bleak code (host/cgm.py, `pumpctl cgm`) talks to the simulated sensor.

Both import bumble, which is a test/harness dependency; import them explicitly.
"""
