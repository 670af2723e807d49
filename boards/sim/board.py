# Simulated pump board: the reference mechanism (boards/README.md) in the Unix port.
NAME = "sim"
HAL = "basalt.hal.sim"

# Mechanics: all insulin arithmetic in the core derives from these integers.
NL_PER_STEP = 50  # 0.05 uL per step: 40 mm^2 bore x 0.25 mm pitch / 200 steps per rev
RESERVOIR_CAPACITY_STEPS = 60000  # 3.0 mL = 300 U
MOTOR_MAX_HZ = 400  # the driver's safe step rate; bolus speed is limited below it

TICK_MS = 1000  # control period: every delivery decision is made on this tick

# Sensors and safety parts (docs/plant.md, docs/hazards.md)
PRESSURE_ZERO = 512  # force-sensor ADC counts at zero force (bipolar amplifier, 1/8 of range)
PRESSURE_COUNTS_PER_N = 150  # nominal gain; units differ by a few %: the firmware tares on use
BATTERY_FULL_SCALE_MV = 6600  # 12-bit ADC full scale at the cell: 3.3 V behind a 1:2 divider
ENCODER_COUNTS_PER_STEP = 1  # motor encoder (0 = none fitted: the check is skipped)
WDT_MS = 4000  # hardware watchdog timeout; the loop feeds it every healthy 1 s tick
