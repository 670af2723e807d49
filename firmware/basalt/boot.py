# Boot: build the pump from the board's constants and the HAL's objects, restore what storage
# holds, start the watchdog. Runs once; main.py then drops this module and the board module,
# so neither sits in the heap while the loop (main.py run) runs.
from basalt import lib as overlay
from basalt.core import Mechanics
from basalt.core.occlusion import Occlusion
from basalt.core.pump import Pump
from basalt.proto.server import ConsoleServer

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
    bt = hal.radio()  # the CGM's radio (after the recovery overlay: boot's peak), docs/cgm_client.md
    if bt is not None:  # (the core never imports bluetooth itself)
        pump.cgm = link(bt)
        overlay.call("settings", "cgm", pump)  # its pairing and alerts (and the codec is dropped)
    server.event("boot", {"version": VERSION, "board": board.NAME, "reset": hal.reset_cause()})
    hal.wdt_start(board.WDT_MS)
    return pump, server


def link(bt):
    """The CGM client's resident part (core/cgm.py), its buffers allocated once, here: before the
    validator's code (basalt/cgm/rx.py) loads to set its state up and is dropped again, so that
    nothing long-lived is left above it."""
    from array import array

    from basalt.core.cgm import DATA, INTS, SLOTS, UUIDS, CgmLink

    ble = bt.BLE()
    ble.active(True)
    c = CgmLink()
    c.ble = ble
    c.uuids = tuple(bt.UUID(u) for u in UUIDS)
    c.q = array("h", bytes(2 * INTS * SLOTS))
    c.data = bytearray(DATA * SLOTS)
    c.pair = bytearray(7)  # pair[0] = 1 and the paired sensor's 6-byte address; 0: none
    c.found = bytearray(28)  # cgm_scan: up to 4 sensors found, each its address type and address
    c.v = v = array("i", bytes(4 * 27))  # (26: sensors found by cgm_scan)
    v[4] = -1  # last: no record yet
    v[7] = 1200  # loss_s: the signal-loss alert after 20 min
    v[8] = 70  # low: the low-glucose alert at 70 mg/dL, on by default
    c.g = array("H", bytes(2 * 24))
    c.gt = array("i", bytes(4 * 24))
    c.vs = array("i", bytes(4 * 44))  # the validator's state (basalt/cgm/rx.py)
    ble.irq(c.irq)
    overlay.run("basalt.cgm.rx", "state", c.vs)
    return c
