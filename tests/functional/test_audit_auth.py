"""Sign-in and token events in the audit trail: login success and failure, token issue, refresh, revoke."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import basic
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code
from tests.functional.auth_flows import login
from tests.functional.test_audit import events

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUTH_EVENT = "https://rehabfhir.org/fhir/CodeSystem/auth-event"


def auth_events(app: Any) -> list[tuple[str, str, int, str | None, str | None]]:
    """(type, subtype, outcome, client, actor) of each sign-in and token event, oldest first."""
    return [
        (r["type"], r["subtype"], r["outcome"], r["client"], r["actor"])
        for r in events(app, auth=True)
        if r["type"] == "110114"
    ]


def test_token_issue_and_failure(app: Any) -> None:
    client_id, secret = add_app(app, "system/*.rs", kind="symmetric")
    c = app.test_client()
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}
    assert c.post("/auth/token", data=form, headers=basic(client_id, secret)).status_code == 200
    assert c.post("/auth/token", data=form, headers=basic(client_id, "wrong")).status_code == 401
    assert (
        c.post(
            "/auth/token", data={**form, "scope": "user/*.rs"}, headers=basic(client_id, secret)
        ).status_code
        == 400
    )
    assert auth_events(app) == [
        ("110114", "token-issue", 0, client_id, client_id),
        ("110114", "token-issue", 8, client_id, None),
        ("110114", "token-issue", 4, client_id, None),
    ]
    rows = [r for r in events(app, auth=True) if r["type"] == "110114"]
    ok, forged, _ = (r["body"] for r in rows)
    assert f'"system":"{AUTH_EVENT}"' in ok and "system/Patient.rs" in ok
    assert '"outcome":"8"' in forged and "invalid_client" in forged
    # Introspection is not an authentication event.
    c.post("/auth/introspect", data={"token": "x"}, headers=basic(client_id, secret))
    assert len(auth_events(app)) == 3


def test_login_code_exchange_refresh_and_revoke(app: Any, fhir: Any) -> None:
    pid = fhir.create({"resourceType": "Patient"})["id"]
    add_user(app, "pat", "patient", f"Patient/{pid}")
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    client_id, _ = add_app(app, scope)
    c = app.test_client()
    verifier = secrets.token_urlsafe(48)
    params = authorize_params(client_id, scope, verifier)
    page = c.get("/auth/authorize", query_string=params).get_data(as_text=True)
    assert login(c, page, "pat", "x").status_code == 401
    got = get_code(c, params, "pat")
    tok = exchange(c, client_id, got["code"], verifier).get_json()
    r = c.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "client_id": client_id, "refresh_token": tok["refresh_token"]},
    )
    assert r.status_code == 200
    stale = c.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "client_id": client_id, "refresh_token": tok["refresh_token"]},
    )
    assert stale.status_code == 400
    assert (
        c.post(
            "/auth/revoke", data={"token": r.get_json()["refresh_token"], "client_id": client_id}
        ).status_code
        == 200
    )
    me = f"Patient/{pid}"
    assert auth_events(app)[1:] == [  # [0]: the fhir fixture's own token
        ("110114", "110122", 8, client_id, "pat"),
        ("110114", "110122", 0, client_id, me),
        ("110114", "token-issue", 0, client_id, me),
        ("110114", "token-refresh", 0, client_id, me),
        ("110114", "token-refresh", 4, client_id, None),
        ("110114", "token-revoke", 0, client_id, None),
    ]
    logins = [r["body"] for r in events(app, auth=True) if r["subtype"] == "110122"]
    assert all(f'"system":"{DCM}"' in body for body in logins)
    assert "wrong username or password" in logins[0]


@pytest.mark.parametrize("path", ["/auth/token", "/auth/authorize"])
def test_audit_failure_refuses_the_sign_in(app: Any, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: a token is not handed out if its issue cannot be recorded."""
    from server.audit import store

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("audit database down")

    client_id, secret = add_app(app, "system/*.rs", kind="symmetric")
    monkeypatch.setattr(store, "write_events", broken)
    if path == "/auth/token":
        r = app.test_client().post(
            "/auth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
        )
        assert r.status_code == 500 and "access_token" not in r.get_data(as_text=True)
        assert r.get_json()["error"] == "server_error"
    else:
        add_user(app, "doc", "practitioner", "Practitioner/1")
        app_id, _ = add_app(app, "openid fhirUser user/*.rs")
        c = app.test_client()
        params = authorize_params(app_id, "openid fhirUser user/*.rs", "v" * 50)
        page = c.get("/auth/authorize", query_string=params).get_data(as_text=True)
        r = login(c, page, "doc")
        assert r.status_code == 500 and "code=" not in r.headers.get("Location", "")
