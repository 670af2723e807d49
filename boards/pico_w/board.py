# Raspberry Pi Pico W pump board: the reference mechanism (boards/README.md) driven by an A4988 /
# TMC2209 step-stick from a PIO step generator. Deployed as board.py next to main.py.
NAME = "pico_w"
HAL = "basalt.hal.rp2"

# Mechanics: all insulin arithmetic in the core derives from these integers.
NL_PER_STEP = 50  # 0.05 uL per step: 40 mm^2 bore x 0.25 mm pitch / 200 steps per rev
RESERVOIR_CAPACITY_STEPS = 60000  # 3.0 mL = 300 U
MOTOR_MAX_HZ = 400  # the driver's safe step rate; bolus speed is limited below it

TICK_MS = 1000  # control period: every delivery decision is made on this tick

# Pins are GP numbers (machine.Pin ids); "LED" is the Pico W's on-board LED, which hangs off the
# CYW43 wireless chip. GP23-25 and GP29 belong to the wireless chip's SPI on the Pico W, so VSYS
# cannot be read on ADC3 while the radio runs: the battery gets its own divider on ADC2.
PINS = {
    "step": 2,  # -> driver STEP, driven by PIO side-set (the PIO counts the steps itself)
    "dir": 3,  # -> driver DIR
    "enable": 4,  # -> driver EN (active low; pulled up on the carrier so the motor boots off)
    "buzzer": 15,  # -> piezo through an NPN stage, PWM slice 7B, ~2.7 kHz
    "led": "LED",  # on-board LED
    "pressure_adc": 26,  # <- occlusion force sensor amplifier, ADC0, 0-3.3 V
    "battery_adc": 28,  # <- battery through a 100k/100k divider, ADC2
    "reservoir_switch": 5,  # <- reservoir-present switch to GND, internal pull-up
}
DIR_DELIVER_LEVEL = 1  # DIR level that advances the plunger (flip if the motor is wired reversed)
STEP_SM = 0  # PIO0 state machine 0 runs the step generator
