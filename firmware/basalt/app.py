# The main loop, identical on every target. The HAL's clock decides when a tick is due (real
# time on boards, the harness's virtual time in the simulator); this loop never sleeps itself.
from .core.mechanics import Mechanics
from .core.pump import Pump
from .lib import overlay
from .proto.server import ConsoleServer

VERSION = "0.2.0"


def build(hal, board):
    mech = Mechanics(board.NL_PER_STEP, board.RESERVOIR_CAPACITY_STEPS, board.MOTOR_MAX_HZ)
    server = ConsoleServer(hal.console, VERSION + "/" + board.NAME)
    pump = Pump(hal.motor, mech, server.event, hal.annunciator)
    pump.storage = hal.storage
    server.pump = pump
    if not overlay.call("settings", "load", pump):
        pump.alarm("settings_lost")
    return pump, server


def run(hal, board):
    pump, server = build(hal, board)
    clock = hal.clock
    server.event("boot", {"version": VERSION, "board": board.NAME})
    while True:
        if clock.wait():
            server.poll()
        else:
            try:
                pump.tick()
            except Exception as e:  # noqa: BLE001 - when in doubt, stop delivery and alarm
                pump.fault(repr(e))
        server.flush()
