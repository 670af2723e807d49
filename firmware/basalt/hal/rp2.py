# The RP2040 HAL (Raspberry Pi Pico W). Console, clock, storage and annunciator come from
# board_common; this module adds the step generator: one PIO state machine that emits exactly
# N step pulses and keeps the count of those still owed in its X register.
#
# Rate: every step takes exactly _CYCLES_PER_STEP state-machine cycles, so the SM clock divider
# sets the step rate: freq = hz * _CYCLES_PER_STEP (2 kHz .. 125 MHz: 1 .. 62 500 steps/s).
#
# Counting: the instruction that raises STEP (side-set) is the one that decrements X, in the same
# cycle, so "steps emitted" == n - X at every instruction boundary. When X reaches 0 the program
# pushes one word to the RX FIFO (the done flag) and parks. To read X, the CPU halts the SM and
# executes `mov(isr, x)` + `push(noblock)` on it (sm.exec), then takes the word with sm.get().
# Side-set is optional in this program (not every instruction has .side()), so the executed
# instructions leave the STEP pin alone; stop() drives it low explicitly with a side-set nop.
import rp2
from machine import Pin
from micropython import const

from basalt.hal.board_common import make_board_hal

_CYCLES_PER_STEP = const(2000)  # SM cycles per step; >= 1908 lets hz = 1 fit the 16-bit divider
_LOOP_OVERHEAD = const(20)  # cycles of one step outside the delay loop (see the program)
_LOW_LOOPS = const(_CYCLES_PER_STEP - _LOOP_OVERHEAD)  # Y reload: delay-loop passes per step
_MAX_HZ = const(62500)  # 125 MHz / _CYCLES_PER_STEP
_STATE_MACHINE = const(0)  # PIO0 SM0 unless the board says otherwise (cyw43 claims its own)
_ANNUNCIATOR_TIMER = const(-1)  # a virtual (software) timer

# Hand-encoded instructions for sm.exec (RP2040 datasheet, PIO instruction encoding); none sets
# a side-set enable bit except _NOP_SIDE0, so none of the others touches the STEP pin.
_PULL_BLOCK = const(0x80A0)  # pull(block)
_PUSH_NOBLOCK = const(0x8000)  # push(noblock)
_MOV_X_OSR = const(0xA027)  # mov(x, osr)
_MOV_ISR_X = const(0xA0C1)  # mov(isr, x)
_NOP_SIDE0 = const(0xB042)  # nop().side(0): mov(y, y) with side-set enable (bit 12) and value 0

TYPE_CHECKING = False
if TYPE_CHECKING:  # the PIO assembler's names, for the type checker only (asm_pio injects them)
    from rp2.asm_pio import block, jmp, label, mov, nop, not_x, osr, push, x_dec, y, y_dec


@rp2.asm_pio(sideset_init=rp2.PIO.OUT_LOW)
def _step_train():
    # Entry at offset 0 with X = steps to emit, OSR = _LOW_LOOPS (the CPU loads both, see start).
    # One step: 1 + 8 + 8 + 1 + (Y + 1) + 1 = 20 + Y cycles; STEP high for 16 of them.
    label("next")
    jmp(not_x, "done")
    jmp(x_dec, "high").side(1)[7]  # STEP rises and X counts this step in the same cycle
    label("high")
    nop()[7]
    mov(y, osr).side(0)  # STEP falls
    label("wait")
    jmp(y_dec, "wait")
    jmp("next")
    label("done")
    push(block)  # done flag: one word in the RX FIFO
    label("park")
    jmp("park")


class Motor:
    def __init__(self, pins, dir_deliver_level=1, sm_id=_STATE_MACHINE):
        self.step = Pin(pins["step"], Pin.OUT, value=0)
        self.dir = Pin(pins["dir"], Pin.OUT, value=0)
        self.en = Pin(pins["enable"], Pin.OUT, value=1)  # EN is active low: start disabled
        self.deliver_level = dir_deliver_level
        self.sm = rp2.StateMachine(sm_id)
        self.hz = 0  # rate the SM divider is set for
        self.n = 0
        self.final = 0  # steps of the last train once it is over; -1 while one runs

    def _done(self):
        """The train ran out by itself: take the done flag, release the driver."""
        self.sm.get()
        self.sm.active(0)
        self.final = self.n
        self.en.value(1)

    def _remaining(self):
        """X, read from a halted SM. Call with the SM inactive."""
        sm = self.sm
        sm.exec(_MOV_ISR_X)
        sm.exec(_PUSH_NOBLOCK)
        return sm.get()

    def start(self, n, hz, direction):
        if self.final < 0:
            self.stop()
        if n <= 0 or hz <= 0 or hz > _MAX_HZ:
            raise ValueError("step train out of range")
        sm = self.sm
        if hz != self.hz:
            # (Re)configure: the program is loaded once and its offset reused; this sets the divider.
            sm.init(_step_train, freq=hz * _CYCLES_PER_STEP, sideset_base=self.step)
            self.hz = hz
        sm.active(0)
        sm.restart()  # PC back to offset 0, delay and shift counters cleared
        while sm.rx_fifo():
            sm.get()
        sm.put(n)
        sm.exec(_PULL_BLOCK)
        sm.exec(_MOV_X_OSR)
        sm.put(_LOW_LOOPS)
        sm.exec(_PULL_BLOCK)
        self.dir.value(self.deliver_level if direction > 0 else 1 - self.deliver_level)
        self.en.value(0)
        self.n = n
        self.final = -1
        sm.active(1)

    def count(self):
        if self.final >= 0:
            return self.final
        sm = self.sm
        if sm.rx_fifo():
            self._done()
            return self.final
        # Live read: halt for a few instructions, read X, resume where it stopped. X was already
        # decremented by the step in progress, so a pause mid-pulse does not skew the figure.
        sm.active(0)
        left = self._remaining()
        sm.active(1)
        return self.n - left

    def busy(self):
        if self.final >= 0:
            return False
        if self.sm.rx_fifo():
            self._done()
            return False
        return True

    def stop(self):
        if self.final < 0:
            sm = self.sm
            sm.active(0)
            if sm.rx_fifo():
                self._done()
            else:
                sm.restart()  # clear a pending delay so the executed instructions run at once
                self.final = self.n - self._remaining()
                sm.exec(_NOP_SIDE0)  # a train cut mid-pulse leaves STEP high: the next must rise
                self.en.value(1)
        return self.final


def make_hal(board, argv):
    motor = Motor(board.PINS, getattr(board, "DIR_DELIVER_LEVEL", 1), getattr(board, "STEP_SM", _STATE_MACHINE))
    return make_board_hal(board, motor, _ANNUNCIATOR_TIMER)
