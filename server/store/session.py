"""Engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import orm as so

# Execution option a write transaction sets so SQLite takes the write lock up front
# (BEGIN IMMEDIATE): a deferred transaction that reads and then writes can fail with
# SQLITE_BUSY instead of waiting, which would lose a concurrent update.
WRITE_OPTION = "rehabfhir_write"


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
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine, memory=":memory:" in url or url in ("sqlite://", "sqlite:///"))
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping (a SELECT 1 round trip per request); stale connections are recycled instead.
    kwargs.setdefault("pool_recycle", 1800)
    return sa.create_engine(url, **kwargs)


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
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


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
