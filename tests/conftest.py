"""Shared fixtures: every database-backed test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
each test session works in a fresh database created beside it and dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from server import create_app
from server.settings import Settings
from server.store.base import Base
from server.store.repository import forget_reserved_keys
from tests.openapi_check import check_answer

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FHIR_JSON = "application/fhir+json"


def _pg_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", PG_DEFAULT)


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """Create a uniquely named database next to TEST_DATABASE_URL; drop it afterwards."""
    admin = sa.make_url(_pg_admin_url())
    name = f"rehabfhir_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:  # pragma: no cover - depends on the machine
        engine.dispose()
        pytest.fail(f"PostgreSQL at {admin.render_as_string()} is not reachable: {exc}")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated-on-first-use database URL, once per backend per session."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "test.db")
    else:
        with fresh_postgres() as url:
            yield url


def witness_path(database_url: str) -> str:
    """The audit witness file of a test database (in the temp directory, never in the repository)."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"rehabfhir-test-witness-{digest}.jsonl")


@pytest.fixture(scope="session")
def session_app(database_url: str) -> Any:
    """One app per backend (migrations run once); no head timer (tests drive it themselves)."""
    settings = Settings(
        database_url=database_url,
        testing=True,
        base_url="http://testserver/fhir",
        audit_witness=witness_path(database_url),
        audit_head_interval=0,
    )
    app = create_app(settings)
    yield app
    worker = app.extensions.get("rehabfhir.export_worker")
    if worker is not None:
        worker.stop()  # before its database is dropped (else it logs failed polls)
    app.extensions["rehabfhir.engine"].dispose()


# Kept between tests: the server's signing keys (tokens of a test stay verifiable).
_KEEP = {"auth_signing_key"}


@contextlib.contextmanager
def audit_guards_off(conn: sa.Connection) -> Iterator[None]:
    """Inside a transaction, lift the audit tables' append-only triggers, as a database owner can.

    PostgreSQL: session_replication_role = replica (superuser) skips ordinary triggers, TRUNCATE's
    too. SQLite: drop the triggers and create them again from their stored SQL afterwards.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield
        conn.exec_driver_sql("SET LOCAL session_replication_role = origin")
        return
    triggers = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'audit%'"
    ).all()
    for name, _sql in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
    yield
    for _name, sql in triggers:
        conn.exec_driver_sql(sql)


@contextlib.contextmanager
def as_owner(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction (SQLite: BEGIN IMMEDIATE, so reading the schema first cannot turn into
    SQLITE_BUSY when another connection writes) with the audit append-only triggers lifted."""
    from server.store.session import WRITE_OPTION

    with engine.connect() as plain:
        conn = plain.execution_options(**{WRITE_OPTION: True})
        with conn.begin(), audit_guards_off(conn):
            yield conn


def _truncate(engine: sa.Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name not in _KEEP]
    for attempt in range(5):
        try:
            with as_owner(engine) as conn:
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE")
                    forget_reserved_keys()  # the keys this process holds came from the restarted sequence
                else:
                    for name in tables:
                        conn.exec_driver_sql(f"DELETE FROM {name}")
            return
        except sa.exc.OperationalError as err:
            # A background thread of the session app (export worker poll, audit head timer) may
            # hold a share lock while TRUNCATE takes its exclusive locks: PostgreSQL picks a victim.
            if "deadlock" not in str(err).lower() or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _forget_witness(app: Any) -> None:
    """Remove the audit witness files (the trail they anchored is gone with the tables)."""
    from server.audit.witness import files

    cfg = app.extensions["rehabfhir.audit"]
    for name in files(cfg.witness_path):
        os.unlink(name)
    if cfg.witness is not None:
        cfg.witness.last_seq = 0


@pytest.fixture
def app(session_app: Any) -> Any:
    """The backend's app with empty tables (and an empty audit witness)."""
    _truncate(session_app.extensions["rehabfhir.engine"])
    _forget_witness(session_app)
    auth = session_app.extensions.get("rehabfhir.auth")
    if auth is not None:
        auth.login_limiter.reset()
        auth.token_limiter.reset()
    return session_app


class FhirClient:
    """Flask test client speaking FHIR JSON, with a system/*.cruds bearer token unless token="" is given."""

    def __init__(self, flask_client: Any, token: str | None = None) -> None:
        self.c = flask_client
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = FHIR_JSON,
    ) -> Any:
        """Send a request; a dict/list body is JSON-encoded; returns the werkzeug response."""
        h = {"Accept": FHIR_JSON, **(headers or {})}
        if self.token is None:  # no token given: get a system/*.cruds one ("" means: send none)
            self.token = client_credentials_token(self.c.application)
        if self.token and "Authorization" not in h:
            h["Authorization"] = "Bearer " + self.token
        data = body if isinstance(body, (bytes, str)) or body is None else orjson.dumps(body)
        if data is not None:
            h.setdefault("Content-Type", content_type)
        response = self.c.open(path, method=method, data=data, headers=h)
        if path.startswith("/rehab/"):  # every /rehab answer a test receives matches the OpenAPI document
            check_answer(method, path, response.status_code, response.content_type or "", response.get_data())
        return response

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """POST a resource and return the stored one."""
        r = self.call("POST", f"/{resource['resourceType']}", resource)
        assert r.status_code == 201, r.get_data(as_text=True)
        return r.get_json(force=True)


def client_credentials_token(app: Any, scope: str = "system/*.cruds") -> str:
    """Register a confidential client and get a token by client_credentials at /auth/token (the real flow)."""
    import base64

    client, secret = app.extensions["rehabfhir.auth"].store.add_client("tests", scope, "symmetric")
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": "Basic " + basic},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"])


@pytest.fixture
def fhir(app: Any) -> FhirClient:
    """A FHIR client on the test app, carrying a system/*.cruds bearer token."""
    return FhirClient(app.test_client(), client_credentials_token(app))


def register_client(database_url: str, scope: str = "system/*.cruds") -> tuple[str, str]:
    """Register a confidential (client_secret_basic) client in a database; return (client_id, secret)."""
    from auth.store import AuthStore
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    engine = make_engine(database_url)
    try:
        client, secret = AuthStore(make_session_factory(engine)).add_client("live-tests", scope, "symmetric")
    finally:
        engine.dispose()
    return client.client_id, secret or ""


def token_for(
    base_url: str, database_url: str, scope: str = "system/*.cruds", client: tuple[str, str] | None = None
) -> str:
    """Get a token by client_credentials from a running server (registering a client unless one is given)."""
    import requests

    client = client or register_client(database_url, scope)
    r = requests.post(
        base_url + "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=client,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(
    database_url: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
    *,
    output: Any = subprocess.DEVNULL,
    new_session: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `rehabfhir serve` (gunicorn) in a subprocess and wait until it answers; return it and its URL."""
    import urllib.request

    port = free_port()
    env = {"REHABFHIR_AUDIT_WITNESS": witness_path(database_url), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", str(workers)],
        env=dict(os.environ, DATABASE_URL=database_url, **env),
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            urllib.request.urlopen(base + "/metadata", timeout=2)
            break
        except Exception:
            time.sleep(0.1)
    return proc, base


@contextlib.contextmanager
def running_server(database_url: str, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `rehabfhir serve` (gunicorn) in a subprocess; yield its base URL."""
    import tempfile

    # The access log goes to a file: an unread pipe fills up and blocks the server.
    log = tempfile.NamedTemporaryFile(prefix="rehabfhir-server-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        proc, base = spawn_server(database_url, workers, env, output=log)
    except RuntimeError:
        log.close()
        raise RuntimeError("server exited: " + pathlib.Path(log.name).read_text()[-2000:]) from None
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)


@pytest.fixture
def live_bearer(live_server: str, database_url: str) -> dict[str, str]:
    """An Authorization header (system/*.cruds) for requests to `live_server`."""
    return {"Authorization": "Bearer " + token_for(live_server, database_url)}


@pytest.fixture
def live_server(app: Any, database_url: str) -> Iterator[str]:
    """A real gunicorn server (2 workers) on the backend's (emptied) database."""
    with running_server(database_url) as base:
        yield base
