# Entry point on every target. `board.py` (deployed beside this file, or found on the path in
# the simulator) names the HAL module; the HAL builds the hardware objects; basalt/boot.py
# builds the pump; basalt/app.py loops.
import board


def main(argv=()):
    hal = __import__(board.HAL, None, None, ("make_hal",)).make_hal(board, argv)
    from basalt.boot import build

    pump, server = build(hal, board)
    from basalt.app import run

    run(hal, pump, server)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
