"""A subscription's grant is judged when each notification is sent (issue 19), not as it was created.

Revoking the creating token (or its refresh family) or unregistering its client turns the
subscription off with the reason, and nothing more is sent; narrowing the client's registered
scopes withholds what they no longer cover.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import sqlalchemy as sa

from server.store import subscriptions as store
from server.subscriptions.worker import DeliveryWorker
from tests.conftest import FhirClient
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
