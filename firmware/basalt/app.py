# The main loop, identical on every target. The HAL's clock decides when a tick is due (real
# time on boards, the harness's virtual time in the simulator); this loop never sleeps itself.
from . import lib as overlay


def run(hal, pump, server):
    """The loop, with the pump and console server basalt/boot.py built."""
    clock = hal.clock
    cap = pump.mech.capacity_steps
    try:
        while True:
            if clock.wait():
                server.poll()
            else:
                try:
                    pump.tick()
                except Exception as e:  # noqa: BLE001 - when in doubt, stop delivery and alarm
                    pump.fault(repr(e))
                # Health checks before the watchdog is fed: the loop came round, and the
                # bookkeeping the safety checks rely on is sane. A hung driver or loop never gets
                # here, so the watchdog resets the board into the safe boot state.
                if 0 <= pump.reservoir_steps <= cap and pump.delivery.in_flight() <= pump.mech.max_hz:
                    hal.wdt_feed()
            pump.history.sync(pump, 0)  # state changed by this tick or command: into the journal
            server.flush()
    except SystemExit as e:
        if not e.args or not e.args[0]:  # the orderly shutdown (sim: Q): mark it clean
            overlay.call("recover", "shutdown", pump)
        raise
