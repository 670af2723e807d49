# Reports and ends of boluses and temp basals, for the pump (core/pump.py calls these through
# its bolus_end/end_temp), and the bolus_cancel command. An overlay: they run when a
# bolus or temp basal reports progress or ends, not every tick. The pump stops the motor and
# accounts the steps itself before it calls here, and clears the therapy even if this cannot load.
from micropython import const

from basalt.cmd import only, opt
from basalt.core import Refused

_TEMP_END = const(4)  # history record type (core/history.py)
_BOLUS_DONE = const(6)  # history record type (core/history.py)
_BOLUS_CANCEL = const(7)  # history record type (core/history.py)


def bolus_end(pump, kind, phase):
    info = pump.bolus_info(kind, phase)
    if phase == "complete":
        pump.record(_BOLUS_DONE, info["delivered_steps"], kind)
    else:
        req = info["requested_steps"]
        pump.record(_BOLUS_CANCEL, info["delivered_steps"], req if kind == 1 else -req)
    pump.emit("bolus", info)
    if kind == 1:
        pump.nb_req = pump.nb_done = 0
        pump.delivery.normal_acc = 0
    else:
        pump.xb_req = pump.xb_done = 0
        pump.delivery.ext_acc = 0
    return info


def temp_end(pump, how):
    info = {"phase": "ended" if how == 1 else "cancelled", "percent": pump.tb_pct, "rate_mUh": pump.tb_rate,
            "minutes": pump.tb_min, "delivered_mU": pump.mech.mu_from_steps(pump.tb_steps),
            "delivered_steps": pump.tb_steps}
    pump.record(_TEMP_END, pump.tb_steps, how)
    pump.tb_end = 0
    pump.tb_pct = -1
    pump.emit("temp_basal", info)
    return info


def bolus_cancel(pump, args):
    """{kind: normal | extended | all (default)}. Stops the motor mid-train and reports what its
    counter says was emitted. Reply: the cancelled normal bolus's report (or the extended one's
    when only that ran), with "extended" holding the extended report when both were cancelled."""
    only(args, "kind")
    kind = opt(args, "kind", "all")
    if kind not in ("normal", "extended", "all"):
        raise Refused("bad_arg", "kind is normal, extended or all")
    normal = cancel(pump, 1) if kind in ("normal", "all") and pump.nb_req else None
    extended = cancel(pump, 2) if kind in ("extended", "all") and pump.xb_req else None
    if normal is None and extended is None:
        raise Refused("state", "no bolus is running" if kind == "all" else "no %s bolus is running" % kind)
    if normal is None:
        return extended
    if extended is not None:
        normal["extended"] = extended
    return normal


def cancel(pump, kind):
    """Stop the motor mid-train, account what its counter says, end the bolus. None if no
    such bolus is running (it may have completed in that very train)."""
    pump.settle(True)
    if (pump.nb_req if kind == 1 else pump.xb_req) == 0:
        return None
    return bolus_end(pump, kind, "cancelled")
