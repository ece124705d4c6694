"""A subscription's grant is judged when each notification is sent (issue 19), not as it was created.

Revoking the creating token (or its refresh family) or unregistering its client turns the
subscription off with the reason, and nothing more is sent; narrowing the client's registered
scopes withholds what they no longer cover. A patient's token may own a subscription: it hears of
its patient only. Plain-http loopback endpoints are for development only. Subscription/$status
answers for the caller's own subscriptions.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from server.fhir.subscriptions import subscription as sub
from server.store import subscriptions as store
from server.subscriptions.worker import DeliveryWorker
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional import test_subscriptions as subs
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.test_subscription_owner import user_token
from tests.functional.test_subscriptions import PT
from tests.functional.test_subscriptions import Receiver
from tests.functional.test_subscriptions import audited
from tests.functional.test_subscriptions import obs
from tests.functional.test_subscriptions import patients
from tests.functional.test_subscriptions import subscribe
from tests.functional.test_subscriptions import subscription

pytestmark = pytest.mark.pg
receiver = subs.receiver  # fixtures
worker = subs.worker


def backend(app: Any, scope: str = "system/*.cruds") -> tuple[str, str, str]:
    """A confidential client and its client_credentials token: (client_id, secret, token)."""
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("tests", scope, "symmetric")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    r = app.test_client().post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": scope}, headers=basic
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return client.client_id, str(secret), str(r.get_json()["access_token"])


def revoke(app: Any, token: str, client_id: str, secret: str | None = None) -> None:
    """RFC 7009 revocation at /auth/revoke (a public client names itself, a confidential one signs in)."""
    data = {"token": token}
    headers = {}
    if secret is None:
        data["client_id"] = client_id
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = app.test_client().post("/auth/revoke", data=data, headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)


def stored(fhir: FhirClient, id_: str) -> dict[str, Any]:
    r = fhir.call("GET", f"/Subscription/{id_}")
    assert r.status_code == 200, r.get_data(as_text=True)
    return dict(r.get_json())


def state(app: Any, id_: str) -> Any:
    with app.extensions["rehabfhir.sessions"]() as session:
        return store.get(session, id_)


# -- revocation ---------------------------------------------------------------------------------------


def test_revoking_the_backend_token_turns_the_subscription_off(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    client_id, secret, token = backend(app)
    me = FhirClient(app.test_client(), token)
    id_ = subscribe(me, worker, subscription("measure-observation", receiver.url))
    recorded = state(app, id_)
    assert recorded.token_id and recorded.token_family is None and recorded.subject is None
    patients(fhir, "a")
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1]  # delivered while the grant stands
    fhir.create(obs("a", (PT, "tug")))
    revoke(app, token, client_id, secret)
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1]  # events 2 and 3 never went out
    after = stored(fhir_of(app, client_id, secret), id_)
    assert after["status"] == "off" and "revoked" in after["error"]
    assert state(app, id_).status == store.OFF
    fhir.create(obs("a", (PT, "tug")))
    assert worker.run_until_idle() == 0 and receiver.numbers(id_) == [1]  # off: not even leased
    assert [s for s, _ in audited(app, id_)] == ["handshake", "event-notification"]


def fhir_of(app: Any, client_id: str, secret: str) -> FhirClient:
    """A new token of the same backend client (the revoked one is refused)."""
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    r = app.test_client().post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds"}, headers=basic
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return FhirClient(app.test_client(), str(r.get_json()["access_token"]))


def test_revoking_a_users_refresh_family_turns_the_subscription_off(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    scope = "openid fhirUser offline_access user/Subscription.cruds user/Observation.rs"
    client_id, _ = add_app(app, scope)
    add_user(app, "carol", "practitioner", "Practitioner/c")
    answer = user_token(app, client_id, "carol", scope)
    me = FhirClient(app.test_client(), answer["access_token"])
    id_ = subscribe(me, worker, subscription("measure-observation", receiver.url))
    assert state(app, id_).token_family  # the refresh family is recorded with the jti
    revoke(app, answer["refresh_token"], client_id)  # the refresh token: its whole family
    assert me.call("GET", f"/Subscription/{id_}").status_code == 401  # the request path agrees
    patients(fhir, "a")
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(id_) == []
    after = state(app, id_)
    assert after.status == store.OFF and after.error == (
        "The owner's grant was withdrawn: the token that created it was revoked"
    )
    again = FhirClient(app.test_client(), user_token(app, client_id, "carol", scope)["access_token"])
    assert stored(again, id_)["status"] == "off"  # its owner (a new sign-in) sees why


def test_an_unregistered_client_turns_the_subscription_off(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    client_id, _secret, token = backend(app)
    id_ = subscribe(
        FhirClient(app.test_client(), token), worker, subscription("careplan-changed", receiver.url)
    )
    with app.extensions["rehabfhir.engine"].begin() as conn:
        conn.execute(sa.text("DELETE FROM auth_client WHERE client_id = :c"), {"c": client_id})
    patients(fhir, "a")
    fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/a"},
        }
    )
    worker.run_until_idle()
    assert receiver.numbers(id_) == []
    assert state(app, id_).status == store.OFF
    assert state(app, id_).error.endswith(f"its client {client_id} is no longer registered")


# -- the client's registered scopes now ---------------------------------------------------------------


def test_narrowing_the_clients_registered_scopes_withholds(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    auth = app.extensions["rehabfhir.auth"].store
    client_id, _secret, token = backend(app)
    me = FhirClient(app.test_client(), token)
    full = subscribe(me, worker, subscription("measure-observation", receiver.url, "full-resource"))
    plans = subscribe(me, worker, subscription("careplan-changed", receiver.url))
    receiver.received.clear()
    patients(fhir, "a")
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(full) == [1]
    assert auth.set_client_scope(client_id, "openid")  # nothing clinical any more
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(full) == [1]  # event 2 withheld: its number is skipped, not retried
    assert state(app, full).delivered == 2 and state(app, full).status == store.ACTIVE
    # Narrowed to CarePlan: the Observation topic's events stay withheld, the CarePlan one's go out.
    assert auth.set_client_scope(client_id, "system/Subscription.cruds system/CarePlan.rs")
    fhir.create(obs("a", (PT, "tug")))
    plan = fhir.create(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/a"},
        }
    )
    worker.run_until_idle()
    assert receiver.numbers(full) == [1] and receiver.numbers(plans) == [1]
    assert receiver.focus() == [receiver.focus()[0], f"CarePlan/{plan['id']}"]
    # A parameter restriction in the registration is applied per resource.
    assert auth.set_client_scope(client_id, "system/Observation.rs?patient=Patient/b")
    patients(fhir, "b")
    fhir.create(obs("a", (PT, "tug")))
    theirs = fhir.create(obs("b", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(full) == [1, 5]
    sent = [e["resource"]["id"] for _, b in receiver.received for e in b["entry"][1:] if "resource" in e]
    assert sent[-1] == theirs["id"]
    # Registered for everything again: delivered again (within the token's own grant, as ever).
    assert auth.set_client_scope(client_id, "system/*.cruds")
    fhir.create(obs("a", (PT, "tug")))
    worker.run_until_idle()
    assert receiver.numbers(full) == [1, 5, 6]


# -- a patient's token ----------------------------------------------------------------------------------


def patient_app_token(app: Any, patient: str, scope: str) -> str:
    """A patient's token (bound to Patient/patient) from a public app registered for `scope`."""
    from tests.functional.auth_flows import authorize_params
    from tests.functional.auth_flows import exchange
    from tests.functional.auth_flows import get_code

    add_user(app, f"pat-{patient}", "patient", f"Patient/{patient}")
    client_id, _ = add_app(app, scope)
    c = app.test_client()
    verifier = secrets.token_urlsafe(48)
    code = get_code(c, authorize_params(client_id, scope, verifier), f"pat-{patient}")["code"]
    r = exchange(c, client_id, code, verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"])


PATIENT_SCOPE = "launch/patient openid fhirUser patient/Subscription.cruds patient/Observation.rs"


def test_a_patient_scoped_subscriber_hears_of_its_patient_only(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    patients(fhir, "a", "b")
    me = FhirClient(app.test_client(), patient_app_token(app, "a", PATIENT_SCOPE))
    id_ = subscribe(me, worker, subscription("measure-observation", receiver.url, "full-resource"))
    other = subscribe(
        me, worker, subscription("measure-observation", receiver.url, "id-only", "patient=Patient/b")
    )
    assert state(app, id_).patient == "a" and state(app, id_).subject  # owned by the app and the patient
    receiver.received.clear()
    mine = fhir.create(obs("a", (PT, "tug")))
    fhir.create(obs("b", (PT, "tug")))
    fhir.create(obs("b", (PT, "pain-nrs")))
    also_mine = fhir.create(obs("a", (PT, "pain-nrs")))
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1, 2]  # numbered only for what the patient may see: no gaps
    assert receiver.numbers(other) == []  # a filter naming another patient never matches the grant
    assert receiver.focus() == [f"Observation/{mine['id']}", f"Observation/{also_mine['id']}"]
    sent = [e["resource"]["subject"] for _, b in receiver.received for e in b["entry"][1:]]
    assert sent == [{"reference": "Patient/a"}] * 2
    events = me.call("GET", f"/Subscription/{id_}/$events").get_json()
    assert [e["eventNumber"] for e in events["entry"][0]["resource"]["notificationEvent"]] == ["1", "2"]
    found = me.call("GET", "/Subscription").get_json()
    assert found["total"] == 2
    # Another patient's token (another app, or the same app) does not see it.
    b = FhirClient(app.test_client(), patient_app_token(app, "b", PATIENT_SCOPE))
    assert b.call("GET", f"/Subscription/{id_}").status_code == 404
    assert b.call("GET", f"/Subscription/{id_}/$events").status_code == 404
    # A patient's subscription points to no other patient (an extension's reference).
    pointing = subscription("measure-observation", receiver.url)
    pointing["extension"] = [{"url": "https://example.org/x", "valueReference": {"reference": "Patient/b"}}]
    r = me.call("POST", "/Subscription", pointing)
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"


def test_a_patient_token_needs_the_topics_type(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    patients(fhir, "a")
    scope = "launch/patient openid fhirUser patient/Subscription.cruds patient/CarePlan.rs"
    me = FhirClient(app.test_client(), patient_app_token(app, "a", scope))
    for content in ("full-resource", "id-only"):
        r = me.call("POST", "/Subscription", subscription("measure-observation", receiver.url, content))
        assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert me.call("POST", "/Subscription", subscription("careplan-changed", receiver.url)).status_code == 201
    no_write = "launch/patient openid fhirUser patient/Subscription.rs patient/Observation.rs"
    reader = FhirClient(app.test_client(), patient_app_token(app, "a2", no_write))
    r = reader.call("POST", "/Subscription", subscription("measure-observation", receiver.url))
    assert r.status_code == 403


# -- endpoints outside development ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/hook"]
)
def test_a_plain_http_loopback_endpoint_is_refused_outside_development(
    app: Any, fhir: FhirClient, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    assert sub._config is not None and sub._config.allow_loopback  # the tests run in development mode
    monkeypatch.setattr(sub, "_config", replace(sub._config, allow_loopback=False))  # as in production
    r = fhir.call("POST", "/Subscription", subscription("careplan-changed", endpoint))
    assert r.status_code == 422, r.get_data(as_text=True)
    issue = r.get_json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"] and "https" in issue["diagnostics"]
    https = fhir.call("POST", "/Subscription", subscription("careplan-changed", "https://127.0.0.1/hook"))
    assert https.status_code == 201  # https to loopback is fine anywhere


def test_only_development_mode_allows_plain_http_loopback() -> None:
    from server.api.subscription_routes import config
    from server.settings import Settings

    production = Settings(mode="production", secret_key="s" * 48)
    assert config(production).allow_loopback is False
    assert config(Settings(mode="development")).allow_loopback is True


# -- Subscription/$status (type level) -------------------------------------------------------------------


def test_type_level_status(app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver) -> None:
    first = subscribe(fhir, worker, subscription("careplan-changed", receiver.url))
    second = subscribe(fhir, worker, subscription("measure-observation", receiver.url))
    r = fhir.call("GET", f"/Subscription/$status?id={first}")
    assert r.status_code == 200, r.get_data(as_text=True)
    bundle = r.get_json()
    assert (bundle["type"], bundle["total"]) == ("searchset", 1)
    status = bundle["entry"][0]["resource"]
    assert (status["resourceType"], status["type"], status["status"]) == (
        "SubscriptionStatus",
        "query-status",
        "active",
    )
    assert status["subscription"] == {"reference": f"Subscription/{first}"}
    both = fhir.call("GET", f"/Subscription/$status?id={first},{second}&id=nothing").get_json()
    assert sorted(e["resource"]["subscription"]["reference"] for e in both["entry"]) == sorted(
        [f"Subscription/{first}", f"Subscription/{second}"]
    )
    listed = fhir.call("GET", "/Subscription/$status").get_json()
    assert listed["total"] == 2
    posted = fhir.call(
        "POST",
        "/Subscription/$status",
        {"resourceType": "Parameters", "parameter": [{"name": "id", "valueString": second}]},
    ).get_json()
    assert [e["resource"]["subscription"]["reference"] for e in posted["entry"]] == [f"Subscription/{second}"]
    odd = fhir.call("POST", "/Subscription/$status", {"resourceType": "Parameters", "parameter": 5})
    assert odd.status_code == 200 and odd.get_json()["total"] == 2  # no usable parameter: all of them
    assert fhir.call("GET", "/Subscription/$status?status=off").get_json()["total"] == 0
    # Refused: no token, a token without Subscription, another client (sees none of them), bad ids
    assert (
        FhirClient(app.test_client(), "").call("GET", f"/Subscription/$status?id={first}").status_code == 401
    )
    no_scope = FhirClient(app.test_client(), client_credentials_token(app, "system/Observation.rs"))
    refused = no_scope.call("GET", f"/Subscription/$status?id={first}")
    assert refused.status_code == 403 and refused.get_json()["issue"][0]["code"] == "forbidden"
    other = FhirClient(app.test_client(), client_credentials_token(app))
    assert other.call("GET", f"/Subscription/$status?id={first}").get_json()["total"] == 0
    assert other.call("GET", "/Subscription/$status").get_json()["total"] == 0
    for bad in ("a%00b", "x" * 65, "a/b"):
        r = fhir.call("GET", f"/Subscription/$status?id={bad}")
        assert r.status_code == 400 and r.get_json()["issue"][0]["expression"] == ["id"], bad
    # Audited as an operation, refusals too
    with app.extensions["rehabfhir.engine"].connect() as conn:
        rows = conn.execute(
            sa.text("SELECT outcome, query FROM audit_event WHERE subtype = 'operation' ORDER BY pk")
        ).all()
    queries = [(o, q) for o, q in rows if q and "/Subscription/$status" in q]
    assert (0, f"GET /Subscription/$status?id={first}") in queries
    assert any(o != 0 for o, _ in queries)  # the 403
