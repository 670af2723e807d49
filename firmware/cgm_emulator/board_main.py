# The CGM emulator on a dev board (ESP32 / Pico W with a `bluetooth` build): the host talks to it
# over the USB serial console (REPL UART), one command per line (docs/ble.md "CGM emulator").
# Deployed as /main.py's import: `import cgm_emulator.board_main` (hil/ble/emulator.py deploy).
import select
import sys

import bluetooth

from cgm_emulator.emulator import Emulator, LineIn


def write(s):
    sys.stdout.write(s)


def main():
    emu = Emulator(bluetooth.BLE(), bluetooth.UUID)
    lines = LineIn()
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    write("ok cgm-emulator\n")
    while True:
        for _ in poll.ipoll(100):  # radio events run as scheduled IRQs meanwhile
            ch = sys.stdin.read(1)
            if ch:
                lines.feed(ch.encode(), emu, write)


main()
