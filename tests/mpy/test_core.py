# Unit tests of the firmware core, run under the real MicroPython Unix port.
from hw_doubles import CountingMotor, DictStorage
from mpyunit import raises

from basalt.core.basal import BasalSchedule
from basalt.core.errors import Refused
from basalt.core.mechanics import Mechanics
from basalt.core.pump import RUNNING, SUSPENDED, Pump


def mech():
    return Mechanics(50, 60000, 400)


def make(segments=None, reservoir_mu=300000, limits=None):
    m = CountingMotor()
    events = []
    p = Pump(m, DictStorage(), mech(), lambda n, d: events.append((n, d)))
    if limits:
        p.limits_set(limits)
    p.basal_set(segments or [[0, 1000]])
    p.reservoir_load(reservoir_mu)
    p.resume()
    return p, m, events


def run(p, seconds):
    for _ in range(seconds):
        p.tick()


# ---- mechanics -----------------------------------------------------------------------------
def test_mechanics_converts_exactly():
    m = mech()
    assert m.uu_per_step == 5000
    assert m.steps_from_mu(2500) == 500
    assert m.mu_from_steps(4800) == 24000
    e = raises(Refused, m.steps_from_mu, 2502)
    assert e.code == "range"


def test_mechanics_fractional_step_sizes_stay_exact():
    m = Mechanics(33, 1000, 400)  # 3.3 mU per step
    assert m.steps_from_mu(33) == 10
    assert m.mu_from_steps(10) == 33
    assert raises(Refused, m.steps_from_mu, 10).code == "range"


# ---- basal schedule ------------------------------------------------------------------------
def test_schedule_rate_lookup():
    s = BasalSchedule.parse([[0, 800], [390, 1250], [1380, 500]], 3000)
    assert s.rate_at(0) == 800
    assert s.rate_at(389) == 800
    assert s.rate_at(390) == 1250
    assert s.rate_at(1439) == 500


def test_schedule_refuses_malformed():
    bad = [
        None, [], [[30, 100]], [[0, 100], [0, 200]], [[0, 100], [45, 200]], [[0, 4000]],
        [[0, -1]], [[0, True]], [[0, 1.5]], [[0]], [[0, 1, 2]], ["0=1"], [[0, 100], [1440, 100]],
        [[i * 30, 100] for i in range(49)],
    ]
    for seg in bad:
        raises(Refused, BasalSchedule.parse, seg, 3000)


# ---- delivery ------------------------------------------------------------------------------
def test_basal_hour_is_exact_and_even():
    p, m, _ = make([[0, 1000]])
    run(p, 3600)
    p.tick()  # settle the last train
    assert m.total() == 200  # 1 U = 200 steps
    assert p.basal_steps == 200
    # one step every 18 s: 200 single-step trains, no lumps
    assert m.n_trains == 200 and m.max_n == 1


def test_basal_remainders_carry_at_awkward_rates():
    for rate in (1, 7, 333, 1001, 2999):
        p, m, _ = make([[0, rate]])
        run(p, 7200)
        p.tick()
        owed_uu = rate * 1000 * 7200 // 3600  # uU owed over 2 h
        assert m.total() == owed_uu // 5000, rate


def test_schedule_switch_neither_loses_nor_doubles():
    p, m, _ = make([[0, 1000]])
    run(p, 9)  # half-way to the first step (18 s)
    p.basal_set([[0, 1000]])
    run(p, 9)
    p.tick()
    assert m.total() == 1


def test_bolus_runs_at_speed_beside_basal():
    p, m, ev = make([[0, 1000]])
    p.bolus(2500)
    run(p, 100)
    assert p.bolus_req == 500 and p.bolus_done == 495  # 5 steps/s; the last train settles next tick
    p.tick()
    assert p.bolus_req == 0
    assert ("bolus", "complete") in [(n, d["phase"]) for n, d in ev if n == "bolus"]
    assert p.bolus_steps == 500
    assert p.basal_steps == 5  # 101 s of 1 U/h


def test_bolus_limits_and_refusals_change_nothing():
    p, m, _ = make()
    before = (p.bolus_req, p.reservoir_steps, m.n_trains)
    for amount, code in ((10010, "limit"), (2505, "range"), (0, "range"), (-5, "range"),
                         (True, "bad_arg"), ("1", "bad_arg"), (2.5, "bad_arg")):
        e = raises(Refused, p.bolus, amount)
        assert e.code == code, (amount, e.code)
    assert (p.bolus_req, p.reservoir_steps, m.n_trains) == before
    e = raises(Refused, p.bolus, 10010)
    assert "max_bolus" in e.msg


def test_second_bolus_refused():
    p, _, _ = make()
    p.bolus(1000)
    assert raises(Refused, p.bolus, 1000).code == "busy"


def test_cancel_reports_exactly_what_the_motor_emitted():
    p, m, _ = make([[0, 0]])
    p.bolus(2500)
    run(p, 10)  # 9 trains settled (45 steps), the 10th (5 steps) in flight
    m.cut(3)  # the motor got 3 steps of it out before the stop
    info = p.bolus_cancel()
    assert info["delivered_steps"] == 48 == m.total()
    assert info["delivered_mU"] == 240
    assert p.bolus_req == 0


def test_cut_train_keeps_basal_owed():
    p, m, _ = make([[0, 20000]], limits={"max_basal_mUh": 20000})  # 20 U/h: 4000 steps/h, ~1.1 per second
    p.bolus(1000)
    run(p, 5)
    m.cut(0)
    p.bolus_cancel()
    run(p, 3600)
    p.tick()
    owed = 20000 * 1000 * 3605 // 3600 // 5000  # 3605 ticks accrued and settled; the 3606th is in flight
    assert p.basal_steps == owed, (p.basal_steps, owed)


def test_suspend_stops_at_once_and_cancels_bolus():
    p, m, _ = make()
    p.bolus(2000)
    run(p, 3)
    r = p.suspend()
    assert r["bolus_cancelled"]["delivered_steps"] == p.bolus_steps
    n = m.n_trains
    run(p, 3600)
    assert m.n_trains == n and p.state == SUSPENDED
    assert raises(Refused, p.suspend).code == "state"
    assert raises(Refused, p.bolus, 1000).code == "state"


def test_reservoir_is_exact_and_empty_stops_with_alarm():
    p, m, ev = make([[0, 3000]], reservoir_mu=100)  # 20 steps
    run(p, 3600)
    assert m.total() == 20
    assert p.reservoir_steps == 0
    assert p.state == SUSPENDED and p.suspend_reason == "reservoir_empty"
    assert ("alarm", "reservoir_empty") in [(n, d.get("alarm")) for n, d in ev]
    assert raises(Refused, p.resume).code == "reservoir"


def test_bolus_that_does_not_fit_is_refused():
    p, _, _ = make(reservoir_mu=2000)
    assert raises(Refused, p.bolus, 2500).code == "reservoir"


def test_reservoir_load_only_when_suspended():
    p, _, _ = make()
    assert raises(Refused, p.reservoir_load, 1000).code == "state"
    p.suspend()
    assert raises(Refused, p.reservoir_load, 300005).code == "range"


def test_limits_all_or_nothing():
    p, _, _ = make([[0, 2000]])
    before = p.limits.to_dict()
    raises(Refused, p.limits_set, {"max_bolus_mU": 5000, "max_basal_mUh": 1000})  # schedule has 2 U/h
    raises(Refused, p.limits_set, {"max_bolus_mU": 5000, "nonsense": 1})
    raises(Refused, p.limits_set, {"max_bolus_mU": 99999})
    raises(Refused, p.limits_set, {"bolus_speed_mU_min": 15000, "max_bolus_mU": 5001})
    assert p.limits.to_dict() == before
    p.limits_set({"max_bolus_mU": 5000})
    assert raises(Refused, p.bolus, 5010).code == "limit"


def test_settings_survive_restart():
    store = DictStorage()
    p = Pump(CountingMotor(), store, mech())
    p.basal_set([[0, 700], [600, 900]])
    p.limits_set({"max_bolus_mU": 4000})
    q = Pump(CountingMotor(), store, mech())
    assert q.schedule.to_list() == [[0, 700], [600, 900]]
    assert q.limits.max_bolus_mU == 4000
    assert q.state == SUSPENDED


def test_corrupt_settings_fall_back_to_safe_defaults():
    store = DictStorage()
    store.files["settings.json"] = b'{"basal": [[0, 99999]], "limits": {}}'
    ev = []
    q = Pump(CountingMotor(), store, mech(), lambda n, d: ev.append((n, d)))
    assert q.schedule.to_list() == [[0, 0]]
    assert q.limits.max_basal_mUh == 3000


def test_fault_stops_motor_and_suspends():
    p, m, ev = make()
    p.bolus(1000)
    run(p, 2)
    p.fault("test")
    assert p.state == SUSPENDED and p.suspend_reason == "fault" and p.bolus_req == 0
    assert ev[-1][0] == "alarm"
    assert p.state != RUNNING
