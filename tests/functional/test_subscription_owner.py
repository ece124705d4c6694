"""A Subscription is its owner's (issue 19): another client's token never sees it, on any read path.

The owner is the client whose token created it, named by the owner tag (server.fhir.access
OWNER_TAG) on every stored version; `permits` refuses other clients' versions and
`restrict_query` keeps them out of search totals. Another client gets 404, like any resource it
may not see.
"""

from __future__ import annotations

from typing import Any

import pytest

from server.fhir.access import OWNER_TAG
from server.subscriptions.worker import DeliveryWorker
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.test_subscriptions import Receiver
from tests.functional.test_subscriptions import receiver  # noqa: F401  (fixture)
from tests.functional.test_subscriptions import subscribe
from tests.functional.test_subscriptions import subscription
from tests.functional.test_subscriptions import worker  # noqa: F401  (fixture)

pytestmark = pytest.mark.pg


def owner_of(resource: dict[str, Any]) -> list[str]:
    return [t["code"] for t in resource.get("meta", {}).get("tag", []) if t.get("system") == OWNER_TAG]


def ids(bundle: dict[str, Any], type_: str = "Subscription") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == type_}


def not_found(r: Any) -> bool:
    return r.status_code == 404 and r.get_json()["issue"][0]["code"] == "not-found"


def test_another_clients_subscription_is_not_found(
    app: Any,
    worker: DeliveryWorker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    a = FhirClient(app.test_client(), client_credentials_token(app))
    b = FhirClient(app.test_client(), client_credentials_token(app))
    mine = subscribe(a, worker, subscription("measure-observation", receiver.url))  # handshake: version 2
    forged = subscription("measure-observation", receiver.url)
    a_client = owner_of(a.call("GET", f"/Subscription/{mine}").get_json())
    forged["meta"] = {"tag": [{"system": OWNER_TAG, "code": a_client[0]}]}  # B cannot claim A's
    theirs = subscribe(b, worker, forged)

    stored = a.call("GET", f"/Subscription/{mine}")
    assert stored.status_code == 200 and stored.get_json()["status"] == "active"
    assert len(a_client) == 1 and owner_of(stored.get_json()) == a_client
    b_client = owner_of(b.call("GET", f"/Subscription/{theirs}").get_json())
    assert len(b_client) == 1 and b_client != a_client

    # read, vread, instance history: 404 for B, answered for A
    assert not_found(b.call("GET", f"/Subscription/{mine}"))
    assert not_found(b.call("GET", f"/Subscription/{mine}/_history/1"))
    assert not_found(b.call("GET", f"/Subscription/{mine}/_history"))
    assert a.call("GET", f"/Subscription/{mine}/_history/1").status_code == 200
    assert len(a.call("GET", f"/Subscription/{mine}/_history").get_json()["entry"]) == 2
    # type history and search: only B's own, in entries and in totals
    assert ids(b.call("GET", "/Subscription/_history").get_json()) == {theirs}
    everything = b.call("GET", "/_history?_count=500").get_json()  # system level: no total counting A's
    assert mine not in ids(everything) and theirs in ids(everything) and "total" not in everything
    found = b.call("GET", "/Subscription").get_json()
    assert (found["total"], ids(found)) == (1, {theirs})
    assert b.call("GET", f"/Subscription?_id={mine}").get_json()["total"] == 0
    assert b.call("GET", f"/Subscription?_id={mine}&_summary=count").get_json()["total"] == 0
    found = a.call("GET", "/Subscription").get_json()
    assert (found["total"], ids(found)) == (1, {mine})
    # a search across types
    assert ids(b.call("GET", "/?_type=Subscription,Patient").get_json()) == {theirs}
    untyped = b.call("GET", f"/?_id={mine},{theirs}").get_json()
    assert (untyped["total"], ids(untyped)) == (1, {theirs})

    # _include through references: each client's Provenance points to its own subscription
    def provenance(target: str) -> dict[str, Any]:
        return {
            "resourceType": "Provenance",
            "target": [{"reference": f"Subscription/{target}"}],
            "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"who": {"display": "tests"}}],
        }

    a.create(provenance(mine))
    b.create(provenance(theirs))
    refused = b.call("POST", "/Provenance", provenance(mine))  # A's does not exist for B
    assert refused.status_code == 422 and "not a resource of this server" in refused.get_data(as_text=True)
    included = b.call("GET", "/Provenance?_include=Provenance:target").get_json()
    assert ids(included) == {theirs}
    assert ids(a.call("GET", "/Provenance?_include=Provenance:target").get_json()) == {mine}
    # a system/ grant is not an administrator's: it sees its own only
    admin = FhirClient(app.test_client(), client_credentials_token(app, "system/Subscription.rs"))
    assert not_found(admin.call("GET", f"/Subscription/{mine}"))
    assert admin.call("GET", "/Subscription").get_json()["total"] == 0
    # delete: as invisible as read
    assert not_found(b.call("DELETE", f"/Subscription/{mine}"))
    assert a.call("GET", f"/Subscription/{mine}").status_code == 200


# -- two users of one app: the owner is the client and the user ------------------------------------

USER_SCOPE = "openid fhirUser offline_access user/Subscription.cruds user/Observation.rs"


def user_token(app: Any, client_id: str, username: str, scope: str = USER_SCOPE) -> dict[str, Any]:
    """A signed-in user's token response for the public app `client_id` (authorization code + PKCE)."""
    import secrets

    from tests.functional.auth_flows import authorize_params
    from tests.functional.auth_flows import exchange
    from tests.functional.auth_flows import get_code

    c = app.test_client()
    verifier = secrets.token_urlsafe(48)
    code = get_code(c, authorize_params(client_id, scope, verifier), username)["code"]
    r = exchange(c, client_id, code, verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return dict(r.get_json())


def test_another_user_of_the_same_app_does_not_see_a_subscription(
    app: Any,
    worker: DeliveryWorker,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    from server.fhir.access import OWNER_USER_TAG
    from tests.functional.auth_flows import add_app
    from tests.functional.auth_flows import add_user

    client_id, _ = add_app(app, USER_SCOPE)
    # Both name the same fhirUser: still two owners (the owner is the signed-in user, not fhirUser).
    add_user(app, "alice", "practitioner", "Practitioner/p1")
    add_user(app, "bob", "practitioner", "Practitioner/p1")
    a = FhirClient(app.test_client(), user_token(app, client_id, "alice")["access_token"])
    b = FhirClient(app.test_client(), user_token(app, client_id, "bob")["access_token"])
    body = subscription("measure-observation", receiver.url, header=["Authorization: Bearer alice-secret"])
    mine = subscribe(a, worker, body)
    stored = a.call("GET", f"/Subscription/{mine}")
    assert stored.status_code == 200 and stored.get_json()["status"] == "active"
    tags = [t for t in stored.get_json()["meta"]["tag"] if t["system"] == OWNER_USER_TAG]
    assert len(tags) == 1 and tags[0]["code"].endswith("@" + client_id) and owner_of(stored.get_json()) == []

    # B (same client id): read, vread, history, search, update, $status, $events: as if it did not exist
    assert not_found(b.call("GET", f"/Subscription/{mine}"))
    assert not_found(b.call("GET", f"/Subscription/{mine}/_history/1"))
    assert not_found(b.call("GET", f"/Subscription/{mine}/_history"))
    assert b.call("GET", "/Subscription").get_json()["total"] == 0
    assert b.call("GET", f"/Subscription?_id={mine}").get_json()["total"] == 0
    assert not_found(b.call("GET", f"/Subscription/{mine}/$status"))
    assert not_found(b.call("GET", f"/Subscription/{mine}/$events"))
    assert b.call("GET", f"/Subscription/$status?id={mine}").get_json()["total"] == 0
    # A PUT of the served resource would send A's stored header to B's endpoint: refused, unchanged.
    theirs = {k: v for k, v in stored.get_json().items() if k != "meta"}
    assert not_found(b.call("PUT", f"/Subscription/{mine}", theirs))
    assert not_found(b.call("DELETE", f"/Subscription/{mine}"))
    # B's own subscription on the same app is B's only
    own = subscribe(b, worker, subscription("measure-observation", receiver.url))
    found = b.call("GET", "/Subscription").get_json()
    assert (found["total"], ids(found)) == (1, {own})
    assert not_found(a.call("GET", f"/Subscription/{own}"))

    # A still has it all
    assert a.call("GET", f"/Subscription/{mine}").get_json()["meta"]["versionId"] == "2"
    assert len(a.call("GET", f"/Subscription/{mine}/_history").get_json()["entry"]) == 2
    found = a.call("GET", "/Subscription").get_json()
    assert (found["total"], ids(found)) == (1, {mine})
    st = a.call("GET", f"/Subscription/{mine}/$status")
    assert st.status_code == 200 and st.get_json()["entry"][0]["resource"]["status"] == "active"
    assert a.call("GET", f"/Subscription/{mine}/$events").status_code == 200
    listed = a.call("GET", "/Subscription/$status").get_json()
    assert [e["resource"]["subscription"]["reference"] for e in listed["entry"]] == [f"Subscription/{mine}"]
    again = a.call("PUT", f"/Subscription/{mine}", theirs)
    assert again.status_code == 200, again.get_data(as_text=True)
    receiver.received.clear()
    worker.run_until_idle()  # the new handshake keeps A's stored header
    assert [h["Authorization"] for h, _ in receiver.received] == ["Bearer alice-secret"]
    # Deleted: gone for the list of $status and for its own $status and $events, as for a search.
    assert a.call("DELETE", f"/Subscription/{mine}").status_code in (200, 204)
    assert a.call("GET", "/Subscription/$status").get_json()["total"] == 0
    assert not_found(a.call("GET", f"/Subscription/{mine}/$status"))
    assert not_found(a.call("GET", f"/Subscription/{mine}/$events"))
