"""Input rules (dates, sides, sensor ranges, session note) and session coding (CPT/HCPCS, 8-minute rule)."""

from __future__ import annotations

import copy
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from marshmallow import Schema

from fhir_mapping import billing
from fhir_mapping import codes
from fhir_mapping import outcomes
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from fhir_mapping.transaction import of_role
from server.errors import InvalidRequestError
from tests.functional.test_rehab import ASSESSMENT
from tests.functional.test_rehab import OUTCOME
from tests.functional.test_rehab import PLAN
from tests.functional.test_rehab import SERIES
from tests.functional.test_rehab import SESSION

AHEAD = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
SOON = (datetime.now(UTC) + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(schema: Schema, body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as err:
        schemas.load(schema, body)
    return err.value


@pytest.mark.parametrize(
    ("schema", "body", "path", "words"),
    [
        (schemas.AssessmentSchema(), {**ASSESSMENT, "date": "2026-02-30"}, "date", "not a calendar date"),
        (schemas.AssessmentSchema(), {**ASSESSMENT, "date": "2026-02-30T10:00:00Z"}, "date", "calendar"),
        (schemas.AssessmentSchema(), {**ASSESSMENT, "date": "2031-01-01T10:00:00Z"}, "date", "in the future"),
        (schemas.AssessmentSchema(), {**ASSESSMENT, "date": AHEAD}, "date", "more than a day in the future"),
        (outcomes.OutcomeSchema(), {**OUTCOME, "date": AHEAD}, "date", "in the future"),
        (sessions.SessionSchema(), {**SESSION, "date": AHEAD}, "date", "in the future"),
        (sessions.SessionSchema(), {**SESSION, "date": "2026-02-30T09:00:00Z"}, "date", "Not a valid"),
        (sensors.SensorSeriesSchema(), {**SERIES, "date": AHEAD}, "date", "in the future"),
        (schemas.PlanSchema(), {**PLAN, "date": "2026-02-30"}, "date", "calendar"),
        (
            schemas.PlanSchema(),
            {**PLAN, "goals": [{**PLAN["goals"][0], "due": "2026-11-01"}]},
            "goals[0].due",
            "2026-11-01 is not after the plan start 2026-11-20",
        ),
        (
            schemas.PlanSchema(),
            {**PLAN, "goals": [{**PLAN["goals"][0], "due": "2027-02-29"}]},
            "goals[0].due",
            "calendar",
        ),
        (
            schemas.AssessmentSchema(),
            {
                **ASSESSMENT,
                "findings": [{"measure": "grip_strength", "value": 30, "unit": "kg", "side": "bilateral"}],
            },
            "findings[0].side",
            "a value is measured on one side",
        ),
        (
            schemas.AssessmentSchema(),
            {**ASSESSMENT, "findings": [{"measure": "tug_time", "value": 12, "unit": "s", "side": "left"}]},
            "findings[0].side",
            "not a sided measure",
        ),
        (
            sensors.SensorSeriesSchema(),
            {**SERIES, "channels": [{"side": "left", "samples": [100, 20000, -30000]}]},
            "channels[0].samples",
            "Sample 1 (20000 uV) is outside -10000 to 10000 uV",
        ),
        (
            sensors.SensorSeriesSchema(),
            {**SERIES, "unit": "mV", "channels": [{"side": "left", "samples": [0.1, -30]}]},
            "channels[0].samples",
            "Sample 1 (-30 mV)",
        ),
        (
            sensors.SensorSeriesSchema(),
            {**SERIES, "channels": [{"side": "bilateral", "samples": [1]}]},
            "channels[0].side",
            "Must be one of",
        ),
        (
            sessions.SessionSchema(),
            {
                **SESSION,
                "interventions": [{"cpt": "97112", "modality": "electrical_stimulation", "minutes": 10}],
            },
            "interventions[0].cpt",
            "97112 does not bill electrical_stimulation: use one of ['97032', '97014', 'G0283']",
        ),
        (
            sessions.SessionSchema(),
            {**SESSION, "interventions": [{"cpt": "97110", "modality": "laser", "minutes": 10}]},
            "interventions[0].cpt",
            "no verified code bills it",
        ),
    ],
    ids=[
        "feb-30",
        "feb-30-time",
        "2031",
        "two-days-ahead",
        "outcome-ahead",
        "session-ahead",
        "session-feb-30",
        "sensor-ahead",
        "plan-feb-30",
        "goal-before-plan",
        "goal-feb-29-2027",
        "bilateral-grip",
        "side-on-unsided",
        "semg-range",
        "semg-range-mV",
        "channel-bilateral",
        "estim-billed-as-97112",
        "laser-with-cpt",
    ],
)
def test_input_rules_are_400_naming_the_field(
    schema: Schema, body: dict[str, Any], path: str, words: str
) -> None:
    err = _error(schema, {"patient": "p1", **copy.deepcopy(body)})
    assert path in list(err.expression), err.expression
    assert words in err.diagnostics or any(words in i["diagnostics"] for i in err.issues), err.diagnostics


def test_a_date_within_a_day_ahead_is_accepted() -> None:
    # clock skew and time zones: up to a day ahead is still "now" somewhere
    loaded = schemas.load(schemas.AssessmentSchema(), {"patient": "p1", **ASSESSMENT, "date": SOON})
    assert loaded["date"] == SOON
    # a goal is due ahead of course, and a plan may start ahead (it is an intent)
    schemas.load(schemas.PlanSchema(), {"patient": "p1", **PLAN, "date": "2027-01-01", "goals": []})


def test_session_note_is_a_note_not_the_reason_for_the_visit() -> None:
    loaded = schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION, "note": "tolerated well"})
    entries = sessions.build_session(loaded)
    enc = of_role(entries, "encounter")[0]
    assert "reasonCode" not in enc
    assert all(p["note"] == [{"text": "tolerated well"}] for p in of_role(entries, "procedure"))
    assert sessions.read_session(entries)["note"] == "tolerated well"


def test_pain_before_and_after_are_marked_pre_and_post_treatment() -> None:
    entries = sessions.build_session(schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION}))
    for role, timing in (("pain_before", "pre-treatment"), ("pain_after", "post-treatment")):
        (obs,) = of_role(entries, role)
        assert {"url": codes.EXT_SESSION_TIMING, "valueCode": timing} in obs["extension"]


def test_performer_is_recorded_when_the_token_names_a_practitioner() -> None:
    assert sessions.performer_of("Practitioner/pt1") == "Practitioner/pt1"
    assert sessions.performer_of("https://ehr.example/fhir/Practitioner/pt1") == "Practitioner/pt1"
    assert sessions.performer_of("Patient/p1") is None and sessions.performer_of(None) is None
    loaded = schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION})
    entries = sessions.build_session(loaded, performer="Practitioner/pt1")
    for e in entries:
        get_fhir_model_class(e.resource["resourceType"]).model_validate(e.resource)
    who = {"reference": "Practitioner/pt1"}
    assert of_role(entries, "encounter")[0]["participant"] == [{"individual": who}]
    assert all(p["performer"] == [{"actor": who}] for p in of_role(entries, "procedure"))
    assert of_role(entries, "pain_after")[0]["performer"] == [who]
    assert sessions.read_session(entries) == loaded
    assert "performer" not in of_role(sessions.build_session(loaded), "procedure")[0]


@pytest.mark.parametrize(
    ("cpt", "modality", "system", "kind"),
    [
        ("97032", "electrical_stimulation", codes.CPT, "attended-modality"),
        ("97014", "electrical_stimulation", codes.CPT, "supervised-modality"),
        ("G0283", "electrical_stimulation", codes.HCPCS, "supervised-modality"),
        ("97035", "ultrasound", codes.CPT, "attended-modality"),
        ("97010", "cryotherapy", codes.CPT, "supervised-modality"),
        ("97161", None, codes.CPT, "evaluation"),
        ("97164", None, codes.CPT, "evaluation"),
        ("97530", None, codes.CPT, "procedure"),
    ],
)
def test_codes_one_meaning_per_concept(cpt: str, modality: str | None, system: str, kind: str) -> None:
    item = {"cpt": cpt, "minutes": 15, **({"modality": modality} if modality else {})}
    loaded = schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION, "interventions": [item]})
    (proc,) = of_role(sessions.build_session(loaded), "procedure")
    get_fhir_model_class("Procedure").model_validate(proc)
    assert [(c["system"], c["code"]) for c in proc["code"]["coding"]] == [(system, cpt)]
    assert billing.BY_CODE[cpt].kind == kind and billing.BY_CODE[cpt].source
    modalities = [e for e in proc.get("extension") or [] if e["url"] == codes.EXT_MODALITY]
    assert len(modalities) == (1 if modality else 0)


def test_every_code_has_a_source_and_a_billing_kind() -> None:
    for c in billing.PROCEDURE_CODES:
        assert c.source and c.status == "verified-secondary", c.code
        assert c.timed == (c.kind in ("procedure", "attended-modality")), c.code
    assert {"97161", "97162", "97163", "97164", "97110", "97112", "97116", "97140", "97530"} <= set(
        billing.BY_CODE
    )


@pytest.mark.parametrize(
    ("performed", "expected", "total"),
    [
        # the worked examples of Claims Processing Manual ch. 5 §20.2, recomputed by hand:
        # 24 + 23 = 47 min -> 3 units; one full unit each, the third to the larger rest (9 > 8)
        ([("97112", 24), ("97110", 23)], {"97112": 2, "97110": 1}, 3),
        # 33 + 7 = 40 min -> 3 units; 97110 has two full units (rest 3), 97140's 7 min beat 3
        ([("97110", 33), ("97140", 7)], {"97110": 2, "97140": 1}, 3),
        # 18 + 13 + 10 + 8 = 49 min -> 3 units: 97110 one full, then the rests 13 and 10 win over 8 and 3
        (
            [("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
            {"97110": 1, "97140": 1, "97116": 1},
            3,
        ),
        # 7 min alone is not billed; two 7 min services make 14 min = 1 unit, to the first performed
        ([("97110", 7)], {}, 0),
        ([("97110", 7), ("97140", 7)], {"97110": 1}, 1),
        # 22 min -> 1 unit, 23 min -> 2 units
        ([("97112", 22)], {"97112": 1}, 1),
        ([("97112", 23)], {"97112": 2}, 2),
        # untimed codes are one unit each whatever their minutes, outside the timed total
        ([("97161", 45), ("G0283", 15), ("97110", 10)], {"97161": 1, "G0283": 1, "97110": 1}, 1),
        # the same code twice in a session adds up: 10 + 10 = 20 min -> 1 unit
        ([("97110", 10), ("97110", 10)], {"97110": 1}, 1),
    ],
    ids=["cms-47", "cms-40", "cms-49", "7-min", "7-plus-7", "22-min", "23-min", "untimed", "same-code"],
)
def test_billing_units_by_the_8_minute_rule(
    performed: list[tuple[str, int]], expected: dict[str, int], total: int
) -> None:
    got = billing.units(performed)
    assert {line["code"]: line["units"] for line in got["lines"]} == expected
    assert got["timed_units"] == total


def test_session_billing_is_read_from_the_stored_procedures() -> None:
    # SESSION: 97112 15 min, 97032 10 min, ultrasound without a code: 25 timed minutes -> 2 units
    entries = sessions.build_session(schemas.load(sessions.SessionSchema(), {"patient": "p1", **SESSION}))
    got = sessions.read_billing(entries)
    assert got["timed_minutes"] == 25 and got["timed_units"] == 2
    assert [(line["code"], line["units"]) for line in got["lines"]] == [("97112", 1), ("97032", 1)]
