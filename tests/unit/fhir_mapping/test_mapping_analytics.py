"""Progress on hand-computed series: order by instant, comparability, trust, trend, ordinals, symmetry."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mapping import codes
from fhir_mapping.analytics import asymmetry_index
from fhir_mapping.analytics import progress
from fhir_mapping.analytics import report
from fhir_mapping.analytics import rms
from fhir_mapping.catalog import BY_KEY
from fhir_mapping.observations import build_observation

Obs = tuple[str, dict[str, Any]]


def obs(measure: str, value: Any, date: str, ref: str, **extra: Any) -> Obs:
    unit = BY_KEY[measure].unit
    finding = {"measure": measure, "value": value, **({"unit": unit} if unit else {}), **extra}
    return ref, build_observation(finding, "p1", date)


def plain(code: str, date: str, ref: str, status: str = "final", **value: Any) -> Obs:
    """An Observation written through plain FHIR with only the LOINC code."""
    body = {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": codes.LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": date,
        **value,
    }
    return ref, body


def one(
    entries: list[dict[str, Any]], measure: str, side: str | None = None, **defined: Any
) -> dict[str, Any]:
    (found,) = [
        e
        for e in entries
        if e["measure"] == measure
        and e["side"] == side
        and all(e["defined_by"][k] == v for k, v in defined.items())
    ]
    return found


def test_points_are_ordered_by_instant_with_time_zones() -> None:
    # 12 s at 01:00Z on the 21st; 10 s at 23:00-05:00 on the 20th = 04:00Z on the 21st, the later one
    series = [
        obs("tug_time", 10, "2026-11-20T23:00:00-05:00", "Observation/b"),
        obs("tug_time", 12, "2026-11-21T01:00:00Z", "Observation/a"),
    ]
    tug = one(progress(series), "tug_time")
    assert [p["value"] for p in tug["series"]] == [12, 10]
    assert [p["instant"] for p in tug["series"]] == ["2026-11-21T01:00:00Z", "2026-11-21T04:00:00Z"]
    assert (tug["baseline"], tug["latest"], tug["change"], tug["trend"]) == (12, 10, -2, "improving")
    # TUG has no MDC or MCID in the catalog: the slope's sign decides, and the threshold says so
    assert tug["trend_detail"]["threshold"] is None
    assert tug["last_step"] == {"from": 12, "to": 10, "change": -2, "days": 0.125, "direction": "improving"}


def test_series_split_by_method_assistive_device_position_and_protocol() -> None:
    series = [
        obs("joint_rom_knee_flexion", 95, "2026-10-01T10:00:00Z", "O/1", side="left", method="active"),
        obs("joint_rom_knee_flexion", 110, "2026-10-15T10:00:00Z", "O/2", side="left", method="passive"),
        obs("tug_time", 20, "2026-10-01T10:00:00Z", "O/3", assistive_device="walker"),
        obs("tug_time", 15, "2026-10-15T10:00:00Z", "O/4"),
        obs("single_leg_stance", 10, "2026-10-01T10:00:00Z", "O/5", side="left", protocol="phenx-170801"),
        obs("single_leg_stance", 25, "2026-10-15T10:00:00Z", "O/6", side="left"),
        obs("joint_rom_hip_flexion", 100, "2026-10-01T10:00:00Z", "O/7", side="left", position="supine"),
        obs("joint_rom_hip_flexion", 90, "2026-10-15T10:00:00Z", "O/8", side="left", position="standing"),
    ]
    entries = progress(series)
    assert len(entries) == 8  # nothing compared across method, device, protocol or position
    active = one(entries, "joint_rom_knee_flexion", "left", method="active")
    assert (active["baseline"], active["change"], active["trend"]) == (95, 0, "baseline only")
    assert one(entries, "joint_rom_knee_flexion", "left", method="passive")["latest"] == 110
    walker = one(entries, "tug_time", assistive_device="walker")
    assert walker["defined_by"] == {
        "method": None,
        "assistive_device": "walker",
        "position": None,
        "protocol": None,
        "context": "longitudinal",
    }
    assert one(entries, "tug_time", assistive_device=None)["series"][0]["value"] == 15
    assert one(entries, "single_leg_stance", "left", protocol="phenx-170801")["latest"] == 10
    assert one(entries, "joint_rom_hip_flexion", "left", position="standing")["latest"] == 90


def test_within_session_pain_is_its_own_block_not_longitudinal() -> None:
    """Worked example, within-session kind: pain 6 before, 4 twenty-five minutes after treatment."""
    _, before = obs("pain_nrs", 6, "2026-11-21T09:00:00Z", "O/2")
    before |= {"encounter": {"reference": "Encounter/s1"}}
    before["extension"] = [{"url": codes.EXT_SESSION_TIMING, "valueCode": "pre-treatment"}]
    _, after = obs("pain_nrs", 4, "2026-11-21T09:25:00Z", "O/3")
    after |= {"encounter": {"reference": "Encounter/s1"}}
    after["extension"] = [{"url": codes.EXT_SESSION_TIMING, "valueCode": "post-treatment"}]
    out = report([obs("pain_nrs", 7, "2026-11-01T10:00:00Z", "O/1"), ("O/2", before), ("O/3", after)])
    pain = one(out["measures"], "pain_nrs")
    # longitudinal: 7 (assessment) -> 6 (start of the visit); the 4 after treatment is not in it
    assert [p["value"] for p in pain["series"]] == [7, 6]
    assert (pain["change"], pain["mcid_reached"]) == (
        -1,
        False,
    )  # |-1| < MCID 2: immediate relief not counted
    (block,) = out["within_session"]
    assert block["defined_by"]["context"] == "within-session"
    (session,) = block["sessions"]
    assert session["encounter"] == "Encounter/s1"
    assert (session["pre"]["value"], session["post"]["value"], session["change"]) == (6, 4, -2)
    assert (session["minutes_apart"], session["direction"]) == (25.0, "improving")


def test_untrusted_points_are_excluded_with_reasons_never_counted() -> None:
    series = [
        obs("pain_nrs", 6, "2026-10-01T10:00:00Z", "O/1"),
        obs("pain_nrs", 5, "2026-10-08T10:00:00Z", "O/2"),
        plain("72514-3", "2026-10-09T10:00:00Z", "O/3", valueInteger=42),
        plain("72514-3", "2026-10-10T10:00:00Z", "O/4", status="preliminary", valueInteger=2),
        plain("72514-3", "2026-10-11T10:00:00Z", "O/5", status="entered-in-error", valueInteger=1),
        plain("89423-8", "2026-10-01T10:00:00Z", "O/6", valueQuantity={"value": 12, "code": "kg"}),
        plain("89423-8", "2026-10-02T10:00:00Z", "O/7", valueQuantity={"value": 12}),
        plain("89423-8", "2026-10-03T10:00:00Z", "O/8", valueQuantity={"value": 11, "code": "s"}),
        ("O/9", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 1}),
    ]
    out = report(series)
    pain = one(out["measures"], "pain_nrs")
    assert [p["observation"] for p in pain["series"]] == ["O/1", "O/2"]
    assert pain["latest"] == 5  # not the preliminary 2
    reasons = {e["observation"]: e["reason"] for e in out["excluded"]}
    assert reasons == {
        "O/3": "42 {score} is outside pain_nrs's range 0-10",
        "O/4": "status 'preliminary': only final, amended or corrected results count",
        "O/5": "status 'entered-in-error': only final, amended or corrected results count",
        "O/6": "unit 'kg' is not s",
        "O/7": "no unit, and tug_time has several",
    }
    assert one(out["measures"], "tug_time")["series"][0]["observation"] == "O/8"


def test_units_convert_on_read_and_the_entered_value_is_shown() -> None:
    series = [
        obs("six_min_walk_distance", 1200, "2026-10-01T10:00:00Z", "O/1", unit="[ft_i]"),
        obs("six_min_walk_distance", 400, "2026-10-29T10:00:00Z", "O/2"),
    ]
    walk = one(progress(series), "six_min_walk_distance")
    first = walk["series"][0]
    # 1200 ft x 0.3048 = 365.76 m; 400 - 365.76 = 34.24
    assert (first["value"], first["entered"]) == (365.76, {"value": 1200, "unit": "[ft_i]"})
    assert (walk["unit"], walk["change"]) == ("m", 34.24)


def test_trend_uses_every_point_and_reports_the_last_step() -> None:
    """Worked example, numeric kind: ODI 60, 60, 40, 50 four weeks apart (days 0, 28, 56, 84)."""
    dates = ["2026-08-01", "2026-08-29", "2026-09-26", "2026-10-24"]
    series = [
        obs("odi_score", v, f"{d}T10:00:00Z", f"O/{i}")
        for i, (v, d) in enumerate(zip([60, 60, 40, 50], dates, strict=True))
    ]
    odi = one(progress(series), "odi_score")
    # mean day 42, mean value 52.5; sum (x - 42)(y - 52.5) = -42*7.5 - 14*7.5 + 14*-12.5 + 42*-2.5 = -700
    # sum (x - 42)^2 = 1764 + 196 + 196 + 1764 = 3920; slope = -700 / 3920 = -0.178571/day
    # per 30 days -5.3571; fitted change over 84 days = -15.0
    # threshold: no MDC; MCID 18 % of the baseline 60 = 10.8; a fitted drop of 15 >= 10.8: improving
    detail = odi["trend_detail"]
    assert (detail["slope_per_30_days"], detail["fitted_change"]) == (-5.3571, -15.0)
    assert (detail["threshold"], detail["threshold_kind"], odi["trend"]) == (10.8, "MCID", "improving")
    # and the last step 40 -> 50 is a worsening, reported on its own
    assert odi["last_step"] == {"from": 40, "to": 50, "change": 10, "days": 28.0, "direction": "worsening"}
    # from baseline: -10 = -16.67 %, under the 18 % MCID
    assert (odi["change"], odi["percent_change"], odi["mcid_reached"]) == (-10, -16.67, False)


def test_trend_within_the_mdc_is_stable_and_beyond_it_is_improving() -> None:
    """Worked example with an MDC: Berg 40, 44, 47 on days 0, 14, 28 (MDC 6, MCID 6.5)."""
    series = [
        obs("berg_balance_total", 40, "2026-10-01", "O/1"),
        obs("berg_balance_total", 44, "2026-10-15", "O/2"),
        obs("berg_balance_total", 47, "2026-10-29", "O/3"),
    ]
    berg = one(progress(series), "berg_balance_total")
    # mean day 14, mean 43.667: sum (x - 14)(y - 43.667) = -14*-3.667 + 0 + 14*3.333 = 98
    # sum (x - 14)^2 = 392
    # slope 0.25/day = 7.5 per 30 days; fitted change 0.25 x 28 = 7 >= MDC 6: improving; change 7 >= MCID 6.5
    assert berg["trend_detail"]["fitted_change"] == 7.0 and berg["trend_detail"]["threshold_kind"] == "MDC"
    assert (berg["trend"], berg["change"], berg["mcid_reached"]) == ("improving", 7, True)
    # LEFS 40 -> 48: +8 is under the MDC of 9, so the trend is stable and the MCID (9) not reached
    lefs = one(
        progress([obs("lefs_total", 40, "2026-01-01", "O/1"), obs("lefs_total", 48, "2026-02-01", "O/2")]),
        "lefs_total",
    )
    assert (lefs["change"], lefs["percent_change"], lefs["mcid_reached"], lefs["trend"]) == (
        8,
        20.0,
        False,
        "stable",
    )


def test_percent_mcid_and_worsening() -> None:
    # ODI MCID = 18 % reduction from baseline: 40 -> 32 is 20 % (reached); 40 -> 34 is 15 % (not)
    odi = one(
        progress([obs("odi_score", 40, "2026-01-01", "O/1"), obs("odi_score", 32, "2026-03-01", "O/2")]),
        "odi_score",
    )
    assert (odi["change"], odi["percent_change"], odi["mcid_reached"], odi["mcid_kind"]) == (
        -8,
        -20.0,
        True,
        "percent",
    )
    # pain 3 -> 5 is worse (lower is better): +2 reaches the MCID 2 in the wrong direction
    pain = one(
        progress([obs("pain_nrs", 3, "2026-01-01", "O/1"), obs("pain_nrs", 5, "2026-02-01", "O/2")]),
        "pain_nrs",
    )
    assert (pain["change"], pain["trend"], pain["mcid_reached"]) == (2, "worsening", False)


def test_ordinals_are_compared_as_ordinals() -> None:
    """Worked example, ordinal kind: MMT 3 -> 4- -> 3+ and Modified Ashworth 2 -> 1+ -> 1."""
    series = [
        obs("mmt_grade", "3", "2026-01-01", "O/1", side="left", body_site="quadriceps"),
        obs("mmt_grade", "4-", "2026-02-01", "O/2", side="left", body_site="quadriceps"),
        obs("mmt_grade", "3+", "2026-03-01", "O/3", side="left", body_site="quadriceps"),
        obs("modified_ashworth", "2", "2026-01-01", "O/4", side="right", body_site="gastrocnemius"),
        obs("modified_ashworth", "1+", "2026-02-01", "O/5", side="right", body_site="gastrocnemius"),
        obs("modified_ashworth", "1", "2026-03-01", "O/6", side="right", body_site="gastrocnemius"),
    ]
    entries = progress(series)
    mmt = one(entries, "mmt_grade", "left")
    # scale order 0 1 1+ 2- 2 2+ 3- 3 3+ 4- ...: 3 is step 7, 4- step 9, 3+ step 8
    assert (mmt["scale"], mmt["baseline"], mmt["latest"], mmt["change"], mmt["grade_steps"]) == (
        "ordinal",
        "3",
        "3+",
        None,
        1,
    )
    # Mann-Kendall over the pairs (3, 4-) up, (3, 3+) up, (4-, 3+) down: S = 1, improving
    assert mmt["trend_detail"]["s"] == 1 and mmt["trend"] == "improving"
    assert mmt["last_step"] == {
        "from": "4-",
        "to": "3+",
        "grade_steps": -1,
        "days": 28.0,
        "direction": "worsening",
    }
    assert [p["grade"] for p in mmt["series"]] == ["3", "4-", "3+"]
    mas = one(entries, "modified_ashworth", "right")
    # 2 -> 1+ -> 1: every pair goes down, and lower tone is better: S = 3 improving pairs
    assert (mas["grade_steps"], mas["trend_detail"]["s"], mas["trend"]) == (-2, 3, "improving")
    assert mas["mcid_reached"] is None and mas["percent_change"] is None


def test_limb_symmetry_index_on_same_day_pairs_only() -> None:
    """Worked example, symmetry kind: grip left 18 (Jan 1), left 20 and right 30 (Feb 1)."""
    series = [
        obs("grip_strength", 18, "2026-01-01T10:00:00-05:00", "O/1", side="left"),
        obs("grip_strength", 20, "2026-02-01T23:30:00-05:00", "O/2", side="left"),
        obs("grip_strength", 30, "2026-02-01T09:00:00-05:00", "O/3", side="right"),
    ]
    left = one(report(series, involved="left")["measures"], "grip_strength", "left")
    # only Feb 1 has both sides (the day as recorded, 23:30-05:00 is still Feb 1 at the clinic)
    # LSI = involved / uninvolved x 100 = 20 / 30 x 100 = 66.67; deficit 20 - 30 = -10
    assert left["symmetry"]["pairs"] == [
        {"date": "2026-02-01", "left": 20, "right": 30, "deficit": -10, "lsi": 66.67}
    ]
    assert left["symmetry"]["involved"] == "left"
    # the right side's entry carries the same comparison
    right = one(report(series, involved="left")["measures"], "grip_strength", "right")
    assert right["symmetry"] == left["symmetry"]
    # without an involved side, no index: only left - right
    plain_pair = one(progress(series), "grip_strength", "left")["symmetry"]["latest"]
    assert plain_pair == {"date": "2026-02-01", "left": 20, "right": 30, "left_minus_right": -10}


def test_signed_rom_has_a_deficit_not_a_ratio() -> None:
    series = [
        obs("joint_rom_knee_extension", -10, "2026-01-01", "O/1", side="left"),
        obs("joint_rom_knee_extension", 0, "2026-01-01", "O/2", side="right"),
    ]
    sym = one(report(series, involved="left")["measures"], "joint_rom_knee_extension", "left")["symmetry"]
    # left -10 (a 10 degree extension deficit) vs right 0: the old |L - R| / mean gave 200 %
    assert sym["latest"] == {"date": "2026-01-01", "left": -10, "right": 0, "deficit": -10, "lsi": None}
    assert "signed" in sym["method"]
    # both positive (hyperextension 5 vs 10): a ratio again, 5 / 10 x 100 = 50
    both = [
        obs("joint_rom_knee_extension", 5, "2026-01-02", "O/3", side="left"),
        obs("joint_rom_knee_extension", 10, "2026-01-02", "O/4", side="right"),
    ]
    sym = one(report(both, involved="left")["measures"], "joint_rom_knee_extension", "left")["symmetry"]
    assert sym["latest"]["lsi"] == 50.0


def test_values_on_different_days_are_not_paired() -> None:
    series = [
        obs("joint_rom_knee_flexion", 95, "2026-01-01", "O/1", side="left"),
        obs("joint_rom_knee_flexion", 135, "2026-01-20", "O/2", side="right"),
    ]
    sym = one(progress(series), "joint_rom_knee_flexion", "left")["symmetry"]
    assert (sym["pairs"], sym["latest"]) == ([], None)
    assert "different days" in sym["note"]


def test_single_point_and_zero_baseline() -> None:
    steps = one(progress([obs("steps_daily", 0, "2026-01-01", "O/1")]), "steps_daily")
    assert (steps["baseline"], steps["latest"], steps["change"], steps["percent_change"]) == (0, 0, 0, None)
    assert steps["trend"] == "baseline only" and steps["last_step"] is None


@pytest.mark.parametrize("when", ["2026", "2026-11", "2026-11-20", "2026-11-20T10:00:00+02:00"])
def test_partial_dates_order_from_their_start(when: str) -> None:
    tug = one(progress([obs("tug_time", 12, when, "O/1")]), "tug_time")
    assert tug["series"][0]["instant"][:4] == "2026"


def test_helpers() -> None:
    assert asymmetry_index(0, 0) is None
    assert asymmetry_index(10, 10) == 0
    assert rms([3, -4]) == (12.5) ** 0.5
