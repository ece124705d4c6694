"""Engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import orm as so

from server.errors import FhirError
from server.errors import InvalidRequestError
from server.errors import ServiceUnavailableError
from server.store.sqlite_queue import connection_factory

# Execution option a write transaction sets so SQLite takes the write lock up front
# (BEGIN IMMEDIATE): a deferred transaction that reads and then writes can fail with
# SQLITE_BUSY instead of waiting, which would lose a concurrent update.
WRITE_OPTION = "rehabfhir_write"
# Seconds a SQLite writer waits for its turn (sqlite_queue.py) or, outside the queue, for the lock.
SQLITE_TIMEOUT = 60.0


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgres:// and postgresql:// URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(database_url: str, **kwargs: Any) -> sa.Engine:
    """Create an engine; on SQLite enable WAL, foreign keys and explicit BEGIN handling."""
    url = normalise_url(database_url)
    if url.startswith("sqlite"):
        memory = ":memory:" in url or url in ("sqlite://", "sqlite:///")
        connect_args: dict[str, Any] = {"timeout": SQLITE_TIMEOUT, "check_same_thread": False}
        path = sa.make_url(url).database
        if not memory and path and not path.startswith("file:"):
            # Writers take turns in arrival order instead of convoying on the lock (sqlite_queue.py).
            connect_args["factory"] = connection_factory(path, SQLITE_TIMEOUT)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, memory=memory)
        return engine
    parsed, kwargs["connect_args"] = _prepare_threshold(url, dict(kwargs.pop("connect_args", {})))
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping (a SELECT 1 round trip per request); stale connections are recycled instead, and
    # a disconnect seen by any statement invalidates the whole pool (SQLAlchemy's default), so the
    # request that meets a lost connection answers 503 (see database_error) and the next one
    # connects afresh.
    kwargs.setdefault("pool_recycle", 1800)
    return sa.create_engine(parsed, **kwargs)


def _prepare_threshold(url: str, connect_args: dict[str, Any]) -> tuple[sa.URL, dict[str, Any]]:
    """Take `?prepare_threshold=N|none` off a PostgreSQL URL into psycopg's connect argument.

    psycopg prepares a statement on the server after 5 executions on a connection; PgBouncer in
    transaction mode before 1.21 (Debian 12 ships 1.18) cannot follow that, so such a deployment
    sets `prepare_threshold=none` (docs/deploy.md). psycopg itself would get the URL's text, not a number.
    """
    parsed = sa.make_url(url)
    value = parsed.query.get("prepare_threshold")
    if value is None:
        return parsed, connect_args
    text = value if isinstance(value, str) else value[-1]
    connect_args["prepare_threshold"] = None if text.lower() in ("none", "off", "") else int(text)
    return parsed.difference_update_query(["prepare_threshold"]), connect_args


def _configure_sqlite(engine: sa.Engine, *, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, emit BEGIN (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_TIMEOUT * 1000)}")  # writers outside the queue
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# The advisory lock every host takes to migrate, seed and register its clients: one key for the
# database ("rehabfhi" in ASCII, a positive bigint).
STARTUP_LOCK_KEY = 0x7265686162666869
_startup = threading.local()


@contextlib.contextmanager
def startup_lock(engine: sa.Engine) -> Iterator[None]:
    """Run the block while no other process runs its own startup block on this database.

    Two app hosts (or gunicorn workers) starting at once against an empty database would both
    create the tables, seed the terminology and register the pages' client. PostgreSQL: a
    transaction-level advisory lock (`pg_advisory_xact_lock`) held by a connection of its own
    until the block ends; being transaction-scoped it also holds through PgBouncer in
    transaction mode, where a session-level lock would not. SQLite: an exclusive `flock` on a
    file beside the database. Re-entrant within a thread (the app's startup holds it around the
    migration, which takes it too when run alone).
    """
    if getattr(_startup, "depth", 0):
        _startup.depth += 1
        try:
            yield
        finally:
            _startup.depth -= 1
        return
    with _hold_startup_lock(engine):
        _startup.depth = 1
        try:
            yield
        finally:
            _startup.depth = 0


@contextlib.contextmanager
def _hold_startup_lock(engine: sa.Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK_KEY})
            yield
        return
    path = engine.url.database
    if not path or path == ":memory:":  # one process has an in-memory database to itself
        yield
        return
    import fcntl

    with open(path + ".startup-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_session_factory(engine: sa.Engine) -> so.sessionmaker[so.Session]:
    """Sessions that keep loaded objects usable after commit."""
    return so.sessionmaker(bind=engine, expire_on_commit=False)


def begin_write(session: so.Session) -> None:
    """Start the session's transaction as a write (SQLite: BEGIN IMMEDIATE)."""
    session.connection(execution_options={WRITE_OPTION: True})


def start_write(session: so.Session) -> None:
    """Make the session's transaction a write transaction, ending a read's transaction if needed.

    SQLite: a read's deferred transaction is ended and BEGIN IMMEDIATE starts the write. PostgreSQL:
    a healthy read transaction simply goes on as the write (saving a ROLLBACK and a BEGIN round
    trip on every request); one that an error aborted is rolled back first.
    """
    if session.in_transaction():
        conn = session.connection()
        if conn.dialect.name == "postgresql" and _pg_in_good_transaction(conn):
            return
        session.rollback()
    begin_write(session)


def _pg_in_good_transaction(conn: sa.Connection) -> bool:
    from psycopg.pq import TransactionStatus

    raw = conn.connection.driver_connection
    return raw is not None and raw.info.transaction_status == TransactionStatus.INTRANS


# PostgreSQL SQLSTATEs of a connection that is gone or refused: class 08 (connection exception),
# admin/crash shutdown and "cannot connect now" (57P01-57P03: pg_terminate_backend, a restart),
# too many connections (53300).
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
RETRY_AFTER_SECONDS = 5


def _driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc


def is_connection_lost(exc: BaseException) -> bool:
    """Whether the database connection was lost, refused or unavailable (the client may retry)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.DisconnectionError, sa.exc.TimeoutError)):  # TimeoutError: pool exhausted
        return True
    orig = _driver_error(exc)
    if isinstance(orig, sqlite3.OperationalError):
        # The embedded database's file cannot be opened (gone, or its volume unmounted).
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN
    if not isinstance(orig, psycopg.OperationalError) or isinstance(orig, psycopg.errors.PipelineAborted):
        return False
    # No SQLSTATE: the client side failed (connection refused, closed, or lost mid-statement).
    state = orig.sqlstate
    return state is None or state.startswith("08") or state in _CONNECTION_STATES


def _is_nul_refused(exc: BaseException) -> bool:
    # psycopg refuses to send a str holding U+0000 to a text parameter (PostgreSQL text cannot hold it).
    orig = _driver_error(exc)
    return isinstance(orig, psycopg.DataError) and "NUL (0x00)" in str(orig)


def unavailable() -> ServiceUnavailableError:
    """The 503 of a database that cannot be reached (transient: retry after a few seconds)."""
    return ServiceUnavailableError(
        "The database is unavailable; retry the request shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        message_id="MSG_DB_UNAVAILABLE",
    )


def database_error(exc: BaseException) -> FhirError | None:
    """Translate a database exception the client can act on into a FhirError; None for any other.

    A lost or refused connection is a 503 (transient, Retry-After); a NUL character that reached a
    text parameter (the input checks refuse them, this catches any path they miss) is a 400.
    Anything else is a bug and stays a 500.
    """
    if is_connection_lost(exc):
        return unavailable()
    if _is_nul_refused(exc):
        return InvalidRequestError(
            "The request contains a NUL character (U+0000), which no FHIR value may hold",
            message_id="MSG_NUL",
        )
    return None
