"""Revision s003: a subscription a user's token created before it keeps its owner, now client and user.

Before s003 the owner tag named the client only, so every user of one app saw each other's
subscriptions. The migration gives such a subscription its user as subject and rewrites its owner
tag (every stored version's body and the `_tag` index row); a backend client's stays client-only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from server.fhir.access import OWNER_TAG
from server.fhir.access import AccessContext
from server.fhir.access import ScopeRule
from server.fhir.access import permits
from server.store.migrate import upgrade
from server.store.session import make_engine
from tests.conftest import fresh_postgres

NOW = datetime(2026, 12, 1)
READ = (ScopeRule("user", "Subscription", frozenset("rs")),)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        e = make_engine(f"sqlite:///{tmp_path}/m.db")
        yield e
        e.dispose()
        return
    with fresh_postgres() as url:
        e = make_engine(url)
        yield e
        e.dispose()


def _legacy(conn: sa.Connection, id_: str, client: str, user: str | None) -> None:
    """A subscription as a004 stored it: client-only owner tag, two versions, its `_tag` index row."""
    conn.execute(
        sa.text(
            "INSERT INTO subscription_state (id, status, topic, filters, endpoint, headers, content,"
            " timeout, max_count, client_id, grant_scopes, user_id, base_url, events, delivered, failures,"
            " created) VALUES (:id, 'active', 't', '[]', 'https://e.example/h', '[]', 'id-only', 10, 1,"
            " :client, 'user/Subscription.cruds', :user, 'http://x/fhir', 0, 0, 0, :now)"
        ),
        {"id": id_, "client": client, "user": user, "now": NOW},
    )
    bodies = [
        {
            "resourceType": "Subscription",
            "id": id_,
            "meta": {"tag": [{"system": "urn:other", "code": "k"}, {"system": OWNER_TAG, "code": client}]},
            "status": status,
        }
        for status in ("requested", "active")
    ]
    pk = conn.execute(
        sa.text(
            "INSERT INTO resource (type, id, version, last_updated, deleted, body)"
            " VALUES ('Subscription', :id, 2, :now, false, :body) RETURNING pk"
        ),
        {"id": id_, "now": NOW, "body": json.dumps(bodies[1])},
    ).scalar_one()
    for version, body in enumerate(bodies, 1):
        conn.execute(
            sa.text(
                "INSERT INTO resource_version (res_pk, type, id, version, last_updated, method, deleted,"
                " body) VALUES (:pk, 'Subscription', :id, :v, :now, 'PUT', false, :body)"
            ),
            {"pk": pk, "id": id_, "v": version, "now": NOW, "body": json.dumps(body)},
        )
    conn.execute(
        sa.text("INSERT INTO idx_token (res_pk, param, system, code) VALUES (:pk, '_tag', :s, :c)"),
        {"pk": pk, "s": OWNER_TAG, "c": client},
    )


def test_a_users_subscription_gets_a_client_and_user_owner(engine: sa.Engine) -> None:
    upgrade(engine, "a004")
    with engine.begin() as conn:
        _legacy(conn, "mine", "app", "u-alice")
        _legacy(conn, "service", "backend", None)
    upgrade(engine, "s003")
    with engine.connect() as conn:
        subjects = dict(conn.execute(sa.text("SELECT id, subject FROM subscription_state")).all())
        bodies = {
            (i, v): json.loads(b)
            for i, v, b in conn.execute(sa.text("SELECT id, version, body FROM resource_version")).all()
        }
        current = {i: json.loads(b) for i, b in conn.execute(sa.text("SELECT id, body FROM resource")).all()}
        index = sorted(conn.execute(sa.text("SELECT system, code FROM idx_token WHERE param = '_tag'")).all())
    assert subjects == {"mine": "u-alice", "service": None}
    alice = AccessContext(user="u-alice", client_id="app", rules=READ)
    bob = AccessContext(user="u-bob", client_id="app", rules=READ)
    for body in (bodies[("mine", 1)], bodies[("mine", 2)], current["mine"]):
        assert permits(alice, "Subscription", "r", body) and not permits(bob, "Subscription", "r", body)
        assert {"system": "urn:other", "code": "k"} in body["meta"]["tag"]  # other tags kept
    service = AccessContext(
        client_id="backend", rules=(ScopeRule("system", "Subscription", frozenset("rs")),)
    )
    assert permits(service, "Subscription", "r", current["service"])
    assert current["service"]["meta"]["tag"][1] == {"system": OWNER_TAG, "code": "backend"}
    assert index == sorted(
        [(OWNER_TAG, "backend"), ("https://rehabfhir.org/fhir/CodeSystem/owner-client-user", "u-alice@app")]
    )
