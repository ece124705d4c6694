"""Roles cap what a user can be granted (auth/roles.py): at consent, at code exchange and at refresh.

End to end with real tokens: sign in through /auth/authorize, exchange the code, use the token.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from auth.models import AuthUser
from server.api.app_routes import AUDIT_SCOPES
from server.api.app_routes import CLINICAL_SCOPES
from server.api.app_routes import register_client
from server.settings import Settings
from server.web import CLIENT_NAME
from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import PASSWORD
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import bearer
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code
from tests.functional.auth_flows import hidden
from tests.functional.auth_flows import login
from tests.functional.auth_flows import query_of

PAGES_CALLBACK = "http://testserver/app/callback"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _consent(c: Any, params: dict[str, str], username: str) -> str:
    """Sign in and return the consent page."""
    page = c.get("/auth/authorize", query_string=params).get_data(as_text=True)
    r = login(c, page, username)
    assert r.status_code == 200, r.get_data(as_text=True)
    return html.unescape(r.get_data(as_text=True))


def _approve(c: Any, page: str) -> dict[str, str]:
    r = c.post(
        "/auth/authorize",
        data={"step": "consent", "csrf_token": hidden(page, "csrf_token"), "decision": "approve"},
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    return query_of(r.headers["Location"])


def _token(app: Any, username: str, scope: str, client_scope: str | None = None) -> dict[str, Any]:
    client_id, _ = add_app(app, client_scope or scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    got = get_code(c, authorize_params(client_id, scope, verifier), username)
    r = exchange(c, client_id, got["code"], verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return {**r.get_json(), "client_id": client_id}


def _seed(fhir: Any) -> str:
    pid = fhir.create({"resourceType": "Patient", "name": [{"family": "Ada"}]})["id"]
    fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "ROM"}})
    return str(pid)


def test_practitioner_signing_in_through_the_pages_cannot_read_the_audit_trail(app: Any, fhir: Any) -> None:
    """The audit console's sign-in asks for user/AuditEvent.rs: a practitioner is not granted it."""
    pid = _seed(fhir)
    add_user(app, "clin", "practitioner", "Practitioner/pt1")
    register_client(app, Settings(base_url=BASE))  # the pages' public client, as the app registers it
    verifier = secrets.token_urlsafe(48)
    params = authorize_params(CLIENT_NAME, AUDIT_SCOPES, verifier, redirect_uri=PAGES_CALLBACK)
    c = app.test_client()
    page = _consent(c, params, "clin")
    assert (
        "Not granted" in page
        and "user/AuditEvent.rs</code>: a practitioner is never granted AuditEvent" in page
    )
    got = _approve(c, page)
    r = exchange(c, CLIENT_NAME, got["code"], verifier, redirect_uri=PAGES_CALLBACK)
    assert r.status_code == 200, r.get_data(as_text=True)
    tok = r.get_json()
    assert tok["scope"].split() == ["openid", "fhirUser", "user/Patient.rs"]
    h = bearer(tok["access_token"])
    r = c.get("/AuditEvent", headers=h)
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert c.get("/AuditEvent/$export-ndjson", headers={**h, "Accept": "*/*"}).status_code == 403
    assert c.get(f"/Patient/{pid}", headers=h).status_code == 200
    # The clinical console's sign-in keeps every scope it asks for.
    page = _consent(
        c, authorize_params(CLIENT_NAME, CLINICAL_SCOPES, verifier, redirect_uri=PAGES_CALLBACK), "clin"
    )
    assert "Not granted" not in page
    r = exchange(c, CLIENT_NAME, _approve(c, page)["code"], verifier, redirect_uri=PAGES_CALLBACK)
    assert r.get_json()["scope"].split() == CLINICAL_SCOPES.split()


def test_auditor_with_a_wildcard_request_cannot_write(app: Any, fhir: Any) -> None:
    pid = _seed(fhir)
    add_user(app, "aud", "auditor", None)
    scope = "openid fhirUser user/*.cruds"
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    page = _consent(c, authorize_params(client_id, scope, verifier), "aud")
    assert "user/*.cruds</code>: narrowed to user/AuditEvent.rs user/Patient.rs" in page
    assert "Read, search AuditEvent records you can access" in page
    tok = exchange(c, client_id, _approve(c, page)["code"], verifier).get_json()
    assert tok["scope"].split() == ["openid", "fhirUser", "user/AuditEvent.rs", "user/Patient.rs"]
    h = {**bearer(tok["access_token"]), **FHIR_JSON}
    r = c.post("/Patient", json={"resourceType": "Patient"}, headers=h)
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert c.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=h).status_code == 403
    assert c.delete(f"/Patient/{pid}", headers=h).status_code == 403
    assert c.get("/Observation", headers=h).status_code == 403
    assert c.get(f"/Patient/{pid}", headers=h).status_code == 200
    assert c.get("/AuditEvent", headers=h).status_code == 200


@pytest.mark.parametrize(
    ("role", "fhir_user", "asked", "granted", "why"),
    [
        (
            "auditor",
            None,
            "user/Patient.cruds user/Observation.rs patient/Patient.rs launch",
            "user/Patient.rs launch",
            ["narrowed to user/Patient.rs", "AuditEvent and Patient only", "user/ scopes only"],
        ),
        (
            "practitioner",
            "Practitioner/pt1",
            "user/*.rs user/Observation.cruds user/AuditEvent.rs",
            "user/Observation.cruds",
            ["would include AuditEvent", "never granted AuditEvent"],
        ),
        ("admin", None, "user/*.cruds user/AuditEvent.rs", "user/*.cruds user/AuditEvent.rs", []),
    ],
    ids=["auditor", "practitioner", "admin"],
)
def test_each_role_is_capped_and_told_why(
    app: Any, role: str, fhir_user: str | None, asked: str, granted: str, why: list[str]
) -> None:
    add_user(app, "u", role, fhir_user)
    client_id, _ = add_app(app, asked)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    page = _consent(c, authorize_params(client_id, asked, verifier), "u")
    assert all(reason in page for reason in why), page
    assert ("Not granted" in page) == bool(why)
    r = exchange(c, client_id, _approve(c, page)["code"], verifier)
    assert r.status_code == 200 and r.get_json()["scope"].split() == granted.split()


def test_the_consent_page_names_each_cut_scope(app: Any) -> None:
    add_user(app, "aud", "auditor", None)
    asked = "user/Patient.cruds user/Observation.rs patient/Patient.rs user/Goal.rs"
    client_id, _ = add_app(app, "user/Patient.cruds user/Observation.rs patient/Patient.rs")
    page = _consent(app.test_client(), authorize_params(client_id, asked, secrets.token_urlsafe(48)), "aud")
    assert "user/Patient.cruds</code>: narrowed to user/Patient.rs" in page
    assert "user/Observation.rs</code>: an auditor is granted AuditEvent and Patient only" in page
    assert "patient/Patient.rs</code>: an auditor is granted user/ scopes only" in page
    assert "user/Goal.rs</code>: not registered for this app" in page


def test_a_role_that_may_have_nothing_asked_gets_no_code(app: Any) -> None:
    add_user(app, "aud", "auditor", None)
    scope = "user/Observation.rs"
    client_id, _ = add_app(app, scope)
    c = app.test_client()
    params = authorize_params(client_id, scope, secrets.token_urlsafe(48))
    page = _consent(c, params, "aud")
    assert "Nothing to allow" in page and 'value="approve"' not in page
    got = _approve(c, page)  # a forged approve is refused all the same
    assert got["error"] == "invalid_scope" and "code" not in got and got["state"] == params["state"]


def test_patient_gets_patient_scopes_for_their_own_record_only(app: Any, fhir: Any) -> None:
    mine = _seed(fhir)
    other = fhir.create({"resourceType": "Patient"})["id"]
    add_user(app, "pat", "patient", f"Patient/{mine}")
    tok = _token(app, "pat", "launch/patient user/*.rs patient/*.rs")
    assert tok["scope"].split() == ["launch/patient", "patient/*.rs"] and tok["patient"] == mine
    c, h = app.test_client(), bearer(tok["access_token"])
    assert c.get(f"/Patient/{mine}", headers=h).status_code == 200
    assert c.get(f"/Patient/{other}", headers=h).status_code == 404


def _refresh(app: Any, tok: dict[str, Any], **extra: str) -> Any:
    return app.test_client().post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": tok["client_id"],
            "refresh_token": tok["refresh_token"],
        }
        | extra,
    )


def _set_role(app: Any, username: str, role: str) -> None:
    with app.extensions["rehabfhir.sessions"]() as session:
        session.execute(sa.update(AuthUser).where(AuthUser.username == username).values(role=role))
        session.commit()


def test_refresh_reapplies_the_current_role(app: Any, fhir: Any) -> None:
    pid = _seed(fhir)
    add_user(app, "u", "admin", None)
    tok = _token(app, "u", "offline_access user/*.cruds user/AuditEvent.rs user/Patient.cruds")
    assert tok["scope"] == "offline_access user/*.cruds user/AuditEvent.rs user/Patient.cruds"
    _set_role(app, "u", "auditor")  # demoted after the grant
    r = _refresh(app, tok)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["scope"].split() == ["offline_access", "user/AuditEvent.rs", "user/Patient.rs"]
    h = {**bearer(body["access_token"]), **FHIR_JSON}
    assert app.test_client().post("/Patient", json={"resourceType": "Patient"}, headers=h).status_code == 403
    assert app.test_client().get(f"/Patient/{pid}", headers=h).status_code == 200
    # Promoted again: a refresh never widens past the earlier grant of this family.
    _set_role(app, "u", "admin")
    again = _refresh(app, {**body, "client_id": tok["client_id"]})
    assert again.get_json()["scope"].split() == ["offline_access", "user/AuditEvent.rs", "user/Patient.rs"]


def test_refresh_refused_when_the_role_allows_nothing_of_the_grant(app: Any) -> None:
    add_user(app, "u", "practitioner", "Practitioner/pt1")
    tok = _token(app, "u", "offline_access user/Observation.rs")
    _set_role(app, "u", "auditor")
    r = _refresh(app, tok)
    assert (
        r.status_code == 400
        and r.get_json()["error"] == "invalid_grant"
        and "role" in r.get_json()["error_description"]
    )


def test_code_exchange_applies_the_role_at_exchange_time(app: Any) -> None:
    add_user(app, "u", "admin", None)
    scope = "user/*.cruds"
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    got = get_code(c, authorize_params(client_id, scope, verifier), "u")
    _set_role(app, "u", "auditor")  # between consent and exchange
    r = exchange(c, client_id, got["code"], verifier)
    assert r.status_code == 200 and r.get_json()["scope"] == "user/AuditEvent.rs user/Patient.rs"


def test_cli_user_add_takes_the_roles_of_the_table(app: Any, database_url: str, monkeypatch: Any) -> None:
    from server.cli import cli

    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()
    r = runner.invoke(
        cli, ["user", "add", "aud", "--role", "auditor", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert r.exit_code == 0, r.output
    bad = runner.invoke(
        cli, ["user", "add", "x", "--role", "superuser", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert bad.exit_code == 2 and "superuser" in bad.output
    tok = _token(app, "aud", "user/*.rs")
    assert tok["scope"] == "user/AuditEvent.rs user/Patient.rs"
