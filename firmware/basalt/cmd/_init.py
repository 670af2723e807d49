# The pump's constructor (core/pump.py Pump.__init__ runs it): every attribute of the pump and
# what it means. An overlay, run once at boot, so its bytecode does not stay in the heap.
from basalt.core import Delivery, Limits, Profiles, Windows
from basalt.core.history import History
from basalt.core.pump import ALARMS


def pump(p, motor, mech, emit, annunciator):
    p.mech = mech
    p.delivery = Delivery(motor, mech)
    p.emit = emit or (lambda name, data: None)  # (tests without a console; the firmware passes one)
    p.annunciator = annunciator  # LED, buzzer and vibration (HAL); core/pump.py show(), cmd/alarm.py
    p.storage = None  # the storage HAL, for the settings overlays (lib/save.py, cmd/settings.py)
    p.pending = None  # a settings change waiting to be saved (cmd.commit, proto/server.py command())
    p.limits = Limits()
    p.profiles = Profiles()
    p.win = Windows()
    p.history = History()
    p.calc = None  # bolus calculator settings (cmd/calc_cfg.py), None until set
    p.state = "suspended"
    p.reason = 0
    p.res_state = "none"
    p.uptime_s = 0
    p.clock_offset_s = 0  # local time (s since 2000-01-01) minus uptime
    p.reservoir_steps = 0
    p.plunger_steps = 0  # forward travel since the plunger was last home
    p.basal_steps = 0  # lifetime totals, in steps
    p.bolus_steps = 0
    p.prime_steps = 0
    p.extra_steps = 0  # emitted beyond any command (motor fault)
    p.prime_run = 0  # steps of the prime/fill in progress
    p.fill_target = 0
    p.bolus_id = 0
    p.nb_req = p.nb_done = 0  # normal bolus: requested / emitted steps (0 = none)
    p.nb_id = 0
    p.xb_req = p.xb_done = 0  # extended bolus
    p.xb_dur = p.xb_start = p.xb_id = 0
    p.tb_end = 0  # temp basal: end uptime (0 = none)
    p.tb_pct = -1  # percent of the profile, or -1 for an absolute rate
    p.tb_rate = 0
    p.tb_min = 0
    p.tb_steps = 0
    p.train_in_temp = False
    p.holding = False  # the limit backstop is withholding delivery
    p.cap_hour = p.cap_day = 0
    p.set_caps()
    # hardware checks (app.build hands these in; None/0 = the board lacks the part)
    p.hw = None  # the HAL: sense() -> [pressure, battery, flags, encoder], enable(on)
    p.occ = None  # core/occlusion.Occlusion
    p.enc_k = 0  # encoder counts per step
    p.enc0 = None  # encoder reading when plunger_steps was 0 (see check)
    p.enc_last = 0  # the previous encoder reading
    p.batt_mv = 0  # battery mV at ADC full scale
    p.lowv = 0  # consecutive low battery readings
    p.fwd = 0  # forward steps the last train emitted (what the force reading follows)
    p.relief = 0  # occlusion back-off: steps still allowed (0 = not relieving)
    # alarms: state per code (0 off, 1 active, 2 acknowledged), when raised, next reminder
    p.alarm_st = bytearray(len(ALARMS))
    p.alarm_t = [0] * len(ALARMS)
    p.remind = 0
    p.res_low_mu = 20000  # low-reservoir alert: below this many mU ...
    p.res_low_h = 0  # ... or, when set, below this many hours at the current rate
    p.auto_off_s = 0  # auto-off after this long without user interaction (0 = off)
    p.user_t = 0  # uptime of the last user interaction
    p.cgm = None  # core/cgm.CgmLink when the board has a radio (basalt/boot.py)
