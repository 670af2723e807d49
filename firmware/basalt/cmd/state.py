# Suspend and resume: the pump's therapy state. A module apart from the reservoir workflow
# (reservoir.py) so that the commands used most load the least code.
from micropython import const

from basalt.cmd import only
from basalt.core import Refused
from basalt.core import pump as P

_RESUME = const(12)  # history record type (core/history.py)


def suspend(pump, args):
    only(args)
    if pump.state == "suspended":
        raise Refused("state", "already suspended (%s)" % P.REASONS[pump.reason])
    return pump.stop_delivery(1)


def resume(pump, args):
    only(args)
    if pump.state == "running":
        raise Refused("state", "already running")
    if pump.res_state != "ready":
        raise Refused("reservoir", "finish the reservoir change first (now: %s)" % pump.res_state)
    if pump.reservoir_steps == 0:
        raise Refused("reservoir", "the reservoir is empty; change it")
    for c in range(1, len(P.ALARMS)):  # the user must have seen why delivery stopped
        if pump.alarm_st[c] == 1 and P.PRIO[c] == 3:
            raise Refused("alarm", "acknowledge the %s alarm first" % P.ALARMS[c])
    if pump.alarm_st[8]:
        raise Refused("battery", "the battery is depleted; replace it")
    if pump.hw is not None:  # after a motor fault or an occlusion: start the checks afresh
        pump.hw.enable(True)
        pump.enc0 = None
        if pump.occ is not None:
            pump.occ.reset()
    pump.state = "running"
    pump.reason = 0
    pump.record(_RESUME)
    pump.emit("state", {"state": "running", "reason": "user"})
    pump.show("ok", "chirp")
    return {"state": "running"}
