# Simulated pump board: the reference mechanism (boards/README.md) in the Unix port.
NAME = "sim"
HAL = "basalt.hal.sim"

# Mechanics: all insulin arithmetic in the core derives from these integers.
NL_PER_STEP = 50  # 0.05 uL per step: 40 mm^2 bore x 0.25 mm pitch / 200 steps per rev
RESERVOIR_CAPACITY_STEPS = 60000  # 3.0 mL = 300 U
MOTOR_MAX_HZ = 400  # the driver's safe step rate; bolus speed is limited below it

TICK_MS = 1000  # control period: every delivery decision is made on this tick
