# Reports and ends of boluses and temp basals, for the pump (core/pump.py calls these through
# its bolus_info/_bolus_end/end_temp). An overlay: they run when a bolus or temp basal reports
# progress or ends, not every tick. The pump stops the motor and accounts the steps itself
# before it calls here, and clears the therapy even if this cannot load.
from micropython import const

_TEMP_END = const(4)  # history record type (core/history.py)
_BOLUS_DONE = const(6)  # history record type (core/history.py)
_BOLUS_CANCEL = const(7)  # history record type (core/history.py)


def bolus_info(pump, kind, phase):
    m = pump.mech
    if kind == 1:
        bid, req, done = pump.nb_id, pump.nb_req, pump.nb_done
    else:
        bid, req, done = pump.xb_id, pump.xb_req, pump.xb_done
    info = {"id": bid, "kind": "normal" if kind == 1 else "extended", "phase": phase,
            "requested_mU": m.mu_from_steps(req), "delivered_mU": m.mu_from_steps(done),
            "requested_steps": req, "delivered_steps": done}
    if kind == 2:
        info["minutes"] = pump.xb_dur // 60
    return info


def bolus_end(pump, kind, phase):
    info = bolus_info(pump, kind, phase)
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
