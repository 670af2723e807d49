# Therapy features under MicroPython: profiles, temp basal, extended and combo boluses, the
# limit guard, the bolus calculator, the pump clock, and the history records they leave.
from basalt.core import Refused
from mpyunit import raises
from pumpkit import cmd, make, owed_basal, refused, run

HOUR = 3600


def kinds(p):
    return [r[2] for r in cmd(p, "history", since=0, limit=32)["records"]]


# ---- profiles ------------------------------------------------------------------------------
def test_at_least_four_profiles_with_48_segments():
    p, _, _ = make()
    segs = [[i * 30, 100 + i] for i in range(48)]
    for name in ("weekday", "weekend", "sport", "sick", "travel"):
        cmd(p, "profile_set", name=name, segments=segs)
    assert len(cmd(p, "profile_list")["profiles"]) == 6
    assert refused(p, "profile_set", name="seventh", segments=segs).code == "range"
    assert cmd(p, "profile_get", name="sport")["segments"] == [x for s in segs for x in s]
    for bad in ("", "x" * 17, "a b", 5, None):
        assert refused(p, "profile_set", name=bad, segments=segs).code == "bad_arg"


def test_profile_switch_takes_effect_at_once_without_losing_a_remainder():
    p, m, _ = make([[0, 1000]])
    cmd(p, "profile_set", name="double", segments=[[0, 2000]])
    run(p, 9)  # half a step owed at 1 U/h
    cmd(p, "profile_select", name="double")
    run(p, 9)  # 9 s at 2 U/h: one full step more
    p.tick()
    # 9 s at 1 U/h + 10 s at 2 U/h = 29 s of 1 U/h = 1.61 steps -> 1 step, remainder carried
    assert m.total() == owed_basal([(1000, 9), (2000, 10)])
    assert refused(p, "profile_delete", name="double").code == "state"
    assert 1 in kinds(p)  # PROFILE_SELECT recorded


def test_profile_rates_follow_local_time_segments():
    p, m, _ = make([[0, 600], [60, 1800]])
    cmd(p, "time_set", local_s=0)  # midnight
    run(p, 2 * HOUR)
    p.tick()
    assert m.total() == owed_basal([(600, 3600), (1800, 3601)])


# ---- temp basal ----------------------------------------------------------------------------
def test_percent_temp_basal_follows_segments_and_ends_by_itself():
    p, m, ev = make([[0, 1000], [60, 2000]])
    cmd(p, "time_set", local_s=30 * 60)  # 00:30
    start = m.total()
    cmd(p, "temp_basal", percent=50, minutes=60)
    run(p, HOUR)  # 00:30-01:30: half an hour of each segment at 50 %
    assert p.tb_end
    p.tick()  # the first second after it: the profile's own rate
    info = [d for n, d in ev if n == "temp_basal"][-1]
    assert info["phase"] == "ended" and info["delivered_steps"] == owed_basal([(500, 1800), (1000, 1800)])
    assert m.total() - start == owed_basal([(500, 1800), (1000, 1800), (2000, 1)])
    assert p.tb_end == 0 and p.basal_rate() == 2000


def test_absolute_temp_basal_and_cancel():
    p, m, _ = make([[0, 1000]])
    cmd(p, "temp_basal", rate_mUh=0, minutes=120)
    run(p, HOUR)
    assert m.total() == 0
    info = cmd(p, "temp_basal_cancel")
    assert info["phase"] == "cancelled" and info["delivered_steps"] == 0
    run(p, 36)
    assert m.total() == 2


def test_temp_basal_validation():
    p, _, _ = make([[0, 2000]])
    for args, code in (({"percent": 50, "minutes": 10}, "range"), ({"percent": 50, "minutes": 20}, "range"),
                       ({"percent": 50, "minutes": 1500}, "range"), ({"percent": 251, "minutes": 30}, "range"),
                       ({"percent": 50, "rate_mUh": 1, "minutes": 30}, "bad_arg"), ({"minutes": 30}, "bad_arg"),
                       ({"percent": 200, "minutes": 30}, "limit"), ({"rate_mUh": 3500, "minutes": 30}, "limit")):
        assert refused(p, "temp_basal", **args).code == code, args
    assert p.tb_end == 0
    cmd(p, "suspend")
    assert refused(p, "temp_basal", percent=50, minutes=30).code == "state"


def test_suspend_cancels_temp_basal():
    p, _, _ = make()
    cmd(p, "temp_basal", percent=150, minutes=60)
    r = cmd(p, "suspend")
    assert r["temp_cancelled"]["phase"] == "cancelled" and p.tb_end == 0


# ---- extended and combo boluses ------------------------------------------------------------
def test_extended_bolus_is_exact_over_its_duration():
    p, m, ev = make([[0, 0]])
    cmd(p, "bolus", ext_mU=3000, minutes=60)  # 600 steps over 3600 s
    run(p, 1800)
    assert abs(p.xb_done - 300) <= 1
    run(p, 1801)
    assert p.xb_req == 0 and m.total() == 600
    assert ("extended", "complete") in [(d["kind"], d["phase"]) for n, d in ev if n == "bolus"]


def test_combo_bolus_and_one_of_each_kind():
    p, m, _ = make([[0, 0]])
    r = cmd(p, "bolus", mU=1000, ext_mU=2000, minutes=120)
    assert r["kind"] == "combo"
    assert refused(p, "bolus", mU=500).code == "busy"
    assert refused(p, "bolus", ext_mU=500, minutes=30).code == "busy"
    run(p, 60)
    assert p.nb_req == 0 and p.bolus_steps >= 200  # normal part done within a minute
    cmd(p, "bolus", mU=500)  # a new normal bolus beside the running extended one
    run(p, 2 * HOUR + 60)
    assert m.total() == 200 + 400 + 100


def test_extended_overlapping_normal_and_cancel_mid_extended():
    p, m, _ = make([[0, 0]])
    cmd(p, "bolus", ext_mU=6000, minutes=240)  # 1200 steps over 4 h
    run(p, 600)
    cmd(p, "bolus", mU=2000)
    run(p, 600)
    info = cmd(p, "bolus_cancel", kind="extended")
    assert info["kind"] == "extended" and info["phase"] == "cancelled"
    assert info["delivered_steps"] == p.bolus_steps - 400 == m.total() - 400
    assert abs(info["delivered_steps"] - 100) <= 1  # 20 min of 4 h
    run(p, HOUR)
    assert m.total() == info["delivered_steps"] + 400


def test_extended_bolus_validation():
    p, _, _ = make()
    for args, code in (({"ext_mU": 1000, "minutes": 20}, "range"), ({"ext_mU": 1000, "minutes": 500}, "range"),
                       ({"ext_mU": 1000, "minutes": 40}, "range"), ({"ext_mU": 1000}, "range"),
                       ({"mU": 1000, "minutes": 30}, "range"), ({"ext_mU": 9000, "mU": 2000, "minutes": 60}, "limit")):
        assert refused(p, "bolus", **args).code == code, args


# ---- limits across commands ----------------------------------------------------------------
def test_no_combination_passes_the_hourly_limit():
    p, m, _ = make([[0, 3000]], limits={"max_hour_mU": 8000, "max_bolus_mU": 8000})
    cmd(p, "temp_basal", rate_mUh=3000, minutes=120)
    cmd(p, "bolus", ext_mU=2000, minutes=60)  # 3 + 2 = 5 U in the next hour
    e = refused(p, "bolus", mU=4000)  # 5 + 4 > 8
    assert e.code == "limit" and "max_hour" in e.msg
    cmd(p, "bolus", mU=2500)
    run(p, 4 * HOUR)
    # the per-tick backstop never had to act, and no 60-minute window passed 8 U
    assert not p.holding and 16 not in kinds(p)


def test_backstop_holds_delivery_if_a_window_would_pass():
    p, m, ev = make([[0, 3000]])
    p.cap_hour = 10  # as if the guard had been wrong: the tick must still hold the line
    run(p, HOUR)
    assert p.win.hour_sum <= 10 and p.holding
    assert ("alarm", "limit_hold") in [(n, d.get("alarm")) for n, d in ev]


def test_daily_limit_refuses():
    p, _, _ = make([[0, 3000]], limits={"max_day_mU": 80000})  # 72 U of basal a day possible
    e = refused(p, "bolus", mU=9000)
    assert e.code == "limit" and "max_day" in e.msg
    cmd(p, "bolus", mU=7000)


# ---- bolus calculator ----------------------------------------------------------------------
def _calc(p):
    cmd(p, "calc_set", cr=[[0, 100], [720, 150]], isf=[[0, 50]], target=[[0, 100, 120]])


def test_calculator_breakdown_and_rounding():
    p, _, _ = make()
    _calc(p)
    r = cmd(p, "bolus_calc", carbs_g=45, bg_mgdl=183)
    assert r["carbs_mU"] == 4500  # 45 g / 10 g per U
    assert r["correction_mU"] == 1260  # (183 - 120) / 50
    assert r["iob_mU"] == 0 and r["suggested_mU"] == 5760 and r["delivers"] is False
    r = cmd(p, "bolus_calc", carbs_g=0, bg_mgdl=80)
    assert r["correction_mU"] == -400 and r["suggested_mU"] == 0  # never negative
    r = cmd(p, "bolus_calc", carbs_g=13)
    assert r["suggested_mU"] == 1300
    assert p.nb_req == 0  # a suggestion never delivers


def test_calculator_subtracts_insulin_on_board_and_caps():
    p, _, _ = make()
    _calc(p)
    cmd(p, "bolus", mU=3000)
    run(p, 600)
    r = cmd(p, "bolus_calc", carbs_g=60, bg_mgdl=110)
    assert 2500 < r["iob_mU"] <= 3000
    assert 6000 - r["iob_mU"] - 10 <= r["suggested_mU"] <= 6000 - r["iob_mU"] and r["suggested_mU"] % 10 == 0
    run(p, 6 * HOUR)
    assert cmd(p, "bolus_calc", carbs_g=60)["iob_mU"] == 0  # past the 5 h action
    r = cmd(p, "bolus_calc", carbs_g=300, bg_mgdl=400)
    assert r["suggested_mU"] == 10000 and "max_bolus_mU" in r["capped_by"]
    cmd(p, "limits_set", max_iob_mU=4000)
    assert cmd(p, "bolus_calc", carbs_g=300)["suggested_mU"] == 4000


def test_calculator_follows_time_of_day_and_validates():
    p, _, _ = make()
    assert refused(p, "bolus_calc", carbs_g=10).code == "state"
    _calc(p)
    cmd(p, "time_set", local_s=13 * HOUR)
    assert cmd(p, "bolus_calc", carbs_g=45)["carbs_mU"] == 3000  # 15 g/U after noon
    for args in ({"cr": [[0, 5]], "isf": [[0, 50]], "target": [[0, 100, 120]]}, {"cr": [0, 100, 30], "isf": [0, 50], "target": [0, 100, 120]},
                 {"cr": [[0, 100]], "isf": [[0, 50]], "target": [[0, 130, 120]]},
                 {"cr": [[30, 100]], "isf": [[0, 50]], "target": [[0, 100, 120]]},
                 {"cr": [[0, 100]], "isf": [[0, 50]], "target": [[0, 100, 120]], "dia_min": 120},
                 {"cr": [[0, 100]], "isf": [[0, 50]], "target": [[0, 100, 120]], "peak_min": 200}):
        raises(Refused, cmd, p, "calc_set", **args)
    assert refused(p, "bolus_calc", carbs_g=400).code == "range"


# ---- pump clock ----------------------------------------------------------------------------
def test_clock_changes_never_double_or_skip_insulin():
    # DST fall-back: 02:00 -> 01:00 repeats the 01:00 segment's *time of day*, but basal is owed
    # per elapsed second, so the hour is paid once at the rate in force; nothing is delivered
    # twice and nothing owed is skipped.
    p, m, _ = make([[0, 1000], [60, 2000], [120, 500]])
    cmd(p, "time_set", local_s=HOUR + 1800)  # 01:30
    run(p, 1800)  # to 02:00 at 2 U/h
    cmd(p, "time_set", local_s=HOUR)  # back to 01:00
    run(p, HOUR)  # 01:00-02:00 again, at 2 U/h
    cmd(p, "time_set", local_s=5 * HOUR)  # jump forward (spring): no catch-up bolus
    run(p, 1800)
    p.tick()
    assert m.total() == owed_basal([(2000, 1800), (2000, 3600), (500, 1801)])
    assert kinds(p).count(15) == 3  # TIME_SET records


def test_time_validation():
    p, _, _ = make()
    for v in (-1, "x", 1.5, None, True):
        raises(Refused, cmd, p, "time_set", local_s=v)


# ---- history -------------------------------------------------------------------------------
def test_history_records_carry_delivered_amounts():
    p, m, _ = make([[0, 0]])
    cmd(p, "bolus", mU=1000)
    run(p, 10)
    cmd(p, "bolus_cancel")
    recs = cmd(p, "history", since=0, limit=32)["records"]
    cancel = [r for r in recs if r[2] == 7][-1]
    assert cancel[3] == m.total() and cancel[4] == 200
    assert [r[2] for r in recs][:3] == [10, 14, 9]  # rewind, reservoir, prime
    assert cmd(p, "history", since=0, type=5)["records"][0][3:] == (200, 0)  # requested: 200 normal steps
    newest = cmd(p, "history", since=p.history.seq)["records"]
    assert newest == []


def test_history_pages_through_every_record():
    # The history is in flash (a ring of 1920+ records, tests/mpy/test_history.py): nothing here
    # is dropped, and paging with since=next returns every record once, in order.
    p, _, _ = make()
    for _ in range(20):
        cmd(p, "suspend")
        cmd(p, "resume")
    seen, since = [], 0
    while True:
        r = cmd(p, "history", since=since, limit=32)
        seen += [x[0] for x in r["records"]]
        if r["next"] >= r["newest"]:
            break
        since = r["next"]
    assert r["oldest"] == 1 and seen == list(range(1, p.history.seq + 1))
    assert p.state != "suspended"
