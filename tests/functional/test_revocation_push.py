"""Revocations reach every worker: two app instances (two engines, two token caches) on one database.

SQLite: the other instance sees the bumped generation on its next request. PostgreSQL: its
listener thread hears the NOTIFY sent at commit (waited for, bounded, before its next request),
drops its cache, and a lost listener connection drops the cache and stops trusting it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm as so

from auth.revocation import APPLICATION_NAME
from auth.revocation import PgWatch
from auth.server import Urls
from server import create_app
from server.settings import Settings
from tests.functional.auth_flows import BASE
from tests.functional.auth_flows import basic
from tests.functional.auth_flows import bearer

DELIVERY_BOUND = 5.0  # seconds a NOTIFY may take to reach the other instance's listener


@pytest.fixture
def other(app: Any, database_url: str, tmp_path: Any) -> Iterator[Any]:
    """A second app instance (its own engine, sessions and token cache) on the same database."""
    second = create_app(
        Settings(
            database_url=database_url,
            testing=True,
            base_url=BASE,
            audit_witness=str(tmp_path / "witness-b.jsonl"),
            audit_head_interval=0,
            export_worker=False,
        )
    )
    yield second
    second.extensions["rehabfhir.auth"].bearer.watch.stop()
    second.extensions["rehabfhir.engine"].dispose()


def _live(app: Any) -> None:
    watch = app.extensions["rehabfhir.auth"].bearer.watch
    if isinstance(watch, PgWatch):
        assert watch.wait_live(10), "the revocation listener did not connect"


def _token(app: Any) -> tuple[str, dict[str, str]]:
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("push", "system/*.rs", "symmetric")
    auth = basic(client.client_id, secret or "")
    r = app.test_client().post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"}, headers=auth
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"]), auth


def _revocation_queries(app: Any) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(app.extensions["rehabfhir.engine"], "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if "auth_revocation." in statement or "FROM auth_revocation " in statement:
            seen.append(statement)

    return seen


def _heard(app: Any, before: int) -> float:
    """Wait (bounded) until a PostgreSQL listener heard a notification; seconds waited (0 on SQLite)."""
    watch = app.extensions["rehabfhir.auth"].bearer.watch
    if not isinstance(watch, PgWatch):
        return 0.0
    start = time.monotonic()
    while watch.notifications <= before and time.monotonic() - start < DELIVERY_BOUND:
        time.sleep(0.005)
    assert watch.notifications > before, "the NOTIFY did not reach the other instance"
    return time.monotonic() - start


def _notifications(app: Any) -> int:
    watch = app.extensions["rehabfhir.auth"].bearer.watch
    return watch.notifications if isinstance(watch, PgWatch) else 0


def test_cached_token_answers_without_a_revocation_query(app: Any, other: Any) -> None:
    _live(other)
    token, _ = _token(app)
    queries = _revocation_queries(other)
    c = other.test_client()
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    assert len(queries) == 1  # the first request checks revocation in the database
    for _ in range(3):
        assert c.get("/Patient", headers=bearer(token)).status_code == 200
    assert len(queries) == 1  # then the worker's cache answers


def test_revoked_through_one_instance_refused_by_the_other(app: Any, other: Any) -> None:
    _live(app)
    _live(other)
    token, auth = _token(app)
    a, b = app.test_client(), other.test_client()
    for c in (a, b, a, b):  # both instances have it cached
        assert c.get("/Patient", headers=bearer(token)).status_code == 200
    before = _notifications(other)
    assert a.post("/auth/revoke", data={"token": token}, headers=auth).status_code == 200
    waited = _heard(other, before)
    r = b.get("/Patient", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.get_data(as_text=True), (waited, r.get_data(as_text=True))
    # The instance that revoked refuses it at once too, and a token not revoked still works on both.
    assert a.get("/Patient", headers=bearer(token)).status_code == 401
    fresh, _ = _token(other)
    assert a.get("/Patient", headers=bearer(fresh)).status_code == 200
    assert b.get("/Patient", headers=bearer(fresh)).status_code == 200


def test_cached_token_refused_right_after_revocation(app: Any) -> None:
    _live(app)
    token, auth = _token(app)
    c = app.test_client()
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    assert c.get("/Patient", headers=bearer(token)).status_code == 200  # cached
    assert c.post("/auth/revoke", data={"token": token}, headers=auth).status_code == 200
    r = c.get("/Patient", headers=bearer(token))  # no wait: the revoking worker dropped its cache
    assert r.status_code == 401 and "revoked" in r.get_data(as_text=True)


def test_a_revocation_written_by_anyone_drops_the_cache(other: Any, database_url: str) -> None:
    """A revocation committed by another process (its own engine, no app) reaches the instance."""
    from datetime import datetime
    from datetime import timedelta

    from auth.store import AuthStore
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    _live(other)
    token, _ = _token(other)
    c = other.test_client()
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    claims = other.extensions["rehabfhir.auth"].server.verify(token, Urls(BASE))
    before = _notifications(other)
    engine = make_engine(database_url)
    try:
        AuthStore(make_session_factory(engine)).revoke(
            "jti:" + claims["jti"], datetime.now() + timedelta(minutes=10)
        )
    finally:
        engine.dispose()
    _heard(other, before)
    assert c.get("/Patient", headers=bearer(token)).status_code == 401


def test_lost_listener_connection_drops_and_distrusts_the_cache(other: Any, database_url: str) -> None:
    """PostgreSQL: a listener that loses its connection drops the cache and reconnects; SQLite: any
    change of the counter (here rewritten behind the server's back) drops the cache."""
    _live(other)
    token, _ = _token(other)
    c = other.test_client()
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    cache = other.extensions["rehabfhir.auth"].bearer.cache
    watch = other.extensions["rehabfhir.auth"].bearer.watch
    assert len(cache) == 1
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            if isinstance(watch, PgWatch):
                connects = watch.connects
                killed = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n"
                    ),
                    {"n": APPLICATION_NAME},
                ).all()
                assert killed
            else:
                conn.execute(sa.text("DELETE FROM auth_revocation_generation"))
                conn.execute(sa.text("INSERT INTO auth_revocation_generation VALUES (1, 12345)"))
        if isinstance(watch, PgWatch):
            start = time.monotonic()
            while watch.connects == connects and time.monotonic() - start < 10:
                time.sleep(0.01)
            assert watch.connects > connects and watch.live  # reconnected
            assert len(cache) == 0  # dropped: notifications may have been missed meanwhile
    finally:
        engine.dispose()
    queries = _revocation_queries(other)
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    assert len(queries) == 1  # checked in the database again before being trusted
    assert c.get("/Patient", headers=bearer(token)).status_code == 200
    assert len(queries) == 1  # and trusted again afterwards


def test_a_listener_whose_notifications_do_not_arrive_is_never_trusted(database_url: str) -> None:
    """PostgreSQL: LISTEN through a transaction-mode pool runs but delivers nothing. Played by a
    listener on a channel nobody notifies: its own probe never comes back, so it never vouches and
    every request checks revocation in the database. SQLite: nothing vouches without the request's
    connection (the counter is read on it)."""
    from auth.revocation import TokenCache
    from auth.revocation import watch_for
    from server.store.session import make_engine

    engine = make_engine(database_url)
    cache = TokenCache(8)
    watch = watch_for(cache, engine, database_url if engine.dialect.name == "postgresql" else "")
    try:
        if isinstance(watch, PgWatch):
            watch.listen_channel = "rehabfhir_nowhere"
            assert not watch.wait_live(5)  # the probe timeout (3 s) passed, then it retries
            assert watch.sync(None) is None and watch.connects == 0
            watch.listen_channel = "rehabfhir_revocation"  # a delivering connection: trusted again
            assert watch.wait_live(10) and watch.sync(None) == cache.epoch
        else:
            assert watch.sync(None) is None
            with engine.connect() as conn, so.Session(bind=conn) as session:
                assert watch.sync(session) == cache.epoch
    finally:
        watch.stop()
        engine.dispose()


def test_a_multi_host_url_listens(database_url: str) -> None:
    """SQLAlchemy's multi-host URL (`?host=a:5432&host=b:5432`, docs/deploy.md's pg_auto_failover form)
    is given to libpq as `host=a,b port=5432,5432`: the listener connects and is trusted (libpq took
    `b:5432` for a host name, so no worker ever heard a revocation). SQLite: no listener."""
    from auth.revocation import TokenCache
    from auth.revocation import libpq_hosts
    from auth.revocation import watch_for
    from server.store.session import make_engine

    url = sa.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        assert libpq_hosts(url) == url
        return
    port = url.port or 5432
    multi = url.set(host=None, port=None).update_query_dict(
        {"host": [f"{url.host}:{port}", f"localhost:{port}"]}
    )
    plain = libpq_hosts(multi)
    assert plain.query["host"] == f"{url.host},localhost" and plain.query["port"] == f"{port},{port}"
    assert libpq_hosts(url) == url  # one host: unchanged
    v6 = libpq_hosts(
        url.set(host=None, port=None).update_query_dict({"host": [f"[::1]:{port}", "::1", "/run/pg"]})
    )
    assert v6.query["host"] == "::1,::1,/run/pg" and v6.query["port"] == f"{port},{port},{port}"
    engine = make_engine(database_url)
    cache = TokenCache(8)
    watch = watch_for(cache, engine, multi.render_as_string(hide_password=False))
    try:
        assert isinstance(watch, PgWatch)
        assert watch.wait_live(10) and watch.sync(None) == cache.epoch
    finally:
        watch.stop()
        engine.dispose()
