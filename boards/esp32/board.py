# ESP32 DevKitC (ESP32-WROOM-32) pump board: the reference mechanism (boards/README.md) driven by
# an A4988 / TMC2209 step-stick. Deployed as board.py next to main.py; `import board` finds it.
NAME = "esp32"
HAL = "basalt.hal.esp32"

# Mechanics: all insulin arithmetic in the core derives from these integers.
NL_PER_STEP = 50  # 0.05 uL per step: 40 mm^2 bore x 0.25 mm pitch / 200 steps per rev
RESERVOIR_CAPACITY_STEPS = 60000  # 3.0 mL = 300 U
MOTOR_MAX_HZ = 400  # the driver's safe step rate; bolus speed is limited below it

TICK_MS = 1000  # control period: every delivery decision is made on this tick

# Pins are GPIO numbers. Avoided: strapping pins (0, 2, 5, 12, 15), the flash pins (6-11) and
# UART0 (1, 3: the console, through the board's USB-UART bridge). The ADCs are on ADC1 (32-39),
# because ADC2 cannot be read while the radio (BLE) is on; 34-39 are input-only, no pull-ups.
PINS = {
    "step": 25,  # -> driver STEP, emitted by RMT
    "step_sense": 26,  # <- jumper from the driver's STEP input; PCNT counts its rising edges
    "dir": 27,  # -> driver DIR
    "enable": 13,  # -> driver EN (active low; pulled up on the carrier so the motor boots off)
    "buzzer": 23,  # -> piezo through an NPN stage, PWM ~2.7 kHz
    "led": 22,  # -> status LED + 330 R (the DevKitC has only a power LED)
    "pressure_adc": 34,  # <- occlusion force sensor amplifier, ADC1_CH6, 0-3.3 V
    "battery_adc": 35,  # <- battery through a 100k/100k divider, ADC1_CH7
    "reservoir_switch": 32,  # <- reservoir-present switch to GND, internal pull-up
}
DIR_DELIVER_LEVEL = 1  # DIR level that advances the plunger (flip if the motor is wired reversed)
