# The status report.
from basalt.cmd import only
from basalt.core import pump as P


def status(pump, args):
    only(args)
    m = pump.mech
    p = pump.profiles
    st = {"state": pump.state, "reason": P.REASONS[pump.reason] if pump.state == "suspended" else "",
          "reservoir_state": pump.res_state, "uptime_s": pump.uptime_s, "local_s": pump.local_s(),
          "minute_of_day": pump.minute_of_day(), "profile": p.names[p.active], "basal_mUh": pump.basal_rate(),
          "basal_delivered_mU": m.mu_from_steps(pump.basal_steps),
          "bolus_delivered_mU": m.mu_from_steps(pump.bolus_steps),
          "prime_mU": m.mu_from_steps(pump.prime_steps),
          "delivered_steps": pump.basal_steps + pump.bolus_steps + pump.extra_steps,
          "prime_steps": pump.prime_steps, "plunger_steps": pump.plunger_steps,
          "reservoir_mU": m.mu_from_steps(pump.reservoir_steps), "reservoir_steps": pump.reservoir_steps,
          "last_hour_mU": m.mu_from_steps(pump.win.hour_sum), "last_day_mU": m.mu_from_steps(pump.win.day_sum),
          "bolus": pump.bolus_info(1, "running") if pump.nb_req else None,
          "extended": pump.bolus_info(2, "running") if pump.xb_req else None,
          "temp_basal": None, "limit_hold": pump.holding, "history_seq": pump.history.seq,
          "alarms": [P.ALARMS[c] for c in range(1, len(P.ALARMS)) if pump.alarm_st[c]]}
    if pump.tb_end:
        st["temp_basal"] = {"percent": pump.tb_pct, "rate_mUh": pump.tb_rate, "minutes": pump.tb_min,
                            "remaining_s": pump.tb_end - pump.uptime_s,
                            "delivered_mU": m.mu_from_steps(pump.tb_steps)}
    return st
