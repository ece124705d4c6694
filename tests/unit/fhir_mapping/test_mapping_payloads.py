"""Every endpoint payload: builds resources fhir.resources validates, and reads back exactly (the inverse)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from marshmallow import Schema

from fhir_mapping import assessments
from fhir_mapping import codes
from fhir_mapping import outcomes
from fhir_mapping import plans
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import bundle
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import references
from server.errors import InvalidRequestError
from tests.functional.test_rehab import ASSESSMENT
from tests.functional.test_rehab import OUTCOME
from tests.functional.test_rehab import PLAN
from tests.functional.test_rehab import SERIES
from tests.functional.test_rehab import SESSION

GRADED = {
    "patient": "p1",
    "date": "2026-11-20",
    "goals": [
        {
            "measure": "modified_ashworth",
            "target": "1",
            "side": "right",
            "body_site": "gastrocnemius",
            "description": "Tone down to 1",
        },
        {
            "measure": "single_leg_stance",
            "target": 25,
            "unit": "s",
            "side": "left",
            "protocol": "phenx-170801",
        },
        {"measure": "grip_strength", "target": 30, "unit": "kg", "side": "left"},
    ],
}

ENDPOINTS: list[tuple[str, Schema, Any, Any, dict[str, Any]]] = [
    (
        "assessment",
        schemas.AssessmentSchema(),
        assessments.build_assessment,
        assessments.read_assessment,
        {"patient": "p1", **ASSESSMENT, "title": "Initial evaluation"},
    ),
    ("plan", schemas.PlanSchema(), plans.build_plan, plans.read_plan, {"patient": "p1", **PLAN}),
    ("plan-graded", schemas.PlanSchema(), plans.build_plan, plans.read_plan, GRADED),
    (
        "plan-exercises-only",
        schemas.PlanSchema(),
        plans.build_plan,
        plans.read_plan,
        {
            "patient": "p1",
            "date": "2026-11-20",
            "exercises": [{"exercise": "Walking", "frequency": {"times": 5, "period_unit": "wk"}}],
        },
    ),
    (
        "session",
        sessions.SessionSchema(),
        sessions.build_session,
        sessions.read_session,
        {"patient": "p1", **SESSION, "note": "tolerated well"},
    ),
    (
        "session-modalities",
        sessions.SessionSchema(),
        sessions.build_session,
        sessions.read_session,
        {
            "patient": "p1",
            "date": "2026-11-21T09:00:00+02:00",
            "interventions": [
                {
                    "modality": "cryotherapy",
                    "minutes": 10,
                    "body_site": "knee",
                    "side": "left",
                    "parameters": [{"parameter": "temperature", "value": 10, "unit": "Cel"}],
                },
                {
                    "modality": "laser",
                    "minutes": 5,
                    "parameters": [
                        {"parameter": "wavelength", "value": 810, "unit": "nm"},
                        {"parameter": "energy_density", "value": 4, "unit": "J/cm2"},
                    ],
                },
                {
                    "modality": "biofeedback",
                    "minutes": 15,
                    "parameters": [{"parameter": "threshold", "value": 0.05, "unit": "mV"}],
                },
                {"cpt": "97110", "minutes": 15},
                {"cpt": "97116", "minutes": 10},
                {"cpt": "97140", "minutes": 8},
                {"cpt": "97530", "minutes": 8},
            ],
        },
    ),
    *[
        (
            f"outcome-{key}",
            outcomes.OutcomeSchema(),
            outcomes.build_outcome,
            outcomes.read_outcome,
            {
                "patient": "p1",
                "date": "2026-11-20T08:00:00Z",
                "instrument": key,
                "items": {str(i): spec.low for i in range(1, spec.items + 1)},
            },
        )
        for key, spec in outcomes.INSTRUMENTS.items()
    ],
    (
        "outcome",
        outcomes.OutcomeSchema(),
        outcomes.build_outcome,
        outcomes.read_outcome,
        {"patient": "p1", **OUTCOME},
    ),
    (
        "sensor-series",
        sensors.SensorSeriesSchema(),
        sensors.build_series,
        sensors.read_series,
        {"patient": "p1", **SERIES},
    ),
    (
        "sensor-imu",
        sensors.SensorSeriesSchema(),
        sensors.build_series,
        sensors.read_series,
        {
            "patient": "p1",
            "date": "2026-11-20T10:00:00Z",
            "kind": "imu_joint_angle",
            "device": {"name": "IMU"},
            "body_site": "knee",
            "period_ms": 10,
            "unit": "deg",
            "channels": [{"side": "left", "samples": [0, 10.5, 45, 90]}],
        },
    ),
    (
        "sensor-sway",
        sensors.SensorSeriesSchema(),
        sensors.build_series,
        sensors.read_series,
        {
            "patient": "p1",
            "date": "2026-11-20T10:00:00Z",
            "kind": "force_plate_sway",
            "unit": "cm",
            "device": {"name": "Plate", "manufacturer": "ACME", "model": "FP1"},
            "period_ms": 10,
            "channels": [{"samples": [0.1, -0.2, 0.15]}],
        },
    ),
]


def _validate(entries: list[Entry]) -> None:
    for e in entries:
        get_fhir_model_class(e.resource["resourceType"]).model_validate(e.resource)


@pytest.mark.parametrize(
    ("schema", "build", "read", "payload"), [e[1:] for e in ENDPOINTS], ids=[e[0] for e in ENDPOINTS]
)
def test_round_trip(schema: Schema, build: Any, read: Any, payload: dict[str, Any]) -> None:
    loaded = schemas.load(schema, copy.deepcopy(payload))
    entries = build(copy.deepcopy(loaded))
    _validate(entries)
    assert read(entries) == loaded
    tx = bundle(entries)
    get_fhir_model_class("Bundle").model_validate(tx)
    assert all(e["request"]["method"] == "POST" for e in tx["entry"])


def test_session_codes_and_parameters() -> None:
    loaded = schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION})
    entries = sessions.build_session(loaded)
    estim = of_role(entries, "procedure")[1]
    # one meaning per CodeableConcept: the billed code alone in code, the modality in its own element
    assert estim["code"]["coding"] == [
        {
            "system": "http://www.ama-assn.org/go/cpt",
            "code": "97032",
            "display": "Electrical stimulation, attended (manual)",
        }
    ]
    assert estim["category"]["coding"][0]["code"] == "91251008"
    modality, first = estim["extension"][0], estim["extension"][1]
    assert modality["url"] == codes.EXT_MODALITY
    assert modality["valueCodeableConcept"]["coding"] == [
        {"system": codes.PT, "code": "modality-electrical_stimulation", "display": "Electrical stimulation"}
    ]
    assert first["url"] == codes.EXT_PARAMETER
    assert first["extension"][1]["valueQuantity"] == {
        "value": 35,
        "unit": "Hz",
        "system": codes.UCUM,
        "code": "Hz",
    }
    # laid end to end: 09:00-09:15 then 09:15-09:25
    assert estim["performedPeriod"] == {"start": "2026-11-21T09:15:00Z", "end": "2026-11-21T09:25:00Z"}
    enc = of_role(entries, "encounter")[0]
    assert enc["period"] == {"start": "2026-11-21T09:00:00Z", "end": "2026-11-21T09:33:00Z"}
    assert of_role(entries, "pain_after")[0]["effectiveDateTime"] == "2026-11-21T09:33:00Z"


def test_series_summaries_hand_computed() -> None:
    loaded = schemas.load(sensors.SensorSeriesSchema(), {"patient": "p1", **SERIES})
    entries = sensors.build_series(loaded)
    left = of_role(entries, "series")[0]
    assert left["valueSampledData"]["data"] == "100 -200 300"
    assert left["effectivePeriod"]["end"] == "2026-11-20T10:00:00.003Z"  # 3 samples of 1 ms
    summaries = sensors.read_summaries(entries)
    values = {(s["stat"], s.get("side")): s["value"] for s in summaries}
    # left: peak |300|, mean 200/3, RMS sqrt((1e4 + 4e4 + 9e4) / 3) = 216.0247
    assert values[("peak", "left")] == 300 and values[("mean", "left")] == 66.6667
    assert values[("rms", "left")] == 216.0247
    # right RMS sqrt((1e4 + 1e4 + 4e4) / 3) = 141.4214; SI |216.0247 - 141.4214| / 178.72305 x 100 = 41.74
    assert values[("rms", "right")] == 141.4214 and values[("symmetry-index", None)] == 41.74
    sym = of_role(entries, "summary")[-1]
    assert [d["reference"] for d in sym["derivedFrom"]] == [e.full_url for e in entries if e.role == "series"]


def test_references_follow_transaction_response_order() -> None:
    loaded = schemas.load(schemas.AssessmentSchema(), {"patient": "p1", **ASSESSMENT})
    entries = assessments.build_assessment(loaded)
    response = {
        "entry": [
            {"response": {"location": f"{e.resource['resourceType']}/{i}/_history/1"}}
            for i, e in enumerate(entries)
        ]
    }
    refs = references(entries, response)
    assert refs["encounter"] == ["Encounter/0"] and refs["panel"] == [f"Observation/{len(entries) - 1}"]
    assert refs["finding"] == [f"Observation/{i}" for i in range(1, len(entries) - 1)]


@pytest.mark.parametrize(
    ("schema", "body", "path"),
    [
        (
            schemas.AssessmentSchema(),
            {"date": "2026-11-20", "findings": [{"measure": "pain_nrs", "value": 1}]},
            "patient",
        ),
        (
            schemas.AssessmentSchema(),
            {"patient": "p1", "date": "20-11-2026", "findings": [{"measure": "pain_nrs", "value": 1}]},
            "date",
        ),
        (schemas.AssessmentSchema(), {"patient": "p1", "date": "2026-11-20", "findings": []}, "findings"),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [{"measure": "pain_nrs", "value": 1, "colour": "red"}],
            },
            "findings[0].colour",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [
                    {"measure": "pain_nrs", "value": 1},
                    {"measure": "joint_rom_knee_flexion", "value": 200, "unit": "deg", "side": "left"},
                ],
            },
            "findings[1].value",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [
                    {"measure": "mmt_grade", "value": "6", "side": "left", "body_site": "quadriceps"}
                ],
            },
            "findings[0].value",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [{"measure": "mmt_grade", "value": "4", "side": "left"}],
            },
            "findings[0].body_site",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [{"measure": "grip_strength", "value": 30, "body_site": "knee"}],
            },
            "findings[0].body_site",
        ),
        (
            schemas.AssessmentSchema(),
            {"patient": "p1", "date": "2026-11-20", "findings": [{"measure": "pain_nrs", "value": 4.5}]},
            "findings[0].value",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [
                    {
                        "measure": "single_leg_stance",
                        "value": 40,
                        "unit": "s",
                        "side": "left",
                        "protocol": "phenx-170801",
                    }
                ],
            },
            "findings[0].value",
        ),
        (
            schemas.AssessmentSchema(),
            {
                "patient": "p1",
                "date": "2026-11-20",
                "findings": [{"measure": "tug_time", "value": 10, "protocol": "phenx-170801"}],
            },
            "findings[0].protocol",
        ),
        (schemas.PlanSchema(), {"patient": "p1", "date": "2026-11-20"}, "exercises"),
        (
            sessions.SessionSchema(),
            {
                "patient": "p1",
                "date": "2026-11-21T09:00:00",
                "interventions": [{"cpt": "97112", "minutes": 15}],
            },
            "date",
        ),
        (
            sessions.SessionSchema(),
            {"patient": "p1", "date": "2026-11-21T09:00:00Z", "interventions": [{"minutes": 15}]},
            "interventions[0].cpt",
        ),
        (
            sessions.SessionSchema(),
            {
                "patient": "p1",
                "date": "2026-11-21T09:00:00Z",
                "interventions": [
                    {
                        "modality": "cryotherapy",
                        "minutes": 15,
                        "parameters": [{"parameter": "frequency", "value": 1, "unit": "Hz"}],
                    }
                ],
            },
            "interventions[0].parameters[0].parameter",
        ),
        (sensors.SensorSeriesSchema(), {"patient": "p1", **SERIES, "unit": "deg"}, "unit"),
        (
            sensors.SensorSeriesSchema(),
            {
                "patient": "p1",
                **SERIES,
                "channels": [{"side": "left", "samples": [1]}, {"side": "left", "samples": [2]}],
            },
            "channels[1].side",
        ),
    ],
)
def test_errors_name_the_field(schema: Schema, body: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        schemas.load(schema, body)
    assert path in list(err.value.expression), err.value.expression
    assert err.value.diagnostics.startswith(err.value.expression[0])
