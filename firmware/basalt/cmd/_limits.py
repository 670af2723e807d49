# Settable range of each limit: name -> (lowest, hard ceiling). Defaults are in core/limits.py.
SPEC = {
    "max_bolus_mU": (100, 30000),  # 30 U ceiling (commercial range 0.1-30 U)
    "max_basal_mUh": (50, 30000),  # 30 U/h ceiling (Omnipod 5's maximum setting)
    "max_hour_mU": (500, 60000),
    "max_day_mU": (5000, 300000),
    "max_iob_mU": (0, 60000),
    "bolus_speed_mU_min": (500, 15000),
    "bolus_increment_mU": (5, 100),
}

