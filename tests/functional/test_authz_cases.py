"""Authorization: each concrete case of issue 11 item 8, as its own named test.

Same world, tokens and independent oracle as test_authz_matrix.py (tests/functional/authz_world.py).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import FhirClient
from tests.functional.authz_world import BASE
from tests.functional.authz_world import CATEGORY
from tests.functional.authz_world import GRANTS
from tests.functional.authz_world import IDS
from tests.functional.authz_world import VITAL
from tests.functional.authz_world import World
from tests.functional.authz_world import categories
from tests.functional.authz_world import compartments_of
from tests.functional.authz_world import current_versions
from tests.functional.authz_world import entry_key
from tests.functional.authz_world import rebase
from tests.functional.authz_world import sees
from tests.functional.authz_world import shared_world
from tests.functional.authz_world import user_token

ASYNC = {"Prefer": "respond-async"}
B_AND_SHARED = [
    "org",
    "practitioner",
    "B.patient",
    "B.encounter",
    "B.obs-vital",
    "B.obs-lab",
    "B.condition",
    "B.obs-deleted",
    "B2.patient-deleted",
    "B.device",
    "B.task",
]


@pytest.fixture
def world(session_app: Any) -> Iterator[World]:
    """The seeded world of this database (seeded again after another test emptied or changed it)."""
    w = shared_world(session_app)
    yield w
    rebase(w)


def _status(r: Any) -> str:
    return f"{r.status_code} {r.get_data(as_text=True)[:300]}"


def _obs_a(world: World, tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": IDS + ":case", "value": tag}],
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
        "code": {"text": tag},
        "subject": {"reference": f"Patient/{world.a}"},
        **extra,
    }


def _assert_unchanged(world: World, labels: list[str], where: str) -> None:
    stored = current_versions(world.app, world)
    changed = [x for x in labels if stored.get(x) != world.items[x].current.vid]
    assert not changed, f"{where}: changed {changed}"


def _ids(entries: list[dict[str, Any]], world: World) -> set[str]:
    return {world.label(*entry_key(e)[:2]) for e in entries if e.get("resource")}


def _known(labels: set[str], world: World) -> set[str]:
    """The seeded items among labels (other tests may have added resources to the shared world)."""
    return labels & set(world.items)


# (1) ---------------------------------------------------------------------------------------------


def test_if_none_exist_matching_only_b_creates_for_a_write_token(world: World) -> None:
    where = "[conditional create If-None-Exist | grant patientA-write]"
    a = world.client("patientA-write")
    for criteria in (f"patient={world.b}", f"identifier={IDS}|B.obs-vital"):
        r = a.call("POST", "/Observation", _obs_a(world, "case1"), headers={"If-None-Exist": criteria})
        assert r.status_code == 201, f"{where} If-None-Exist: {criteria}: expected 201, got {_status(r)}"
        body = r.get_json()
        assert body["subject"]["reference"] == f"Patient/{world.a}", f"{where} {criteria}: answered {body}"
        assert body["id"] not in {i.id for i in world.items.values()}, (
            f"{where} {criteria}: returned B's resource"
        )
    _assert_unchanged(world, B_AND_SHARED, where)


# (2) ---------------------------------------------------------------------------------------------


def test_two_matches_of_b_are_no_match_not_412_for_a_write_token(world: World) -> None:
    crit = f"patient={world.b}"  # B.obs-vital and B.obs-lab
    control = world.system.call("POST", "/Observation", _obs_a(world, "x"), headers={"If-None-Exist": crit})
    assert control.status_code == 412, f"[control: system If-None-Exist {crit}] {_status(control)}"
    a = world.client("patientA-write")
    where = "[conditional writes matching two of B's Observations | grant patientA-write]"
    r = a.call("POST", "/Observation", _obs_a(world, "case2-create"), headers={"If-None-Exist": crit})
    assert r.status_code == 201, f"{where} If-None-Exist: expected 201, got {_status(r)}"
    r = a.call("PUT", f"/Observation?{crit}", _obs_a(world, "case2-update"))
    assert r.status_code == 201, f"{where} conditional update: expected 201 (create), got {_status(r)}"
    assert r.get_json()["subject"]["reference"] == f"Patient/{world.a}"
    r = a.call("DELETE", f"/Observation?{crit}")
    assert r.status_code in (200, 204), (
        f"{where} conditional delete: expected no-match 200/204, got {_status(r)}"
    )
    _assert_unchanged(world, B_AND_SHARED, where)


# (3) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grant", ["patientA", "patientA-vitals", "patientA-write"])
def test_vread_of_deleted_b_observation_and_deleted_patient_is_404(world: World, grant: str) -> None:
    c = world.client(grant)
    for label in ("B.obs-deleted", "B2.patient-deleted"):
        item = world.items[label]
        for path in (f"/{item.ref}", f"/{item.ref}/_history/1", f"/{item.ref}/_history/2"):
            r = c.call("GET", path)
            assert r.status_code == 404, (
                f"[GET {path} | grant {grant} | {label}]: expected 404, got {_status(r)}"
            )
            assert r.get_json()["resourceType"] == "OperationOutcome"
        r = world.system.call("GET", f"/{item.ref}/_history/1")
        assert r.status_code == 200, f"[control: system vread {label} v1] {_status(r)}"
    own = world.items["A.obs-deleted"]
    assert c.call("GET", f"/{own.ref}").status_code == 410, f"[read | grant {grant} | A.obs-deleted] not 410"
    assert c.call("GET", f"/{own.ref}/_history/1").status_code == 200, (
        f"[vread 1 | grant {grant} | A.obs-deleted]"
    )


# (4) ---------------------------------------------------------------------------------------------


def test_put_onto_deleted_b_id_is_refused_and_b_history_stays_hidden(world: World) -> None:
    item = world.items["B.obs-deleted"]
    where = "[PUT onto deleted B id | grant patientA-write | B.obs-deleted]"
    a = world.client("patientA-write")
    body = {**_obs_a(world, "case4"), "id": item.id}
    r = a.call("PUT", f"/{item.ref}", body)
    assert r.status_code in (403, 404), f"{where}: expected 403/404, got {_status(r)}"
    _assert_unchanged(world, B_AND_SHARED, where)
    for path in (f"/{item.ref}/_history", f"/{item.ref}/_history/1", f"/{item.ref}"):
        r = a.call("GET", path)
        assert r.status_code == 404, f"{where} then GET {path}: expected 404, got {_status(r)}"
    hist = a.call("GET", "/Observation/_history?_count=500").get_json().get("entry", [])
    assert not [e for e in hist if entry_key(e)[1] == item.id], f"{where}: B's history in type _history"


# (5) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grant", ["patientA", "patientA-vitals"])
def test_moved_observation_shows_only_its_a_era_versions(world: World, grant: str) -> None:
    item = world.items["moved.obs"]
    where = f"[moved B->A Observation | grant {grant}]"
    c = world.client(grant)
    r = c.call("GET", f"/{item.ref}/_history")
    assert r.status_code == 200, f"{where} instance _history: {_status(r)}"
    got = sorted(entry_key(e)[2] or "" for e in r.get_json().get("entry", []))
    assert got == ["2"], f"{where} instance _history versions {got}, expected ['2']"
    assert c.call("GET", f"/{item.ref}/_history/1").status_code == 404, f"{where} vread 1 (B-era) not 404"
    assert c.call("GET", f"/{item.ref}/_history/2").status_code == 200, f"{where} vread 2 (A-era) not 200"
    for path in ("/Observation/_history?_count=500", "/_history?_count=500"):
        entries = c.call("GET", path).get_json().get("entry", [])
        got = sorted(entry_key(e)[2] or "" for e in entries if entry_key(e)[1] == item.id)
        assert got == ["2"], f"{where} {path}: versions {got}, expected ['2']"
    got = sorted(
        entry_key(e)[2] or "" for e in world.system.call("GET", f"/{item.ref}/_history").get_json()["entry"]
    )
    assert got == ["1", "2"], f"[control: system instance _history of moved.obs] {got}"


# (6) ---------------------------------------------------------------------------------------------


def test_everything_under_category_restricted_scopes(world: World) -> None:
    where = "[Patient/A/$everything | grant patientA-vitals]"
    r = world.client("patientA-vitals").call("GET", f"/Patient/{world.a}/$everything?_count=500")
    assert r.status_code == 200, f"{where}: {_status(r)}"
    entries = r.get_json().get("entry", [])
    types = {e["resource"]["resourceType"] for e in entries}
    assert types <= {"Patient", "Observation"}, f"{where}: types {sorted(types)}"
    for e in entries:
        res = e["resource"]
        if res["resourceType"] == "Observation":
            assert (CATEGORY, "vital-signs") in categories(res), (
                f"{where}: {world.label('Observation', res['id'])}"
            )
    g = GRANTS["patientA-vitals"]
    for e in entries:  # resources other tests wrote are judged by the oracle
        res = e["resource"]
        assert sees(g, res, world.a), f"{where}: {world.label(res['resourceType'], res['id'])}"
    got = _known(_ids(entries, world), world)
    assert got == {"A.patient", "A.obs-vital", "moved.obs"}, f"{where}: got {sorted(got)}"


# (7) (8) (9) bulk export -------------------------------------------------------------------------


@pytest.fixture
def export_dir(session_app: Any, tmp_path: Any) -> Iterator[Any]:
    config = session_app.extensions["rehabfhir.bulk"]
    old = config.export_dir
    config.export_dir = str(tmp_path / "export")
    yield tmp_path / "export"
    config.export_dir = old


def _client_tokens(app: Any, allowed: str, *scopes: str) -> list[str]:
    """One confidential client allowed `allowed`; a client_credentials token for each scope string."""
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("authz-export", allowed, "symmetric")
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    out = []
    for scope in scopes:
        r = app.test_client().post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers={"Authorization": "Basic " + basic},
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        out.append(r.get_json()["access_token"])
    return out


def _kick_off(c: FhirClient, path: str, body: Any = None) -> str:
    r = c.call("POST" if body is not None else "GET", path, body, headers=ASYNC)
    assert r.status_code == 202, f"[$export kick-off {path}] {_status(r)}"
    return r.headers["Content-Location"][len(BASE) :]


def _manifest(c: FhirClient, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = c.call("GET", status, headers={"Accept": "application/json"})
        if r.status_code != 202:
            assert r.status_code == 200, _status(r)
            return r.get_json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"export {status} did not finish")


def _lines(c: FhirClient, url: str) -> list[dict[str, Any]]:
    r = c.call("GET", url[len(BASE) :], headers={"Accept": "application/fhir+ndjson"})
    assert r.status_code == 200, _status(r)
    return [orjson.loads(x) for x in r.get_data(as_text=True).splitlines()]


def _exported(c: FhirClient, manifest: dict[str, Any], world: World, check: Any) -> dict[str, set[str]]:
    """Seeded items per exported type; every exported resource must pass `check` (a predicate)."""
    out: dict[str, set[str]] = {}
    for o in manifest["output"]:
        for res in _lines(c, o["url"]):
            assert check(res), (
                f"[{manifest['request']}]: exported {world.label(res['resourceType'], res['id'])}"
            )
            out.setdefault(o["type"], set()).add(world.label(res["resourceType"], res["id"]))
    return {t: _known(v, world) for t, v in out.items()}


def test_export_with_category_restricted_scope(world: World, export_dir: Any) -> None:
    (token,) = _client_tokens(
        world.app, f"system/Observation.rs?category={VITAL}", f"system/Observation.rs?category={VITAL}"
    )
    c = FhirClient(world.app.test_client(), token)
    vitals = {"A.obs-vital", "B.obs-vital", "moved.obs", "A.obs-performer-B"}

    def is_vital(res: dict[str, Any]) -> bool:
        return res["resourceType"] == "Observation" and (CATEGORY, "vital-signs") in categories(res)

    for path in ("/$export?_type=Observation", "/$export"):
        got = _exported(c, _manifest(c, _kick_off(c, path)), world, is_vital)
        assert got == {"Observation": vitals}, (
            f"[{path} | grant system/Observation.rs?category=vital-signs]: {got}"
        )


def test_observation_read_token_cannot_download_the_patient_file(world: World, export_dir: Any) -> None:
    full, obs_only = _client_tokens(world.app, "system/*.rs", "system/*.rs", "system/Observation.read")
    c = FhirClient(world.app.test_client(), full)
    manifest = _manifest(c, _kick_off(c, "/$export?_type=Patient,Observation"))
    files = {o["type"]: o["url"][len(BASE) :] for o in manifest["output"]}
    narrow = FhirClient(world.app.test_client(), obs_only)
    r = narrow.call("GET", files["Patient"], headers={"Accept": "application/fhir+ndjson"})
    where = "[download Patient.ndjson | same client, token system/Observation.read]"
    assert r.status_code in (403, 404), f"{where}: expected 403/404, got {_status(r)}"
    r = narrow.call("GET", files["Observation"], headers={"Accept": "application/fhir+ndjson"})
    assert r.status_code == 200, (
        f"[download Observation.ndjson | token system/Observation.read]: {_status(r)}"
    )
    (other,) = _client_tokens(world.app, "system/*.rs", "system/*.rs")
    r = FhirClient(world.app.test_client(), other).call("GET", files["Patient"])
    assert r.status_code in (403, 404), f"[download by another client]: expected 403/404, got {_status(r)}"


def _patient_param(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{pid}"}}],
    }


def test_posted_patient_parameter_restricts_patient_and_group_export(world: World, export_dir: Any) -> None:
    c = world.system
    a_compartment = {
        "A.patient",
        "A.obs-vital",
        "A.obs-lab",
        "A.encounter",
        "A.condition",
        "moved.obs",
        "A.obs-performer-B",
    }

    def of_a(res: dict[str, Any]) -> bool:
        # A Group (whose member is A) may come along; everything else must be in A's compartment.
        return res["resourceType"] == "Group" or world.a in compartments_of(res)

    status = _kick_off(c, "/Patient/$export", _patient_param(world.a))
    flat = set().union(*_exported(c, _manifest(c, status), world, of_a).values())
    assert flat == a_compartment, f"[POST Patient/$export patient=A | grant system]: {sorted(flat)}"
    group = c.create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": f"Patient/{world.a}"}},
                {"entity": {"reference": f"Patient/{world.b}"}},
            ],
        }
    )
    status = _kick_off(c, f"/Group/{group['id']}/$export", _patient_param(world.a))
    flat = set().union(*_exported(c, _manifest(c, status), world, of_a).values())
    assert flat == a_compartment, f"[POST Group/$export patient=A | grant system]: {sorted(flat)}"
    r = c.call("POST", "/$export", _patient_param(world.a), headers=ASYNC)
    assert r.status_code == 400, f"[POST /$export patient=A | grant system]: expected 400, got {_status(r)}"


# (10) --------------------------------------------------------------------------------------------


def test_rehab_progress_shows_only_granted_categories(world: World) -> None:
    where = "[/rehab/patients/A/progress | grant patientA-vitals]"
    c = world.client("patientA-vitals")
    r = c.call("GET", f"/rehab/patients/{world.a}/progress")
    assert r.status_code == 200, f"{where}: {_status(r)}"
    got = {m["measure"]: [p["value"] for p in m["series"]] for m in r.get_json()["measures"]}
    # pain 7 (A.obs-vital); not the lab grip strength, not A.obs-performer-B (it points to B)
    assert got == {"pain_nrs": [7]}, f"{where}: {got}"
    r = c.call("GET", f"/rehab/patients/{world.b}/progress")
    assert r.status_code == 404, f"[/rehab/patients/B/progress | grant patientA-vitals]: {_status(r)}"
    (token,) = _client_tokens(
        world.app, f"system/Observation.rs?category={VITAL}", f"system/Observation.rs?category={VITAL}"
    )
    r = FhirClient(world.app.test_client(), token).call("GET", f"/rehab/patients/{world.b}/progress")
    got = {m["measure"] for m in r.get_json()["measures"]}
    assert got == {"pain_nrs"}, f"[/rehab/patients/B/progress | grant system vital-signs]: {got}"


# (11) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grant", ["patientA", "patientA-write"])
def test_patient_token_cannot_read_b_device_or_task(world: World, grant: str) -> None:
    c = world.client(grant)
    for label in ("B.device", "B.task"):
        item = world.items[label]
        for path in (f"/{item.ref}", f"/{item.ref}/_history/1"):
            r = c.call("GET", path)
            assert r.status_code == 404, (
                f"[GET {path} | grant {grant} | {label}]: expected 404, got {_status(r)}"
            )
        found = c.call("GET", f"/{item.type}?_count=500").get_json().get("entry", [])
        assert item.id not in {e["resource"]["id"] for e in found}, (
            f"[search {item.type} | grant {grant} | {label}]"
        )


# (12) --------------------------------------------------------------------------------------------


def test_patient_token_cannot_delete_organization_or_rewrite_practitioner(world: World) -> None:
    c = world.client("patientA-write")
    org, doc = world.items["org"], world.items["practitioner"]
    r = c.call("DELETE", f"/{org.ref}")
    assert r.status_code == 403, f"[DELETE org | grant patientA-write]: expected 403, got {_status(r)}"
    r = c.call("PUT", f"/{doc.ref}", {**(doc.versions[0].body or {}), "name": [{"family": "Rewritten"}]})
    assert r.status_code == 403, f"[PUT practitioner | grant patientA-write]: expected 403, got {_status(r)}"
    r = c.call("POST", "/Organization", {"resourceType": "Organization", "name": "Mine"})
    assert r.status_code == 403, f"[POST Organization | grant patientA-write]: expected 403, got {_status(r)}"
    _assert_unchanged(world, ["org", "practitioner"], "[shared resources after patient writes]")


# (13) --------------------------------------------------------------------------------------------


def test_observation_for_a_with_performer_b_is_refused(world: World) -> None:
    c = world.client("patientA-write")
    body = _obs_a(world, "case13", performer=[{"reference": f"Patient/{world.b}"}])
    r = c.call("POST", "/Observation", body)
    assert r.status_code == 403, (
        f"[POST Observation subject A performer B | grant patientA-write]: {_status(r)}"
    )
    own = world.items["A.obs-vital"]
    r = c.call("PUT", f"/{own.ref}", {**(own.live or {}), "performer": [{"reference": f"Patient/{world.b}"}]})
    assert r.status_code == 403, f"[PUT A.obs-vital adding performer B | grant patientA-write]: {_status(r)}"
    _assert_unchanged(world, ["A.obs-vital"], "[A.obs-vital after the refused PUT]")


# (14) --------------------------------------------------------------------------------------------


def test_practitioner_cannot_read_audit_events(world: World) -> None:
    events = world.system.call("GET", "/AuditEvent?_count=1").get_json().get("entry", [])
    assert events, "[control: system AuditEvent search] no events"
    c = world.client("practitioner")
    for path in ("/AuditEvent", f"/AuditEvent/{events[0]['resource']['id']}"):
        r = c.call("GET", path)
        assert r.status_code == 403, f"[GET {path} | grant practitioner]: expected 403, got {_status(r)}"
    assert c.call("GET", f"/Patient/{world.a}").status_code == 200, "[read A.patient | grant practitioner]"
    # A practitioner asking for user/*.cruds: refused, or granted without AuditEvent.
    try:
        token = user_token(world.app, world.usernames["doc"], "openid fhirUser user/*.cruds")["access_token"]
    except AssertionError as refused:
        assert "invalid_scope" in str(refused), f"[practitioner asking user/*.cruds]: {refused}"
        return
    r = FhirClient(world.app.test_client(), token).call("GET", "/AuditEvent")
    assert r.status_code == 403, f"[GET /AuditEvent | practitioner token for user/*.cruds]: {_status(r)}"


# (15) --------------------------------------------------------------------------------------------


def test_auditor_with_user_cruds_cannot_create_a_patient(world: World) -> None:
    c = world.client("auditor")
    r = c.call("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "ByAuditor"}]})
    assert r.status_code == 403, (
        f"[POST Patient | grant auditor user/*.cruds]: expected 403, got {_status(r)}"
    )
    r = c.call("PUT", f"/Patient/{world.a}", {**(world.items["A.patient"].live or {}), "gender": "other"})
    assert r.status_code == 403, (
        f"[PUT A.patient | grant auditor user/*.cruds]: expected 403, got {_status(r)}"
    )
    assert c.call("GET", "/AuditEvent?_count=1").status_code == 200, "[search AuditEvent | grant auditor]"
    assert c.call("GET", f"/Patient/{world.a}").status_code == 200, "[read A.patient | grant auditor]"
    r = c.call("GET", "/Observation")
    assert r.status_code == 403, f"[search Observation | grant auditor]: expected 403, got {_status(r)}"
    assert sees(GRANTS["auditor"], world.items["A.patient"].live or {}, world.a)
    _assert_unchanged(world, ["A.patient"], "[A.patient after the auditor's writes]")
