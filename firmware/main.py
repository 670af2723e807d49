# Entry point and main loop, identical on every target. `board.py` (deployed beside this file,
# or found on the path in the simulator) names the HAL module; the HAL builds the hardware
# objects; basalt/boot.py builds the pump; run() below loops. The loop lives here rather than
# in a module of its own: every module costs heap (docs/memory.md).
import board
from basalt import lib as overlay


def run(hal, pump, server):
    """The loop. The HAL's clock decides when a tick is due (real time on boards, the harness's
    virtual time in the simulator); this loop never sleeps itself."""
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


def main(argv=()):
    global board
    import gc
    import sys

    hal = __import__(board.HAL, None, None, ("make_hal",)).make_hal(board, argv)
    from basalt.boot import build

    pump, server = build(hal, board)
    # Boot is done with its code and the board's constants (build copied what the pump needs):
    # dropping both gives the loop ~0.7 KB more heap.
    build = board = None
    del sys.modules["basalt.boot"]
    del sys.modules["board"]
    delattr(sys.modules["basalt"], "boot")
    gc.collect()
    run(hal, pump, server)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
