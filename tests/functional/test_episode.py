"""Episodes of care (issue 17, item 1): POST /rehab/episodes opens an EpisodeOfCare with the Condition
treated and the referral; assessments, plans, sessions and outcomes link to it; GET /rehab/episodes/{id}
is the clinic view. Bad input is a 400 naming the field with nothing stored; scopes and patients apply.
Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from fhir_mapping import episodes
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code
from tests.functional.test_rehab import ASSESSMENT
from tests.functional.test_rehab import OUTCOME
from tests.functional.test_rehab import PLAN
from tests.functional.test_rehab import SESSION

pytestmark = pytest.mark.pg
JSON = "application/json"
EPISODE = {"start": "2026-11-20", "condition": {"system": "icd-10-cm", "code": "M17.12"}}


def post(fhir: FhirClient, path: str, body: dict[str, Any]) -> Any:
    return fhir.call("POST", path, body, content_type=JSON)


def patient(fhir: FhirClient) -> str:
    return str(fhir.create({"resourceType": "Patient", "name": [{"family": "Episode"}]})["id"])


def practitioner(fhir: FhirClient, id_: str) -> str:
    fhir.call("PUT", f"/Practitioner/{id_}", {"resourceType": "Practitioner", "id": id_})
    return id_


def open_episode(fhir: FhirClient, pid: str, **more: Any) -> str:
    r = post(fhir, "/rehab/episodes", {"patient": pid, **EPISODE, **more})
    assert r.status_code == 201, r.get_data(as_text=True)
    return str(r.get_json()["references"]["episode"][0].split("/")[1])


def count(fhir: FhirClient, type_: str) -> int:
    return int(fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"])


def test_episode_writes_condition_referral_and_episode(fhir: FhirClient) -> None:
    pid = patient(fhir)
    referring, manager = practitioner(fhir, "ref1"), practitioner(fhir, "pt1")
    body = {
        "patient": pid,
        "start": "2026-11-20",
        "condition": {"system": "snomed", "code": "239873007", "display": "Osteoarthritis of knee"},
        "referring": f"Practitioner/{referring}",
        "care_manager": manager,
    }
    r = post(fhir, "/rehab/episodes", body)
    assert r.status_code == 201, r.get_data(as_text=True)
    view = r.get_json()
    assert {k: len(v) for k, v in view["references"].items()} == {"condition": 1, "referral": 1, "episode": 1}
    assert view["referring"] == "ref1" and view["care_manager"] == "pt1" and view["status"] == "active"
    episode = fhir.call("GET", "/" + view["references"]["episode"][0]).get_json()
    assert episode["status"] == "active" and episode["patient"] == {"reference": f"Patient/{pid}"}
    assert episode["diagnosis"][0]["condition"]["reference"] == view["references"]["condition"][0]
    assert episode["careManager"] == {"reference": "Practitioner/pt1"}
    condition = fhir.call("GET", "/" + view["references"]["condition"][0]).get_json()
    assert condition["code"]["coding"] == [
        {"system": "http://snomed.info/sct", "code": "239873007", "display": "Osteoarthritis of knee"}
    ]
    referral = fhir.call("GET", "/" + episode["referralRequest"][0]["reference"]).get_json()
    assert referral["requester"] == {"reference": "Practitioner/ref1"} and referral["intent"] == "order"
    # A plain FHIR client finds the episode by its condition and care manager.
    found = fhir.call("GET", f"/EpisodeOfCare?patient=Patient/{pid}&care-manager=Practitioner/pt1").get_json()
    assert len(found["entry"]) == 1


def test_pieces_link_to_the_episode_and_the_view_lists_them(fhir: FhirClient) -> None:
    pid = patient(fhir)
    eid = open_episode(fhir, pid)
    refs = {}
    for path, payload in (
        ("/rehab/assessments", ASSESSMENT),
        ("/rehab/plans", PLAN),
        ("/rehab/sessions", SESSION),
        ("/rehab/sessions", {**SESSION, "date": "2026-11-23T09:00:00Z"}),
        ("/rehab/outcomes", OUTCOME),
    ):
        r = post(fhir, path, {"patient": pid, "episode": f"EpisodeOfCare/{eid}", **payload})
        assert r.status_code == 201, r.get_data(as_text=True)
        assert r.get_json()["episode"] == eid
        refs[path] = r.get_json()["references"]
    # Not linked: the same patient's session without an episode.
    assert post(fhir, "/rehab/sessions", {"patient": pid, **SESSION}).status_code == 201
    enc = fhir.call("GET", "/" + refs["/rehab/sessions"]["encounter"][0]).get_json()
    assert enc["episodeOfCare"] == [{"reference": f"EpisodeOfCare/{eid}"}]
    plan = fhir.call("GET", "/" + refs["/rehab/plans"]["careplan"][0]).get_json()
    assert {"url": episodes.EXT_EPISODE, "valueReference": {"reference": f"EpisodeOfCare/{eid}"}} in plan[
        "extension"
    ]
    qr = fhir.call("GET", "/" + refs["/rehab/outcomes"]["questionnaire_response"][0]).get_json()
    assert episodes.episode_of(qr) == eid
    found = fhir.call("GET", f"/Encounter?episode-of-care=EpisodeOfCare/{eid}").get_json()
    assert len(found["entry"]) == 3

    r = fhir.call("GET", f"/rehab/episodes/{eid}")
    assert r.status_code == 200, r.get_data(as_text=True)
    view = r.get_json()
    assert view["condition"] == {"system": "icd-10-cm", "code": "M17.12"}
    assert [a["encounter"] for a in view["assessments"]] == refs["/rehab/assessments"]["encounter"]
    assert [s["date"] for s in view["sessions"]] == ["2026-11-21T09:00:00Z", "2026-11-23T09:00:00Z"]
    assert view["visits_used"] == 2
    assert [p["careplan"] for p in view["plans"]] == refs["/rehab/plans"]["careplan"]
    assert [o["instrument"] for o in view["outcomes"]] == ["lefs"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"condition": {"system": "icd-9", "code": "715.16"}}, "condition.system"),
        ({"condition": {"system": "icd-10-cm", "code": "knee"}}, "condition.code"),
        ({"condition": None}, "condition"),
        ({"start": "2026-13-01"}, "start"),
        ({"status": "finished"}, "status"),
        ({"referring": "nobody"}, "referring"),
        ({"care_manager": "Patient/1"}, "care_manager"),
        ({"patient": "nobody"}, "patient"),
    ],
    ids=[
        "system",
        "code",
        "no-condition",
        "date",
        "closed-status",
        "unknown-referrer",
        "manager-type",
        "patient",
    ],
)
def test_bad_episode_is_400_naming_the_field_and_stores_nothing(
    fhir: FhirClient, change: dict[str, Any], field: str
) -> None:
    body = {"patient": patient(fhir), **EPISODE, **change}
    r = post(fhir, "/rehab/episodes", {k: v for k, v in body.items() if v is not None})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.get_json()["issue"][0]["expression"]
    for type_ in ("EpisodeOfCare", "Condition", "ServiceRequest"):
        assert count(fhir, type_) == 0


def test_episode_links_are_checked(fhir: FhirClient) -> None:
    a, b = patient(fhir), patient(fhir)
    mine = open_episode(fhir, a)
    theirs = open_episode(fhir, b)
    closed = open_episode(fhir, a)
    stored = fhir.call("GET", f"/EpisodeOfCare/{closed}").get_json()
    assert fhir.call("PUT", f"/EpisodeOfCare/{closed}", {**stored, "status": "finished"}).status_code == 200
    for episode, problem in (("nope", "does not exist"), (theirs, "is not"), (closed, "is finished")):
        r = post(fhir, "/rehab/sessions", {"patient": a, "episode": episode, **SESSION})
        assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["episode"], r.get_json()
        assert problem in r.get_json()["issue"][0]["diagnostics"]
    assert count(fhir, "Encounter") == 0
    assert post(fhir, "/rehab/sessions", {"patient": a, "episode": mine, **SESSION}).status_code == 201


def test_unknown_episode_view_is_404(fhir: FhirClient) -> None:
    r = fhir.call("GET", "/rehab/episodes/nope")
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"


def patient_token(app: Any, pid: str, scope: str) -> str:
    """A SMART app launch token of a user of the patient (authorization code with PKCE)."""
    name = f"pat-{secrets.token_hex(4)}"
    add_user(app, name, "patient", f"Patient/{pid}")
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    code = get_code(c, authorize_params(client_id, scope, verifier), name)["code"]
    return str(exchange(c, client_id, code, verifier).get_json()["access_token"])


def test_scopes_and_patients_apply(app: Any, fhir: FhirClient) -> None:
    a, b = patient(fhir), patient(fhir)
    ea, eb = open_episode(fhir, a), open_episode(fhir, b)
    # Missing scope: creating an episode needs Condition and EpisodeOfCare creates.
    scope = "system/Patient.rs system/Condition.c"
    no_episode = FhirClient(app.test_client(), client_credentials_token(app, scope))
    r = post(no_episode, "/rehab/episodes", {"patient": a, **EPISODE})
    assert r.status_code == 403 and count(fhir, "Condition") == 2
    # The view needs the searches it makes.
    no_search = FhirClient(app.test_client(), client_credentials_token(app, "system/EpisodeOfCare.rs"))
    assert no_search.call("GET", f"/rehab/episodes/{ea}").status_code == 403
    # A patient sees their own episode, and another patient's does not exist.
    token = patient_token(app, a, "launch/patient openid fhirUser patient/*.rs")
    pat = FhirClient(app.test_client(), token)
    assert pat.call("GET", f"/rehab/episodes/{ea}").status_code == 200
    r = pat.call("GET", f"/rehab/episodes/{eb}")
    assert r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"
    # ... and cannot link a write to it (read-only token: 403 before anything is written).
    r = post(pat, "/rehab/sessions", {"patient": a, "episode": ea, **SESSION})
    assert r.status_code == 403
    # A patient token that may write opens no episode for another patient (who "does not exist").
    writer = FhirClient(
        app.test_client(), patient_token(app, a, "launch/patient openid fhirUser patient/*.cruds")
    )
    r = post(writer, "/rehab/episodes", {"patient": b, **EPISODE})
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["patient"]
    assert count(fhir, "EpisodeOfCare") == 2
