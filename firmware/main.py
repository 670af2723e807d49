# Entry point on every target. `board.py` (deployed beside this file, or found on the path in
# the simulator) names the HAL module; the HAL builds the hardware objects; app.run loops.
import board


def main(argv=()):
    hal_mod = __import__(board.HAL, None, None, ("make_hal",))
    hal = hal_mod.make_hal(board, argv)
    from basalt.app import run

    run(hal, board)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
