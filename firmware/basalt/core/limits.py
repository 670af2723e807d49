# Therapy limits, enforced in the firmware. Defaults here; the settable ranges and their
# validation live with the commands (basalt/cmd/_limits.py and limits.py, overlays).


class Limits:
    def __init__(self):
        self.max_bolus_mU = 10000  # 10 U (commercial 0.1-30 U)
        self.max_basal_mUh = 3000  # 3 U/h, Omnipod 5's default
        self.max_hour_mU = 15000  # any 60 minutes: a max bolus plus most of an hour's max basal
        self.max_day_mU = 120000  # any 24 hours: well above a typical 40-60 U daily dose
        self.max_iob_mU = 15000  # the calculator never suggests past this insulin on board
        self.bolus_speed_mU_min = 1500  # 1.5 U/min, Medtronic's standard speed
        self.bolus_increment_mU = 10  # 0.01 U (commercial 0.01-0.1 U)

    def to_dict(self):
        return {"max_bolus_mU": self.max_bolus_mU, "max_basal_mUh": self.max_basal_mUh,
                "max_hour_mU": self.max_hour_mU, "max_day_mU": self.max_day_mU, "max_iob_mU": self.max_iob_mU,
                "bolus_speed_mU_min": self.bolus_speed_mU_min, "bolus_increment_mU": self.bolus_increment_mU}
