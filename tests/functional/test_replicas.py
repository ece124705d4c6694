"""Read replicas (issue 18, item 2): which database each request reads from, positions, lag, metrics.

These run against a "replica" that is the test database itself (a server not in recovery counts as
fully caught up), so the routing is checked in seconds; tests/functional/test_replicas_streaming.py
proves it against a real streaming replica. SQLite has no replicas: configuring some is refused.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from server import create_app
from server.settings import Settings
from server.store.replicas import Replica
from server.store.replicas import ReplicaConfigError
from server.store.replicas import Replicas
from server.store.replicas import format_position
from server.store.replicas import parse_position
from server.store.replicas import replica_name
from server.store.session import make_engine
from server.store.session import make_session_factory
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.conftest import free_port
from tests.conftest import witness_path

pytestmark = pytest.mark.pg
PATIENT = {"resourceType": "Patient", "name": [{"family": "Replica"}]}


def _settings(database_url: str, replicas: str) -> Settings:
    return Settings(
        database_url=database_url,
        database_replica_urls=replicas,
        testing=True,
        base_url="http://testserver/fhir",
        audit_witness=witness_path(database_url),
        audit_head_interval=0,
        export_worker=False,
    )


# The replica_app tests run on PostgreSQL only (SQLite has no replicas: see
# test_sqlite_refuses_replicas): the session's database_url fixture is asked for its PostgreSQL
# database alone (the same one the other tests use).
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def replica_app(app: Any, database_url: str) -> Iterator[Any]:
    """An app whose replica is its own (emptied) PostgreSQL database."""
    assert database_url.startswith("postgresql")
    made = create_app(_settings(database_url, database_url))
    yield made
    made.extensions["rehabfhir.replicas"].stop()
    made.extensions["rehabfhir.engine"].dispose()


def test_sqlite_refuses_replicas(tmp_path: pathlib.Path) -> None:
    """SQLite serves one host: replicas of it are refused at start, and without them nothing routes."""
    url = "sqlite:///" + str(tmp_path / "one-host.db")
    with pytest.raises(ReplicaConfigError, match="needs a PostgreSQL DATABASE_URL"):
        create_app(_settings(url, "postgresql+psycopg://postgres@127.0.0.1:5432/replica"))
    with pytest.raises(ReplicaConfigError, match="needs a PostgreSQL DATABASE_URL"):
        create_app(_settings(url, url))
    made = create_app(_settings(url, ""))
    try:
        assert "rehabfhir.replicas" not in made.extensions
        client = made.test_client()
        fhir = FhirClient(client, client_credentials_token(made))
        r = fhir.call("POST", "/Patient", PATIENT)
        assert r.status_code == 201
        assert "X-Commit-Position" not in r.headers and client.get_cookie("rehabfhir_position") is None
        r = fhir.call("GET", "/Patient/" + r.get_json()["id"], headers={"X-Read-After": "0/1"})
        assert r.status_code == 200 and r.get_json()["name"][0]["family"] == "Replica"
    finally:
        made.extensions["rehabfhir.engine"].dispose()


def _routed(app: Any) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(app.extensions["rehabfhir.replicas"].routed_counts())


@on_postgres
def test_reads_go_to_the_replica_and_writes_to_the_primary(replica_app: Any) -> None:
    fhir = FhirClient(replica_app.test_client(), client_credentials_token(replica_app))
    before = _routed(replica_app)
    created = fhir.create(PATIENT)
    assert _routed(replica_app) == before  # a write is not a read: primary, not counted
    pid = created["id"]
    for path in (
        f"/Patient/{pid}",
        f"/Patient/{pid}/_history/1",
        "/Patient?family=Replica",
        f"/Patient/{pid}/_history",
    ):
        r = fhir.call("GET", path)
        assert r.status_code == 200, r.get_data(as_text=True)
    r = fhir.call(
        "POST", "/Patient/_search", "family=Replica", content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 200 and r.get_json()["total"] == 1
    r = fhir.call("GET", f"/Patient/{pid}/$everything")
    assert r.status_code == 200
    counted = _routed(replica_app) - before
    replica = replica_app.extensions["rehabfhir.replicas"].replicas[0].name
    assert sum(n for (target, _), n in counted.items() if target == replica) == 6
    assert sum(n for (target, _), n in counted.items() if target == "primary") == 0


@on_postgres
def test_a_write_tells_its_position_and_a_read_naming_it_reads_it(replica_app: Any) -> None:
    client = replica_app.test_client()
    fhir = FhirClient(client, client_credentials_token(replica_app))
    r = fhir.call("POST", "/Patient", PATIENT)
    assert r.status_code == 201
    position = r.headers["X-Commit-Position"]
    assert parse_position(position) is not None
    assert "rehabfhir_position=" + position in r.headers["Set-Cookie"]
    assert "HttpOnly" in r.headers["Set-Cookie"]
    pid = r.get_json()["id"]
    before = _routed(replica_app)
    r = fhir.call("GET", f"/Patient/{pid}", headers={"X-Read-After": position})
    assert r.status_code == 200
    replica = replica_app.extensions["rehabfhir.replicas"].replicas[0].name
    assert sum(n for (target, _), n in (_routed(replica_app) - before).items() if target == replica) == 1
    # A position past anything written so far: no replica has it, the primary answers.
    before = _routed(replica_app)
    r = fhir.call("GET", f"/Patient/{pid}", headers={"X-Read-After": "FFFFFFFF/0"})
    assert r.status_code == 200
    assert _routed(replica_app) - before == collections.Counter({("primary", "position"): 1})
    # Not a position: the primary answers, no error.
    before = _routed(replica_app)
    r = fhir.call("GET", f"/Patient/{pid}", headers={"X-Read-After": "yesterday"})
    assert r.status_code == 200
    assert _routed(replica_app) - before == collections.Counter({("primary", "malformed"): 1})


@on_postgres
def test_the_position_cookie_alone_reads_the_write_back(replica_app: Any) -> None:
    """A browser sends no X-Read-After: the rehabfhir_position cookie of its write is what routes its read."""
    client = replica_app.test_client()
    fhir = FhirClient(client, client_credentials_token(replica_app))
    r = fhir.call("POST", "/Patient", PATIENT)
    assert r.status_code == 201
    cookie = client.get_cookie("rehabfhir_position")
    assert cookie is not None and cookie.value == r.headers["X-Commit-Position"]
    pid = r.get_json()["id"]
    replica = replica_app.extensions["rehabfhir.replicas"].replicas[0].name
    before = _routed(replica_app)
    r = fhir.call("GET", f"/Patient/{pid}")  # no header: the client's cookie jar sends the position
    assert r.status_code == 200 and r.get_json()["name"][0]["family"] == "Replica"
    counted = _routed(replica_app) - before
    assert sum(counted.values()) == 1 and sum(n for (t, _), n in counted.items() if t == replica) == 1
    # The cookie is what is read: one naming a position nothing has replayed sends the read to the primary.
    client.set_cookie("rehabfhir_position", "FFFFFFFF/0")
    before = _routed(replica_app)
    r = fhir.call("GET", f"/Patient/{pid}")
    assert r.status_code == 200 and r.get_json()["id"] == pid
    assert _routed(replica_app) - before == collections.Counter({("primary", "position"): 1})


@on_postgres
def test_metrics_show_lag_up_and_routing(replica_app: Any) -> None:
    fhir = FhirClient(replica_app.test_client(), client_credentials_token(replica_app))
    assert fhir.call("GET", "/Patient").status_code == 200
    text = fhir.call("GET", "/metrics", headers={"Accept": "text/plain"}).get_data(as_text=True)
    assert "rehabfhir_db_replica_lag_seconds{replica=" in text
    assert "rehabfhir_db_replica_up{replica=" in text and "} 1.0" in text
    assert 'rehabfhir_db_reads_total{reason="fresh",target=' in text


def test_prepare_threshold_in_the_url_turns_server_side_prepares_off(database_url: str) -> None:
    """For PgBouncer in transaction mode before 1.21: `?prepare_threshold=none` (docs/deploy.md)."""
    if not database_url.startswith("postgresql"):
        engine = make_engine(database_url)  # SQLite URLs are left alone
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        engine.dispose()
        return
    for suffix, expected in (("?prepare_threshold=none", None), ("?prepare_threshold=0", 0), ("", 5)):
        engine = make_engine(database_url + suffix)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
                assert conn.connection.driver_connection.prepare_threshold == expected
        finally:
            engine.dispose()


def test_replica_names_for_metrics() -> None:
    assert replica_name(sa.make_url("postgresql+psycopg://u:secret@db-2:6432/x")) == "db-2:6432"
    assert replica_name(sa.make_url("postgresql+psycopg://u@/x?host=a:5432&host=b:5433")) == "a:5432,b:5433"


def test_parse_and_format_positions() -> None:
    assert parse_position("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_position(parse_position("16/B374D848") or 0) == "16/B374D848"
    for bad in ("", "16", "16/", "/1", "xyz/1", "123456789/0", None):
        assert parse_position(bad) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lag_is_the_age_of_the_newest_primary_position_replayed() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # never connected
    clock = _Clock()
    replica = Replica("r:1", engine, make_session_factory(engine))
    replicas = Replicas(engine, [replica], max_lag=1.0, clock=clock)
    for at, position in ((100.0, 10), (100.25, 20), (100.5, 30)):
        replicas._samples.append((at, position))
    replicas._saw(replica, 20)  # replayed what the primary had at 100.25, not yet what it had at 100.5
    clock.now = 100.6
    assert replicas.lag(replica) == pytest.approx(0.35)
    clock.now = 101.5
    assert replicas.lag(replica) == pytest.approx(1.25)  # no newer sample replayed: it ages
    replicas._saw(replica, 5)  # a stale answer never moves it back
    assert replica.replayed == 20
    replica.up = False
    assert replicas.lag(replica) is None
    engine.dispose()


def test_an_export_waiting_for_its_replica_counts_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tries while the replica catches up are not reads; only where the job finally reads counts."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # never connected
    replica = Replica("r:1", engine, make_session_factory(engine))
    replicas = Replicas(engine, [replica], max_lag=5.0, poll=0.001)
    monkeypatch.setattr("server.store.replicas.commit_position", lambda _engine: format_position(40))
    tries = iter([(None, "position", None), (None, "position", None), ("session", "position", replica)])
    monkeypatch.setattr(replicas, "_choose", lambda position: next(tries))
    assert replicas.export_session() == "session"
    assert replicas.routed == collections.Counter({("r:1", "position"): 1})
    engine.dispose()


def test_read_counts_from_many_threads_are_exact() -> None:
    """Request threads count reads at once: none is lost, and a scrape may copy the counts meanwhile."""
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # never connected
    replicas = Replicas(engine, [Replica("r:1", engine, make_session_factory(engine))])
    barrier = threading.Barrier(8)

    def count(n: int) -> None:
        barrier.wait()
        for i in range(5000):
            replicas.count_read("r:1" if n % 2 else "primary", "fresh" if i % 2 else "stale")
            if i % 500 == 0:
                replicas.routed_counts()  # a scrape copying the counts meanwhile

    threads = [threading.Thread(target=count, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost `+=` shows up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert replicas.routed_counts() == {
        (t, r): 10_000 for t in ("r:1", "primary") for r in ("fresh", "stale")
    }
    engine.dispose()


def test_an_unreachable_replica_sends_reads_to_the_primary(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        primary = make_engine(database_url)
        with pytest.raises(ReplicaConfigError):
            Replicas.connect(primary, [database_url], 1.0, 0.25)
        primary.dispose()
        return
    primary = make_engine(database_url)
    gone = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    replicas = Replicas.connect(primary, [gone], 1.0, 0.25)
    try:
        session, reason = replicas.read_session(None)
        assert session is None and reason == "stale"
        assert replicas.replicas[0].up is False
        # Between polls it looked fresh, then went away: the checkout fails and the read falls back.
        replica = replicas.replicas[0]
        replica.up, replica.caught_up_at, replica.replayed = True, replicas.clock(), 1
        session, reason = replicas.read_session(None)
        assert session is None and reason == "unreachable"
        assert replica.up is False
    finally:
        replicas.stop()
        primary.dispose()


def test_settings_declare_the_replica_options() -> None:
    names = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert {
        "DATABASE_REPLICA_URLS",
        "REHABFHIR_REPLICA_MAX_LAG_SECONDS",
        "REHABFHIR_REPLICA_POLL_SECONDS",
    } <= names
