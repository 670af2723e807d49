# Boot: build the pump from the board's constants and the HAL's objects, restore what storage
# holds, start the watchdog. Runs once; main.py then drops this module and the board module,
# so neither sits in the heap while the loop (main.py run) runs.
from . import lib as overlay
from .core import Mechanics
from .core.occlusion import Occlusion
from .core.pump import Pump
from .proto.server import ConsoleServer

VERSION = "0.3.0"


def build(hal, board):
    mech = Mechanics(board.NL_PER_STEP, board.RESERVOIR_CAPACITY_STEPS, board.MOTOR_MAX_HZ)
    server = ConsoleServer(hal.console, VERSION + "/" + board.NAME)
    pump = Pump(hal.motor, mech, server.event, hal.annunciator)
    pump.storage = hal.storage
    server.pump = pump
    # The hardware checks (docs/hazards.md): each needs its part on the board.
    pump.hw = hal
    pump.occ = Occlusion(board.PRESSURE_ZERO, board.PRESSURE_COUNTS_PER_N)
    pump.enc_k = board.ENCODER_COUNTS_PER_STEP
    pump.batt_mv = board.BATTERY_FULL_SCALE_MV
    hal.enable(True)
    # Settings, the history's integrity, the therapy state and its alarms, the unexpected-restart
    # alarm (reset cause from the HAL): docs/persistence.md.
    overlay.call("recover", "boot", pump, hal, overlay.call("settings", "load", pump))
    server.event("boot", {"version": VERSION, "board": board.NAME, "reset": hal.reset_cause()})
    hal.wdt_start(board.WDT_MS)
    return pump, server
