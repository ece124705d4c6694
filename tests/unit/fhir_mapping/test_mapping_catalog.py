"""Each catalog entry builds an Observation fhir.resources accepts, sends only verified codes, reads back."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_mapping import catalog
from fhir_mapping import codes
from fhir_mapping import schemas
from fhir_mapping.observations import build_observation
from fhir_mapping.observations import read_observation
from fhir_mapping.units import UNITS
from fhir_mapping.units import convert
from server.errors import InvalidRequestError


def _findings(m: catalog.Measure) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"measure": m.key}
    if m.grades:
        base["value"] = m.grades[len(m.grades) // 2].code
    else:
        assert m.low is not None and m.high is not None
        value = (m.low + m.high) / 2
        if m.protocols:
            value = min(value, 20)
        base["value"] = codes.number(round(value) if m.integer else value)
        base["unit"] = m.unit
    if m.laterality == "required":
        base["side"] = "left"
    if m.site == "required":
        base["body_site"] = "quadriceps"
    variants = [base]
    if m.laterality == "optional":
        variants += [{**base, "side": "right"}]
    variants += [{**base, "protocol": p} for p in m.protocols]
    variants.append({**base, "method": "standard protocol", "device": "device X", "note": "tolerated well"})
    return variants


CASES = [(m.key, f) for m in catalog.MEASURES for f in _findings(m)]


@pytest.mark.parametrize(("key", "finding"), CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_entry_builds_valid_observation_and_round_trips(key: str, finding: dict[str, Any]) -> None:
    loaded = schemas.load(schemas.FindingSchema(), finding)
    obs = build_observation(loaded, "p1", "2026-11-20T10:00:00Z", encounter="Encounter/e1")
    get_fhir_model_class("Observation").model_validate(obs)
    assert read_observation(obs) == loaded
    measure = catalog.BY_KEY[key]
    assert obs["category"][0]["coding"][0]["code"] == measure.category
    ours = [c for c in obs["code"]["coding"] if c["system"] == codes.PT]
    assert ours == [{"system": codes.PT, "code": key, "display": measure.display}]
    assert obs["code"]["text"] == measure.display


@pytest.mark.parametrize("measure", catalog.MEASURES, ids=lambda m: m.key)
def test_only_verified_codes_go_out(measure: catalog.Measure) -> None:
    finding = _findings(measure)[0]
    for variant in [
        finding,
        *({**finding, "side": s} for s in ("left", "right") if measure.laterality != "forbidden"),
        *({**finding, "protocol": p} for p in measure.protocols),
    ]:
        obs = build_observation(schemas.load(schemas.FindingSchema(), variant), "p1", "2026-11-20")
        for c in obs["code"]["coding"]:
            if c["system"] == codes.PT:
                continue
            (std,) = [s for s in measure.codes if (s.system, s.code) == (c["system"], c["code"])]
            assert std.status in ("verified", "verified-secondary")


def test_catalog_entries_are_complete() -> None:
    required = {
        "pain_nrs",
        "pain_vas",
        "mmt_grade",
        "grip_strength",
        "berg_balance_total",
        "tug_time",
        "gait_speed_10mwt",
        "six_min_walk_distance",
        "five_times_sit_to_stand",
        "chair_stand_30s",
        "fga_total",
        "dgi_total",
        "abc_scale",
        "lefs_total",
        "odi_score",
        "ndi_score",
        "quickdash_score",
        "promis_pf_tscore",
        "fugl_meyer_ue_motor",
        "fugl_meyer_le_motor",
        "fugl_meyer_total",
        "modified_ashworth",
        "single_leg_stance",
        "joint_position_error",
        "surface_emg",
        "steps_daily",
        "exercise_minutes",
    }
    assert required <= set(catalog.BY_KEY)
    assert any(k.startswith("joint_rom_") for k in catalog.BY_KEY)
    for m in catalog.MEASURES:
        assert m.display and m.category and m.method and m.source, m.key
        assert m.laterality in ("required", "optional", "forbidden")
        assert m.direction in ("higher", "lower", None)
        assert m.status in ("verified", "verified-secondary", "partial", "unverified")
        if m.grades:
            assert m.unit is None
        else:
            assert m.unit in UNITS and m.low is not None and m.high is not None and m.low < m.high
        for c in m.codes:
            assert c.system in (codes.LOINC, codes.SNOMED) and c.source


@pytest.mark.parametrize(
    ("key", "code", "sent"),
    [
        ("pain_nrs", "72514-3", True),
        ("pain_vas", "38214-3", False),
        ("pain_vas", "446661009", True),
        ("six_min_walk_distance", "64098-7", False),
        ("tug_time", "89423-8", True),
        ("odi_score", "97909-6", True),
        ("berg_balance_total", "404933001", True),
        ("chair_stand_30s", "66247-8", True),
        ("steps_daily", "41950-7", True),
    ],
)
def test_reference_statuses(key: str, code: str, sent: bool) -> None:
    (std,) = [c for c in catalog.BY_KEY[key].codes if c.code == code]
    assert std.sent is sent


def test_unverified_measures_carry_only_our_code() -> None:
    for key in (
        "lefs_total",
        "ndi_score",
        "quickdash_score",
        "fga_total",
        "dgi_total",
        "gait_speed_10mwt",
        "five_times_sit_to_stand",
        "modified_ashworth",
        "six_min_walk_distance",
    ):
        finding = _findings(catalog.BY_KEY[key])[0]
        obs = build_observation(schemas.load(schemas.FindingSchema(), finding), "p1", "2026-11-20")
        assert [c["system"] for c in obs["code"]["coding"]] == [codes.PT], key


def test_sided_and_protocol_specific_codes() -> None:
    def coded(**finding: Any) -> list[str]:
        obs = build_observation(schemas.load(schemas.FindingSchema(), finding), "p1", "2026-11-20")
        return [c["code"] for c in obs["code"]["coding"] if c["system"] != codes.PT]

    assert coded(measure="grip_strength", value=30, unit="kg", side="left") == ["83173-5", "251433001"]
    assert coded(measure="grip_strength", value=30, unit="kg", side="right") == ["83174-3", "251433001"]
    assert coded(measure="grip_strength", value=30, unit="kg") == ["251433001"]
    assert coded(measure="single_leg_stance", value=12, unit="s", side="left") == []
    assert coded(measure="single_leg_stance", value=12, unit="s", side="left", protocol="phenx-170801") == [
        "66569-5"
    ]
    assert coded(measure="promis_pf_tscore", value=45, protocol="promis-29") == ["71959-1"]


@pytest.mark.parametrize(
    ("finding", "stored", "canonical"),
    [
        # the entered value and unit are kept (as the UCUM code); progress converts on read
        ({"measure": "grip_strength", "value": 10, "unit": "[lb_av]"}, (10, "[lbf_av]"), 4.535924),
        ({"measure": "grip_strength", "value": 66, "unit": "lbf"}, (66, "[lbf_av]"), 29.937096),
        ({"measure": "grip_strength", "value": 30, "unit": "kg"}, (30, "kgf"), 30),
        ({"measure": "grip_strength", "value": 98.0665, "unit": "N"}, (98.0665, "N"), 10),
        ({"measure": "tug_time", "value": 12500, "unit": "ms"}, (12500, "ms"), 12.5),
        ({"measure": "gait_speed_10mwt", "value": 3.6, "unit": "km/h"}, (3.6, "km/h"), 1),
        ({"measure": "six_min_walk_distance", "value": 1200, "unit": "ft"}, (1200, "[ft_i]"), 365.76),
        ({"measure": "pain_vas", "value": 4.5, "unit": "cm"}, (4.5, "cm"), 45),
        ({"measure": "surface_emg", "value": 0.25, "unit": "mV"}, (0.25, "mV"), 250),
        ({"measure": "exercise_minutes", "value": 1.5, "unit": "h"}, (1.5, "h"), 90),
        ({"measure": "joint_rom_knee_flexion", "value": 95, "unit": "°", "side": "left"}, (95, "deg"), 95),
        ({"measure": "pain_nrs", "value": 4}, (4, "{score}"), 4),
    ],
)
def test_units_kept_as_entered_and_convert_on_read(
    finding: dict[str, Any], stored: tuple[float, str], canonical: float
) -> None:
    loaded = schemas.load(schemas.FindingSchema(), finding)
    assert (loaded["value"], loaded["unit"]) == stored
    obs = build_observation(loaded, "p1", "2026-11-20")
    q = obs["valueQuantity"]
    assert (q["value"], q["code"], q["system"]) == (*stored, codes.UCUM)
    measure = catalog.BY_KEY[finding["measure"]]
    assert measure.unit is not None
    assert convert(q["value"], q["code"], measure.unit) == canonical


def test_grip_strength_is_a_force() -> None:
    # LOINC 83173-5 / 83174-3 report [lbf_av]: grip is stored and compared as a force, never a mass
    assert catalog.BY_KEY["grip_strength"].unit == "kgf"
    loaded = schemas.load(schemas.FindingSchema(), {"measure": "grip_strength", "value": 50, "unit": "lb"})
    assert build_observation(loaded, "p1", "2026-11-20")["valueQuantity"]["code"] == "[lbf_av]"


@pytest.mark.parametrize(
    ("finding", "message"),
    [
        ({"measure": "tug_time", "value": 12}, "tug_time needs a unit: one of s, sec, seconds, ms, min"),
        ({"measure": "grip_strength", "value": 30}, "grip_strength needs a unit"),
        ({"measure": "joint_rom_knee_flexion", "value": 90, "side": "left"}, "needs a unit"),
    ],
    ids=["tug", "grip", "rom"],
)
def test_missing_unit_is_400_unless_the_measure_has_one_unit(finding: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        schemas.load(schemas.FindingSchema(), finding)
    assert list(err.value.expression) == ["unit"] and message in err.value.diagnostics
    # a score has exactly one unit: no unit needed
    assert schemas.load(schemas.FindingSchema(), {"measure": "odi_score", "value": 40})["unit"] == "{score}"


def test_plain_fhir_variants_are_read() -> None:
    # valueInteger pain, R4B core laterality codes, an unknown code, an unconvertible unit
    obs = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": codes.LOINC, "code": "72514-3"}]},
        "valueInteger": 5,
    }
    assert read_observation(obs) == {"measure": "pain_nrs", "value": 5, "unit": "{score}"}
    lat = {
        "extension": [
            {
                "url": codes.LATERALITY_EXT,
                "valueCodeableConcept": {"coding": [{"system": codes.SNOMED, "code": "419465000"}]},
            }
        ]
    }
    obs = {
        "code": {"coding": [{"system": codes.SNOMED, "code": "251433001"}]},
        "bodySite": lat,
        "valueQuantity": {"value": 30, "code": "kg"},
    }
    assert read_observation(obs) == {"measure": "grip_strength", "value": 30, "unit": "kg", "side": "right"}
    assert (
        read_observation(
            {"code": {"coding": [{"system": codes.LOINC, "code": "1-8"}]}, "valueQuantity": {"value": 1}}
        )
        is None
    )
    # read as stored: whether a unit converts is for progress to judge (it lists the point as excluded)
    assert read_observation(
        {
            "code": {"coding": [{"system": codes.LOINC, "code": "89423-8"}]},
            "valueQuantity": {"value": 1, "code": "kg"},
        }
    ) == {"measure": "tug_time", "value": 1, "unit": "kg"}
    # 364564000 alone is every joint's ROM: not enough to know which
    assert (
        read_observation(
            {
                "code": {"coding": [{"system": codes.SNOMED, "code": "364564000"}]},
                "valueQuantity": {"value": 90, "code": "deg"},
            }
        )
        is None
    )
