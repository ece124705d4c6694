"""Progress math on hand-computed series: baseline choice, change, MCID, direction, asymmetry."""

from __future__ import annotations

from typing import Any

from fhir_mapping.analytics import asymmetry_index
from fhir_mapping.analytics import progress
from fhir_mapping.analytics import rms
from fhir_mapping.catalog import BY_KEY
from fhir_mapping.observations import build_observation


def obs(measure: str, value: Any, date: str, ref: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    unit = BY_KEY[measure].unit
    finding = {"measure": measure, "value": value, **({"unit": unit} if unit else {}), **extra}
    return ref, build_observation(finding, "p1", date)


def one(entries: list[dict[str, Any]], measure: str, side: str | None = None) -> dict[str, Any]:
    (found,) = [e for e in entries if e["measure"] == measure and e["side"] == side]
    return found


def test_baseline_is_earliest_not_first_stored_and_lower_is_better() -> None:
    series = [
        obs("tug_time", 14.2, "2026-03-01", "Observation/c"),
        obs("tug_time", 20, "2026-01-01", "Observation/a"),
        obs("tug_time", 16, "2026-02-01", "Observation/b"),
    ]
    tug = one(progress(series), "tug_time")
    assert [p["observation"] for p in tug["series"]] == ["Observation/a", "Observation/b", "Observation/c"]
    # baseline 20, latest 14.2: change -5.8, -5.8 / 20 = -29 %
    assert (tug["baseline"], tug["latest"], tug["change"], tug["percent_change"]) == (20, 14.2, -5.8, -29.0)
    assert tug["trend"] == "improving" and tug["direction"] == "lower"
    assert tug["mcid"] is None and tug["mcid_reached"] is None


def test_absolute_mcid() -> None:
    # LEFS MCID 9: 40 -> 48 is +8 (not reached), 40 -> 49 is +9 (reached)
    lefs = one(
        progress([obs("lefs_total", 40, "2026-01-01", "O/1"), obs("lefs_total", 48, "2026-02-01", "O/2")]),
        "lefs_total",
    )
    assert (lefs["change"], lefs["percent_change"], lefs["mcid_reached"], lefs["trend"]) == (
        8,
        20.0,
        False,
        "improving",
    )
    lefs = one(
        progress([obs("lefs_total", 40, "2026-01-01", "O/1"), obs("lefs_total", 49, "2026-02-01", "O/2")]),
        "lefs_total",
    )
    assert lefs["mcid_reached"] is True


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
    odi = one(
        progress([obs("odi_score", 40, "2026-01-01", "O/1"), obs("odi_score", 34, "2026-03-01", "O/2")]),
        "odi_score",
    )
    assert odi["mcid_reached"] is False
    # pain 3 -> 5 is worse (lower is better), MCID 2 not reached in the right direction
    pain = one(
        progress([obs("pain_nrs", 3, "2026-01-01", "O/1"), obs("pain_nrs", 5, "2026-02-01", "O/2")]),
        "pain_nrs",
    )
    assert (pain["change"], pain["trend"], pain["mcid_reached"]) == (2, "worsening", False)


def test_single_point_and_zero_baseline() -> None:
    steps = one(progress([obs("steps_daily", 0, "2026-01-01", "O/1")]), "steps_daily")
    assert (steps["baseline"], steps["latest"], steps["change"], steps["percent_change"]) == (0, 0, 0, None)
    assert steps["trend"] == "baseline only"


def test_left_right_asymmetry_on_latest_values() -> None:
    series = [
        obs("grip_strength", 18, "2026-01-01", "O/1", side="left"),
        obs("grip_strength", 20, "2026-02-01", "O/2", side="left"),
        obs("grip_strength", 30, "2026-02-01", "O/3", side="right"),
    ]
    entries = progress(series)
    # |20 - 30| / ((20 + 30) / 2) x 100 = 40
    assert one(entries, "grip_strength", "left")["asymmetry_index"] == 40.0
    assert one(entries, "grip_strength", "right")["asymmetry_index"] == 40.0
    assert one(entries, "grip_strength", "left")["change"] == 2


def test_rom_sides_pair_per_joint_and_grades_chart_by_rank() -> None:
    series = [
        obs("joint_rom_knee_flexion", 95, "2026-01-01", "O/1", side="left"),
        obs("joint_rom_knee_flexion", 135, "2026-01-01", "O/2", side="right"),
        obs("mmt_grade", "3", "2026-01-01", "O/3", side="left", body_site="quadriceps"),
        obs("mmt_grade", "4-", "2026-02-01", "O/4", side="left", body_site="quadriceps"),
    ]
    entries = progress(series)
    # |95 - 135| / 115 x 100 = 34.78
    assert one(entries, "joint_rom_knee_flexion", "left")["asymmetry_index"] == 34.78
    mmt = one(entries, "mmt_grade", "left")
    assert [p["grade"] for p in mmt["series"]] == ["3", "4-"]
    assert mmt["body_site"] == "quadriceps" and mmt["change"] == 0.67 and mmt["trend"] == "improving"
    assert mmt["asymmetry_index"] is None


def test_entered_in_error_and_unknown_are_skipped() -> None:
    ref, bad = obs("pain_nrs", 9, "2026-01-01", "O/1")
    bad["status"] = "entered-in-error"
    unknown = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectiveDateTime": "2026-01-01",
        "valueQuantity": {"value": 1},
    }
    assert progress([(ref, bad), ("O/2", unknown)]) == []


def test_helpers() -> None:
    assert asymmetry_index(0, 0) is None
    assert asymmetry_index(10, 10) == 0
    assert rms([3, -4]) == (12.5) ** 0.5
