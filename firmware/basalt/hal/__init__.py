# The hardware abstraction layer: everything the core is *handed*. The core never imports
# machine, bluetooth, time, socket or select; a HAL module (sim, esp32, rp2) builds these
# objects and firmware/main.py passes them in. This file documents the contracts; the
# implementations do not subclass anything (duck typing keeps the boards' RAM small).
#
# Hal (one object, attributes below), built by <hal module>.make_hal(board, argv)
#
# clock
#   now_ms() -> int         ms since boot; wraps on boards (only for logs and plant stamps)
#   wait() -> bool          block until the next control tick is due (False) or console input
#                           is ready (True). The tick period is board.TICK_MS. The core never
#                           sleeps: waiting is the HAL's job, so the simulator can own time.
#
# motor (a step generator with a hardware counter, like RP2040 PIO or ESP32 RMT + PCNT)
#   start(n, hz, direction)  begin emitting n steps at hz; direction +1 = deliver, -1 = retract
#   count() -> int           steps actually emitted by the current/last train
#   busy() -> bool           a train is still running
#   stop() -> int            stop at once; return steps actually emitted by that train
#
# console (byte stream: USB-CDC/UART on boards, TCP socket or pty in the simulator)
#   readinto(buf) -> int     non-blocking; 0 when nothing waits
#   write(buf) -> int        non-blocking; bytes accepted (may be fewer than offered)
#
# storage (a flat namespace of small files: littlefs on boards, a directory in the simulator)
#   read(name) -> bytes|None
#   write_atomic(name, data) write a new file, verify it, rename over the old one
#
# annunciator
#   buzzer(pattern)          pattern name: "off", "chirp", "alert", "alarm"
#   led(pattern)             "off", "ok", "warn", "alarm"
#
# health() -> dict           optional figures for status (e.g. heap) - may be empty
