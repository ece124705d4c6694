"""/rehab end to end: each POST is one transaction, answered with the clinic view and references;
bad input is a 400 naming the field with nothing stored; progress reads any coded Observation;
terminology resources, $lookup and $translate."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from fhir_mapping import codes
from fhir_mapping import outcomes
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from server.api.rehab_routes import seed_terminology
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code

JSON = "application/json"

ASSESSMENT = {
    "date": "2026-11-20T10:00:00Z",
    "findings": [
        {
            "measure": "joint_rom_knee_flexion",
            "value": 95,
            "unit": "deg",
            "side": "left",
            "method": "active",
            "device": "goniometer",
        },
        {"measure": "pain_nrs", "value": 6},
        {"measure": "tug_time", "value": 14.2, "unit": "s", "assistive_device": "cane"},
        {"measure": "grip_strength", "value": 50, "unit": "lb", "side": "right"},
        {"measure": "mmt_grade", "value": "4+", "side": "left", "body_site": "quadriceps"},
    ],
}
PLAN = {
    "date": "2026-11-20",
    "title": "Knee rehab",
    "goals": [
        {
            "measure": "joint_rom_knee_flexion",
            "side": "left",
            "target": 120,
            "unit": "deg",
            "due": "2027-01-15",
        }
    ],
    "exercises": [
        {
            "exercise": "Bridges",
            "sets": 3,
            "reps": 10,
            "hold": {"value": 5, "unit": "s"},
            "load": {"value": 2, "unit": "kg"},
            "frequency": {"times": 1, "period": 1, "period_unit": "d"},
            "progression": "add 1 kg weekly",
            "instructions": "Slow and controlled",
        }
    ],
}
SESSION = {
    "date": "2026-11-21T09:00:00Z",
    "interventions": [
        {"cpt": "97112", "minutes": 15, "description": "balance training"},
        {
            "cpt": "97032",
            "modality": "electrical_stimulation",
            "minutes": 10,
            "parameters": [
                {"parameter": "frequency", "value": 35, "unit": "Hz"},
                {"parameter": "pulse_width", "value": 250, "unit": "us"},
                {"parameter": "current", "value": 20, "unit": "mA"},
            ],
        },
        {
            "modality": "ultrasound",
            "minutes": 8,
            "parameters": [
                {"parameter": "frequency", "value": 1, "unit": "MHz"},
                {"parameter": "intensity", "value": 1.5, "unit": "W/cm2"},
                {"parameter": "duty_cycle", "value": 20, "unit": "%"},
            ],
        },
    ],
    "pain_before": 6,
    "pain_after": 4,
}
OUTCOME = {"date": "2026-11-20", "instrument": "lefs", "items": {str(i): 3 for i in range(1, 21)}}
SERIES = {
    "date": "2026-11-20T10:00:00Z",
    "kind": "surface_emg",
    "device": {"name": "Trigno", "serial": "SN1"},
    "body_site": "quadriceps",
    "period_ms": 1,
    "unit": "uV",
    "channels": [
        {"side": "left", "samples": [100, -200, 300]},
        {"side": "right", "samples": [100, 100, 200]},
    ],
}


SCHEMAS = {
    "/rehab/assessments": schemas.AssessmentSchema(),
    "/rehab/plans": schemas.PlanSchema(),
    "/rehab/sessions": sessions.SessionSchema(),
    "/rehab/outcomes": outcomes.OutcomeSchema(),
    "/rehab/sensor-series": sensors.SensorSeriesSchema(),
}


def _patient(fhir: FhirClient) -> str:
    return str(fhir.create({"resourceType": "Patient", "name": [{"family": "Rehab"}]})["id"])


def _post(fhir: FhirClient, path: str, body: dict[str, Any]) -> Any:
    return fhir.call("POST", path, body, content_type=JSON)


def _count(fhir: FhirClient, type_: str) -> int:
    return int(fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"])


@pytest.mark.parametrize(
    ("path", "payload", "roles"),
    [
        ("/rehab/assessments", ASSESSMENT, {"encounter": 1, "finding": 5, "panel": 1}),
        ("/rehab/plans", PLAN, {"goal": 1, "careplan": 1}),
        ("/rehab/sessions", SESSION, {"encounter": 1, "procedure": 3, "pain_before": 1, "pain_after": 1}),
        ("/rehab/outcomes", OUTCOME, {"questionnaire_response": 1, "score": 1}),
        ("/rehab/sensor-series", SERIES, {"device": 1, "series": 2, "summary": 7}),
    ],
    ids=["assessment", "plan", "session", "outcome", "sensor-series"],
)
def test_post_stores_one_transaction_and_answers_view(
    fhir: FhirClient, path: str, payload: dict[str, Any], roles: dict[str, int]
) -> None:
    patient = _patient(fhir)
    r = _post(fhir, path, {"patient": patient, **payload})
    assert r.status_code == 201, r.get_data(as_text=True)
    body = r.get_json()
    assert body["patient"] == patient
    assert {k: len(v) for k, v in body["references"].items()} == roles
    # the view is the payload in canonical form (the reverse mapping of what was stored)
    view = {k: v for k, v in body.items() if k not in ("references", "score", "summaries", "billing")}
    assert view == schemas.load(SCHEMAS[path], {"patient": patient, **payload})
    for refs in body["references"].values():
        for ref in refs:
            read = fhir.call("GET", f"/{ref}")
            assert read.status_code == 200, ref
            stored = read.get_json()
            assert stored["resourceType"] == ref.split("/")[0]
            target = (stored.get("subject") or stored.get("patient") or {}).get("reference")
            assert target == f"Patient/{patient}"


def test_assessment_view_in_canonical_units_and_links(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    body = _post(fhir, "/rehab/assessments", {"patient": f"Patient/{patient}", **ASSESSMENT}).get_json()
    grip = body["findings"][3]
    # kept as entered (50 lb on a dynamometer dial is 50 pound-force), unit as its UCUM code
    assert grip == {"measure": "grip_strength", "value": 50, "unit": "[lbf_av]", "side": "right"}
    panel = fhir.call("GET", f"/{body['references']['panel'][0]}").get_json()
    assert [m["reference"] for m in panel["hasMember"]] == body["references"]["finding"]
    assert panel["encounter"]["reference"] == body["references"]["encounter"][0]
    rom = fhir.call("GET", f"/{body['references']['finding'][0]}").get_json()
    assert rom["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "7771000"
    assert rom["category"][0]["coding"][0]["code"] == "exam"


def test_plain_fhir_client_sees_standard_codes(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    _post(fhir, "/rehab/assessments", {"patient": patient, **ASSESSMENT})
    for system, code in (
        (codes.LOINC, "72514-3"),
        (codes.LOINC, "89423-8"),
        (codes.LOINC, "83174-3"),
        (codes.SNOMED, "364564000"),
    ):
        bundle = fhir.call("GET", f"/Observation?code={system}|{code}&subject=Patient/{patient}").get_json()
        assert bundle["total"] == 1 if "total" in bundle else len(bundle.get("entry", [])) == 1
        assert len(bundle["entry"]) == 1, (code, bundle)
    # MMT has no verified code: only ours goes out.
    bundle = fhir.call("GET", f"/Observation?code={codes.PT}|mmt_grade").get_json()
    (entry,) = bundle["entry"]
    assert [c["system"] for c in entry["resource"]["code"]["coding"]] == [codes.PT]
    procs = fhir.call("GET", f"/Procedure?code={codes.CPT}|97112").get_json()
    assert "entry" not in procs or procs["entry"] == []


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("/rehab/assessments", {"findings": [{"measure": "knee_magic", "value": 1}]}, "findings[0].measure"),
        ("/rehab/assessments", {"findings": [{"measure": "pain_nrs", "value": 11}]}, "findings[0].value"),
        (
            "/rehab/assessments",
            {"findings": [{"measure": "tug_time", "value": 12, "unit": "kg"}]},
            "findings[0].unit",
        ),
        (
            "/rehab/assessments",
            {"findings": [{"measure": "tug_time", "value": 12, "side": "left"}]},
            "findings[0].side",
        ),
        (
            "/rehab/assessments",
            {"findings": [{"measure": "joint_rom_knee_flexion", "value": 90}]},
            "findings[0].side",
        ),
        ("/rehab/assessments", {"patient": None}, "patient"),
        ("/rehab/assessments", {"patient": "does-not-exist"}, "patient"),
        (
            "/rehab/plans",
            {"goals": [{"measure": "pain_nrs", "target": 20}], "exercises": []},
            "goals[0].target",
        ),
        (
            "/rehab/plans",
            {"exercises": [{"exercise": "Bridges", "load": {"value": 2, "unit": "Hz"}}]},
            "exercises[0].load.unit",
        ),
        ("/rehab/sessions", {"interventions": [{"cpt": "99999", "minutes": 10}]}, "interventions[0].cpt"),
        (
            "/rehab/sessions",
            {
                "interventions": [
                    {
                        "modality": "laser",
                        "minutes": 5,
                        "parameters": [{"parameter": "wavelength", "value": 810, "unit": "Hz"}],
                    }
                ]
            },
            "interventions[0].parameters[0].unit",
        ),
        ("/rehab/outcomes", {"items": {str(i): 3 for i in range(1, 20)}}, "items"),
        ("/rehab/outcomes", {"items": {**{str(i): 3 for i in range(1, 21)}, "5": 9}}, "items.5"),
        ("/rehab/sensor-series", {"kind": "force_plate_sway", "unit": "mm"}, "channels[0].side"),
    ],
    ids=[
        "unknown-measure",
        "out-of-range",
        "unit",
        "side-on-unsided",
        "side-missing",
        "no-patient",
        "unknown-patient",
        "goal-range",
        "load-unit",
        "cpt",
        "param-unit",
        "missing-items",
        "item-range",
        "sensor-side",
    ],
)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(
    fhir: FhirClient, path: str, change: dict[str, Any], field: str
) -> None:
    patient = _patient(fhir)
    base = {
        "/rehab/assessments": ASSESSMENT,
        "/rehab/plans": PLAN,
        "/rehab/sessions": SESSION,
        "/rehab/outcomes": OUTCOME,
        "/rehab/sensor-series": SERIES,
    }[path]
    body = {"patient": patient, **base, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = _post(fhir, path, body)
    assert r.status_code == 400, r.get_data(as_text=True)
    oo = r.get_json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["code"] == "invalid"
    assert field in oo["issue"][0]["expression"], oo
    assert oo["issue"][0]["diagnostics"]
    for type_ in (
        "Observation",
        "Encounter",
        "Goal",
        "CarePlan",
        "Procedure",
        "QuestionnaireResponse",
        "Device",
    ):
        assert _count(fhir, type_) == 0


def test_bad_json_and_wrong_type(fhir: FhirClient) -> None:
    r = fhir.call("POST", "/rehab/assessments", b"{nope", content_type=JSON)
    assert r.status_code == 400
    assert r.get_json()["resourceType"] == "OperationOutcome"
    r = fhir.call("POST", "/rehab/assessments", [1, 2], content_type=JSON)
    assert r.status_code == 400


def test_progress_reads_rehab_and_plain_fhir_observations(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    first = {
        "patient": patient,
        "date": "2026-10-01T10:00:00Z",
        "findings": [
            {"measure": "pain_nrs", "value": 7},
            {"measure": "grip_strength", "value": 20, "unit": "kg", "side": "left"},
            {"measure": "grip_strength", "value": 30, "unit": "kg", "side": "right"},
        ],
    }
    assert _post(fhir, "/rehab/assessments", first).status_code == 201
    # An EHR writes pain and left grip through plain FHIR, with standard codes only (and in lbf).
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": codes.LOINC, "code": "72514-3"}]},
            "effectiveDateTime": "2026-11-01T10:00:00Z",
            "valueInteger": 4,
        }
    )
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": codes.LOINC, "code": "83173-5"}]},
            "effectiveDateTime": "2026-11-01T10:00:00Z",
            "valueQuantity": {"value": 55.1155655, "system": codes.UCUM, "code": "[lb_av]"},
        }
    )
    fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{patient}"},
            "code": {"text": "something we do not know"},
            "effectiveDateTime": "2026-11-01T10:00:00Z",
            "valueQuantity": {"value": 1},
        }
    )
    r = fhir.call("GET", f"/rehab/patients/{patient}/progress")
    assert r.status_code == 200, r.get_data(as_text=True)
    measures = {(m["measure"], m["side"]): m for m in r.get_json()["measures"]}
    assert set(measures) == {("pain_nrs", None), ("grip_strength", "left"), ("grip_strength", "right")}
    pain = measures[("pain_nrs", None)]
    assert (pain["baseline"], pain["latest"], pain["change"], pain["percent_change"]) == (7, 4, -3, -42.86)
    assert pain["mcid_reached"] is True and pain["trend"] == "improving" and pain["direction"] == "lower"
    left = measures[("grip_strength", "left")]
    # 55.1155655 [lb_av] read as pound-force: x 0.45359237 = 25 kgf
    assert [p["value"] for p in left["series"]] == [20, 25]
    # left and right are compared on the day both were measured only: Oct 1, 20 vs 30
    assert left["symmetry"]["latest"] == {
        "date": "2026-10-01",
        "left": 20,
        "right": 30,
        "left_minus_right": -10,
    }
    assert left["symmetry"] == measures[("grip_strength", "right")]["symmetry"]


def test_progress_of_unknown_patient_is_404(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/rehab/patients/nobody/progress")
    assert r.status_code == 404
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_catalog_lists_every_measure(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/rehab/catalog")
    assert r.status_code == 200
    keys = {m["measure"] for m in r.get_json()["measures"]}
    assert {"pain_nrs", "lefs_total", "joint_rom_knee_flexion", "steps_daily", "exercise_minutes"} <= keys


def test_terminology_resources_lookup_and_translate(app: Any, fhir: FhirClient) -> None:
    written = seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    assert "CodeSystem/pt-measures" in written and "ConceptMap/pt-measures-to-standard" in written
    assert seed_terminology(app, app.config["REHABFHIR_SETTINGS"]) == []  # unchanged: not rewritten
    cs = fhir.call("GET", "/CodeSystem/pt-measures").get_json()
    assert cs["url"] == codes.PT and any(c["code"] == "lefs_total" for c in cs["concept"])
    found = fhir.call("GET", f"/CodeSystem?url={codes.PT}").get_json()
    assert len(found["entry"]) == 1
    r = fhir.call("GET", f"/CodeSystem/$lookup?system={codes.PT}&code=tug_time")
    assert r.status_code == 200, r.get_data(as_text=True)
    params = {p["name"]: p for p in r.get_json()["parameter"]}
    assert params["display"]["valueString"] == "Timed Up and Go"
    r = fhir.call("GET", f"/CodeSystem/$lookup?system={codes.PT}&code=nope")
    assert r.status_code == 404
    r = fhir.call("GET", "/CodeSystem/$lookup?code=nope")
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["system"]
    r = fhir.call("GET", f"/ConceptMap/$translate?system={codes.PT}&code=tug_time&targetsystem={codes.LOINC}")
    match = [p for p in r.get_json()["parameter"] if p["name"] == "match"]
    assert match[0]["part"][1]["valueCoding"]["code"] == "89423-8"
    assert match[0]["part"][0]["valueCode"] == "equivalent"
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coding", "valueCoding": {"system": codes.LOINC, "code": "83173-5"}}],
    }
    r = fhir.call("POST", "/ConceptMap/pt-measures-to-standard/$translate", body)
    parts = [p["part"] for p in r.get_json()["parameter"] if p["name"] == "match"][0]
    assert parts[1]["valueCoding"]["code"] == "grip_strength" and parts[0]["valueCode"] == "wider"
    r = fhir.call("GET", f"/ConceptMap/$translate?system={codes.PT}&code=mmt_grade")
    assert r.get_json()["parameter"][0] == {"name": "result", "valueBoolean": False}


def test_progress_needs_observation_search_and_respects_scope_restrictions(
    app: Any, fhir: FhirClient
) -> None:
    a, b = _patient(fhir), _patient(fhir)
    for patient in (a, b):
        assert _post(fhir, "/rehab/assessments", {"patient": patient, **ASSESSMENT}).status_code == 201
    no_obs = FhirClient(app.test_client(), client_credentials_token(app, "system/Patient.rs"))
    r = no_obs.call("GET", f"/rehab/patients/{a}/progress")
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    only_a = FhirClient(
        app.test_client(), client_credentials_token(app, f"system/Observation.rs?subject=Patient/{a}")
    )
    r = only_a.call("GET", f"/rehab/patients/{a}/progress")
    assert r.status_code == 200 and len(r.get_json()["measures"]) == 5
    r = only_a.call("GET", f"/rehab/patients/{b}/progress")
    assert r.status_code == 200 and r.get_json()["measures"] == []


def test_write_needs_the_scopes_of_every_resource(app: Any, fhir: FhirClient) -> None:
    patient = _patient(fhir)
    obs_only = FhirClient(app.test_client(), client_credentials_token(app, "system/Observation.cruds"))
    r = obs_only.call("POST", "/rehab/assessments", {"patient": patient, **ASSESSMENT}, content_type=JSON)
    assert r.status_code == 403  # the Encounter of the assessment is outside the scopes
    assert _count(fhir, "Observation") == 0


def _plain_obs(patient: str, code: str, date: str, status: str = "final", **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": codes.LOINC, "code": code}]},
        "effectiveDateTime": date,
        **value,
    }


def test_progress_orders_by_instant_and_counts_only_trusted_points(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    tug = {"value": 12, "system": codes.UCUM, "code": "s"}
    fhir.create(_plain_obs(patient, "89423-8", "2026-11-21T01:00:00Z", valueQuantity=tug))
    fhir.create(
        _plain_obs(patient, "89423-8", "2026-11-20T23:00:00-05:00", valueQuantity={**tug, "value": 10})
    )
    fhir.create(_plain_obs(patient, "72514-3", "2026-11-01T10:00:00Z", valueInteger=6))
    fhir.create(_plain_obs(patient, "72514-3", "2026-11-02T10:00:00Z", valueInteger=42))
    fhir.create(_plain_obs(patient, "72514-3", "2026-11-03T10:00:00Z", status="preliminary", valueInteger=2))
    measures = {
        m["measure"]: m
        for m in fhir.call("GET", f"/rehab/patients/{patient}/progress").get_json()["measures"]
    }
    # 23:00-05:00 on the 20th is 04:00Z on the 21st: 12 s then 10 s, improving
    timed = measures["tug_time"]
    assert (timed["baseline"], timed["latest"], timed["trend"]) == (12, 10, "improving")
    # the pain of 42 (out of 0-10) and the preliminary 2 are not in the series
    assert [p["value"] for p in measures["pain_nrs"]["series"]] == [6]


def test_units_are_stored_as_entered(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    body = {
        "patient": patient,
        "date": "2026-11-20T10:00:00Z",
        "findings": [
            {"measure": "grip_strength", "value": 66, "unit": "lbf", "side": "left"},
            {"measure": "six_min_walk_distance", "value": 1200, "unit": "ft"},
        ],
    }
    r = _post(fhir, "/rehab/assessments", body)
    assert r.status_code == 201, r.get_data(as_text=True)
    grip, walk = (fhir.call("GET", f"/{ref}").get_json() for ref in r.get_json()["references"]["finding"])
    assert grip["valueQuantity"] == {
        "value": 66,
        "unit": "[lbf_av]",
        "system": codes.UCUM,
        "code": "[lbf_av]",
    }
    assert walk["valueQuantity"] == {"value": 1200, "unit": "[ft_i]", "system": codes.UCUM, "code": "[ft_i]"}
    measures = {
        m["measure"]: m
        for m in fhir.call("GET", f"/rehab/patients/{patient}/progress").get_json()["measures"]
    }
    # converted on read: 66 x 0.45359237 = 29.937096 kgf; 1200 x 0.3048 = 365.76 m
    assert measures["grip_strength"]["series"][0]["value"] == 29.937096
    assert measures["six_min_walk_distance"]["series"][0]["entered"] == {"value": 1200, "unit": "[ft_i]"}
    assert measures["six_min_walk_distance"]["latest"] == 365.76


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("/rehab/assessments", {"date": "2026-02-30"}, "date"),
        ("/rehab/assessments", {"date": "2031-01-01T10:00:00Z"}, "date"),
        ("/rehab/assessments", {"findings": [{"measure": "tug_time", "value": 12}]}, "findings[0].unit"),
        (
            "/rehab/assessments",
            {"findings": [{"measure": "grip_strength", "value": 30, "unit": "kg", "side": "bilateral"}]},
            "findings[0].side",
        ),
        ("/rehab/plans", {"goals": [{**PLAN["goals"][0], "due": "2026-11-01"}]}, "goals[0].due"),
        (
            "/rehab/sensor-series",
            {"channels": [{"side": "left", "samples": [20000]}, {"side": "right", "samples": [-30000]}]},
            "channels[0].samples",
        ),
        (
            "/rehab/sessions",
            {"interventions": [{"cpt": "97112", "modality": "electrical_stimulation", "minutes": 10}]},
            "interventions[0].cpt",
        ),
    ],
    ids=["feb-30", "2031", "no-unit", "bilateral", "goal-before-plan", "semg-range", "estim-as-97112"],
)
def test_input_rules_are_400_naming_the_field(
    fhir: FhirClient, path: str, change: dict[str, Any], field: str
) -> None:
    patient = _patient(fhir)
    base = {"/rehab/assessments": ASSESSMENT, "/rehab/plans": PLAN, "/rehab/sessions": SESSION}.get(
        path, SERIES
    )
    r = _post(fhir, path, {"patient": patient, **base, **change})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.get_json()["issue"][0]["expression"]
    assert _count(fhir, "Observation") == 0


def test_session_note_is_stored_as_a_note(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    r = _post(fhir, "/rehab/sessions", {"patient": patient, **SESSION, "note": "tolerated well"})
    assert r.status_code == 201, r.get_data(as_text=True)
    refs = r.get_json()["references"]
    enc = fhir.call("GET", f"/{refs['encounter'][0]}").get_json()
    assert "reasonCode" not in enc
    proc = fhir.call("GET", f"/{refs['procedure'][1]}").get_json()
    assert proc["note"] == [{"text": "tolerated well"}]
    assert [c["code"] for c in proc["code"]["coding"]] == ["97032"]


def test_progress_lists_excluded_points_and_the_within_session_change(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    first = {
        "patient": patient,
        "date": "2026-11-01T10:00:00Z",
        "findings": [{"measure": "pain_nrs", "value": 7}],
    }
    assert _post(fhir, "/rehab/assessments", first).status_code == 201
    session = {**SESSION, "interventions": [{"cpt": "97110", "minutes": 25}]}
    r = _post(fhir, "/rehab/sessions", {"patient": patient, **session})  # pain 6 before, 4 after 25 min
    assert r.status_code == 201, r.get_data(as_text=True)
    encounter = r.get_json()["references"]["encounter"][0]
    fhir.create(_plain_obs(patient, "72514-3", "2026-11-22T10:00:00Z", status="preliminary", valueInteger=2))
    body = fhir.call("GET", f"/rehab/patients/{patient}/progress").get_json()
    (pain,) = body["measures"]
    assert [p["value"] for p in pain["series"]] == [7, 6]  # the pain after treatment is not longitudinal
    (block,) = body["within_session"]
    (s,) = block["sessions"]
    assert (s["encounter"], s["pre"]["value"], s["post"]["value"], s["change"], s["minutes_apart"]) == (
        encounter,
        6,
        4,
        -2,
        25.0,
    )
    (excluded,) = body["excluded"]
    assert excluded["value"] == 2 and excluded["reason"].startswith("status 'preliminary'")


def test_progress_limb_symmetry_for_the_involved_side(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    day = {
        "patient": patient,
        "date": "2026-11-20T10:00:00Z",
        "findings": [
            {"measure": "joint_rom_knee_flexion", "value": 95, "unit": "deg", "side": "left"},
            {"measure": "joint_rom_knee_flexion", "value": 135, "unit": "deg", "side": "right"},
        ],
    }
    assert _post(fhir, "/rehab/assessments", day).status_code == 201
    body = fhir.call("GET", f"/rehab/patients/{patient}/progress?involved=left").get_json()
    left = next(m for m in body["measures"] if m["side"] == "left")
    # 95 / 135 x 100 = 70.37; deficit 95 - 135 = -40
    assert left["symmetry"]["latest"] == {
        "date": "2026-11-20",
        "left": 95,
        "right": 135,
        "deficit": -40,
        "lsi": 70.37,
    }
    r = fhir.call("GET", f"/rehab/patients/{patient}/progress?involved=up")
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["involved"]


def test_session_answers_billing_units_and_records_the_practitioner(app: Any, fhir: FhirClient) -> None:
    patient = _patient(fhir)
    # The therapist's own Practitioner resource: references to this server must resolve.
    fhir.call("PUT", "/Practitioner/pt1", {"resourceType": "Practitioner", "id": "pt1"})
    add_user(app, "therapist", "practitioner", "Practitioner/pt1")
    scope = "user/Patient.rs user/Encounter.crs user/Procedure.crs user/Observation.crs"
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    code = get_code(c, authorize_params(client_id, scope, verifier), "therapist")["code"]
    token = exchange(c, client_id, code, verifier).get_json()["access_token"]
    session = {
        **SESSION,
        "interventions": [
            {"cpt": "97110", "minutes": 33},
            {"cpt": "97140", "minutes": 7},
            {"cpt": "G0283", "modality": "electrical_stimulation", "minutes": 15},
        ],
    }
    r = _post(FhirClient(app.test_client(), token), "/rehab/sessions", {"patient": patient, **session})
    assert r.status_code == 201, r.get_data(as_text=True)
    billing = r.get_json()["billing"]
    # 33 + 7 = 40 timed minutes -> 3 units: 97110 two, 97140 one (its 7 min beat 97110's last 3); G0283 one
    assert [(x["code"], x["units"]) for x in billing["lines"]] == [("97110", 2), ("97140", 1), ("G0283", 1)]
    refs = r.get_json()["references"]
    proc = fhir.call("GET", f"/{refs['procedure'][2]}").get_json()
    assert proc["performer"] == [{"actor": {"reference": "Practitioner/pt1"}}]
    assert proc["code"]["coding"][0]["system"] == codes.HCPCS
    enc = fhir.call("GET", f"/{refs['encounter'][0]}").get_json()
    assert enc["participant"] == [{"individual": {"reference": "Practitioner/pt1"}}]
