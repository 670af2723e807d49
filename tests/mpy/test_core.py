# Unit tests of the firmware core (delivery, state, reservoir), under the real MicroPython port.
import basalt.lib as overlay
from basalt.cmd._prof import segments
from basalt.core import Mechanics, Refused
from hw_doubles import DictStorage
from mpyunit import raises
from pumpkit import bare, cmd, make, mech, refused, run


# ---- mechanics -----------------------------------------------------------------------------
def test_mechanics_converts_exactly():
    m = mech()
    assert m.uu_per_step == 5000
    assert m.steps_from_mu(2500) == 500
    assert m.mu_from_steps(4800) == 24000
    assert raises(Refused, m.steps_from_mu, 2502).code == "range"


def test_mechanics_fractional_step_sizes_stay_exact():
    m = Mechanics(33, 1000, 400)  # 3.3 mU per step
    assert m.steps_from_mu(33) == 10
    assert m.mu_from_steps(10) == 33
    assert raises(Refused, m.steps_from_mu, 10).code == "range"


# ---- basal ---------------------------------------------------------------------------------
def test_basal_hour_is_exact_and_even():
    p, m, _ = make([[0, 1000]])
    n0 = m.n_trains
    run(p, 3600)
    p.tick()  # settle the last train
    assert m.total() == 200  # 1 U = 200 steps
    assert p.basal_steps == 200
    assert m.n_trains - n0 == 200 and m.max_n == 1  # one step every 18 s, no lumps


def test_basal_remainders_carry_at_awkward_rates():
    for rate in (1, 7, 333, 1001, 2999):
        p, m, _ = make([[0, rate]])
        run(p, 7200)
        p.tick()
        assert m.total() == rate * 1000 * 7200 // 3600 // 5000, rate


def test_schedule_edit_neither_loses_nor_doubles():
    p, m, _ = make([[0, 1000]])
    run(p, 9)  # half-way to the first step (18 s)
    cmd(p, "basal_set", segments=[[0, 1000]])
    run(p, 9)
    p.tick()
    assert m.total() == 1


def test_segments_refused_when_malformed():
    p, _, _ = make()
    bad = [
        None, [], [[30, 100]], [[0, 100], [0, 200]], [[0, 100], [45, 200]], [[0, -1]], [[0, True]],
        [[0, 1.5]], [[0]], [[0, 1, 2]], ["0=1"], [[0, 100], [1440, 100]], [[i * 30, 100] for i in range(49)],
    ]
    before = segments(p.profiles, 0)
    for seg in bad:
        raises(Refused, cmd, p, "basal_set", segments=seg)
    e = refused(p, "basal_set", segments=[[0, 4000]])
    assert e.code == "limit" and "max_basal" in e.msg
    assert segments(p.profiles, 0) == before


# ---- bolus ---------------------------------------------------------------------------------
def test_bolus_runs_at_speed_beside_basal():
    p, m, ev = make([[0, 1000]])
    cmd(p, "bolus", mU=2500)
    run(p, 100)
    assert p.nb_req == 500 and p.nb_done == 495  # 5 steps/s; the last train settles next tick
    p.tick()
    assert p.nb_req == 0
    assert ("bolus", "complete") in [(n, d["phase"]) for n, d in ev if n == "bolus"]
    assert p.bolus_steps == 500


def test_bolus_refusals_change_nothing():
    p, m, _ = make()
    before = (p.nb_req, p.reservoir_steps, m.n_trains, p.history.seq)
    for amount, code in ((2505, "range"), (0, "range"), (-5, "range"), (True, "bad_arg"), ("1", "bad_arg"),
                         (2.5, "bad_arg")):
        e = refused(p, "bolus", mU=amount)
        assert e.code == code, (amount, e.code)
    assert (p.nb_req, p.reservoir_steps, m.n_trains, p.history.seq) == before
    e = refused(p, "bolus", mU=10010)
    assert e.code == "limit" and "max_bolus" in e.msg
    assert cmd(p, "history", since=p.history.seq - 1)["records"][0][2] == 8  # the refusal is logged; nothing else changed
    assert (p.nb_req, p.reservoir_steps, m.n_trains) == before[:3]


def test_second_bolus_of_a_kind_refused():
    p, _, _ = make()
    cmd(p, "bolus", mU=1000)
    assert refused(p, "bolus", mU=1000).code == "busy"


def test_cancel_reports_exactly_what_the_motor_emitted():
    p, m, _ = make([[0, 0]])
    cmd(p, "bolus", mU=2500)
    run(p, 10)  # 9 trains settled (45 steps), the 10th (5 steps) in flight
    m.cut(3)  # the motor got 3 steps of it out before the stop
    info = cmd(p, "bolus_cancel")
    assert info["delivered_steps"] == 48 == m.total()
    assert info["delivered_mU"] == 240
    assert p.nb_req == 0


def test_cut_train_keeps_basal_owed():
    p, m, _ = make([[0, 12000]], limits={"max_basal_mUh": 12000, "max_hour_mU": 30000, "max_day_mU": 300000})
    cmd(p, "bolus", mU=1000)
    run(p, 5)
    m.cut(0)
    cmd(p, "bolus_cancel")
    run(p, 3600)
    p.tick()
    assert p.basal_steps == 12000 * 1000 * 3605 // 3600 // 5000  # 3605 ticks settled


# ---- state and reservoir -------------------------------------------------------------------
def test_suspend_stops_at_once_and_cancels_bolus():
    p, m, _ = make()
    cmd(p, "bolus", mU=2000)
    run(p, 3)
    r = cmd(p, "suspend")
    assert r["bolus_cancelled"]["delivered_steps"] == p.bolus_steps
    n = m.n_trains
    run(p, 3600)
    assert m.n_trains == n and p.state == "suspended"
    assert refused(p, "suspend").code == "state"
    assert refused(p, "bolus", mU=1000).code == "state"


def test_reservoir_is_exact_and_empty_stops_with_alarm():
    p, m, ev = make([[0, 3000]], reservoir_mu=1000)  # 200 steps
    run(p, 4 * 3600)
    assert m.total() == 200 and p.reservoir_steps == 0
    assert p.state == "suspended" and p.reason == 2
    assert ("alarm", "reservoir_empty") in [(n, d.get("alarm")) for n, d in ev]
    assert refused(p, "resume").code == "reservoir"


def test_bolus_that_does_not_fit_is_refused():
    p, _, _ = make(reservoir_mu=2000)
    assert refused(p, "bolus", mU=2500).code == "reservoir"


def test_no_delivery_until_the_reservoir_workflow_completes():
    p, m, _ = bare()
    cmd(p, "basal_set", segments=[[0, 1000]])
    assert refused(p, "resume").code == "reservoir"
    assert refused(p, "reservoir_insert", mU=100000).code == "state"
    cmd(p, "rewind")
    p.tick()
    cmd(p, "reservoir_insert", mU=100000)
    assert refused(p, "resume").code == "reservoir"
    assert refused(p, "cannula_fill").code == "state"
    cmd(p, "prime_start")
    run(p, 3)
    cmd(p, "prime_stop")
    assert p.prime_steps == 3 * 40 and p.basal_steps == 0 and p.bolus_steps == 0
    assert refused(p, "resume").code == "reservoir"
    cmd(p, "cannula_fill")  # 0.3 U at bolus speed
    run(p, 20)
    assert p.res_state == "ready" and p.prime_steps == 120 + 60
    assert p.reservoir_steps == 20000 - 180
    cmd(p, "resume")
    run(p, 36)
    assert p.basal_steps == 1


def test_rewind_retracts_the_plunger_to_home():
    p, m, _ = make([[0, 3000]])
    run(p, 3600)
    cmd(p, "suspend")
    travelled = p.plunger_steps
    assert travelled == m.total() > 0
    cmd(p, "rewind")
    assert p.reservoir_steps == 0
    run(p, 5)
    assert p.res_state == "rewound" and p.plunger_steps == 0 and m.total() == 0


def test_prime_stops_itself_at_its_maximum():
    p, _, ev = bare()
    cmd(p, "rewind")
    p.tick()
    cmd(p, "reservoir_insert", mU=300000)
    cmd(p, "prime_start")
    run(p, 400)
    assert p.res_state == "primed" and p.prime_run == 6000  # 30 U


# ---- limits, settings, faults --------------------------------------------------------------
def test_limits_all_or_nothing():
    p, _, _ = make([[0, 2000]])
    before = dict(p.limits.__dict__)
    for bad in ({"max_bolus_mU": 5000, "max_basal_mUh": 1000}, {"max_bolus_mU": 5000, "nonsense": 1},
                {"max_bolus_mU": 99999}, {"bolus_speed_mU_min": 15000, "max_bolus_mU": 5001},
                {"max_hour_mU": 1000}, {"max_day_mU": 10000}):
        raises(Refused, cmd, p, "limits_set", **bad)
    assert dict(p.limits.__dict__) == before
    cmd(p, "limits_set", max_bolus_mU=5000)
    assert refused(p, "bolus", mU=5010).code == "limit"


def test_settings_survive_restart():
    store = DictStorage()
    p, _, _ = bare(store)
    cmd(p, "basal_set", segments=[[0, 700], [600, 900]])
    cmd(p, "profile_set", name="sport", segments=[[0, 500]])
    cmd(p, "limits_set", max_bolus_mU=4000)
    q, _, _ = bare(store)
    assert overlay.call("settings", "load", q)
    assert segments(q.profiles, 0) == [0, 700, 600, 900]
    assert q.profiles.names == ["default", "sport"]
    assert q.limits.max_bolus_mU == 4000 and q.cap_hour == q.mech.steps_floor(q.limits.max_hour_mU)
    assert q.state == "suspended"


def test_settings_without_a_profile_change_survive_restart():
    """Only settings.json exists when no profile was ever changed (profiles.json is written on a
    profile change): those settings still load, on the default profile."""
    store = DictStorage()
    p, _, _ = bare(store)
    cmd(p, "limits_set", max_bolus_mU=4000)
    assert "profiles.json" not in store.files
    q, _, _ = bare(store)
    assert overlay.call("settings", "load", q)
    assert q.limits.max_bolus_mU == 4000 and q.profiles.names == ["default"]


def test_corrupt_settings_fall_back_to_safe_defaults():
    for raw in (b'{"v": 1}', b"\x00garbage", b'{"v": 1, "active": 0, "clock_offset_s": 0, "limits": {}}'):
        store = DictStorage()
        store.files["settings.json"] = raw
        q, _, _ = bare(store)
        assert not overlay.call("settings", "load", q)
        assert segments(q.profiles, 0) == [0, 0] and q.limits.max_basal_mUh == 3000


def test_failed_save_changes_nothing():
    class FullStorage(DictStorage):
        def write_atomic(self, name, data):
            raise OSError("no space")

    p, _, ev = make()
    cmd(p, "profile_set", name="spare", segments=[[0, 500]])
    cmd(p, "calc_set", cr=[[0, 100]], isf=[[0, 50]], target=[[0, 100, 120]])
    p.storage = FullStorage()

    def state():
        q = p.profiles  # (the named profiles' rates: the arrays past them are spares)
        return (list(q.names), [list(q.rates[i]) for i in range(len(q.names))], q.active,
                dict(p.limits.__dict__), p.cap_hour, p.cap_day, p.calc["cr"], p.clock_offset_s,
                p.res_low_mu, p.res_low_h, p.auto_off_s, p.history.seq)

    before = state()
    n_events = len(ev)
    # every command that changes the settings: refused, and nothing changed, recorded or announced
    for op, args in (("basal_set", {"segments": [[0, 2500]]}), ("profile_set", {"name": "new", "segments": [[0, 700]]}),
                     ("profile_set", {"name": "spare", "segments": [[0, 800]]}), ("profile_select", {"name": "spare"}),
                     ("profile_delete", {"name": "spare"}), ("limits_set", {"max_bolus_mU": 2000, "max_hour_mU": 20000}),
                     ("calc_set", {"cr": [[0, 120]]}), ("alarm_set", {"reservoir_low_mU": 5000, "auto_off_h": 5}),
                     ("time_set", {"local_s": 1000000})):
        assert refused(p, op, **args).code == "storage", op
        assert state() == before, op
        assert len(ev) == n_events, (op, ev[n_events:])
    p.storage = DictStorage()  # storage back: the same change now goes through
    cmd(p, "limits_set", max_bolus_mU=2000)
    assert p.limits.max_bolus_mU == 2000


def test_fault_stops_motor_and_suspends():
    p, m, ev = make()
    cmd(p, "bolus", mU=1000)
    run(p, 2)
    p.fault("test")
    assert p.state == "suspended" and p.reason == 3 and p.nb_req == 0
    assert ("bolus", "cancelled") in [(n, d.get("phase")) for n, d in ev]
    assert ev[-1][0] == "alarm" and ev[-1][1]["alarm"] == "fault"
