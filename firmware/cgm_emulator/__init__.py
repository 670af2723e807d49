# CGM emulator firmware (a CGMS sensor for rigs and the simulator): see emulator.py and
# docs/ble.md "CGM emulator". Not part of the pump firmware.
