# Bluetooth CGM Service codec (sfloat, cgms) and reading validity rules (validity).
# Import the submodules directly: basalt.cgm.cgms, basalt.cgm.sfloat, basalt.cgm.validity.
