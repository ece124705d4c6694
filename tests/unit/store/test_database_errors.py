"""Which database exceptions the client can act on: lost connections (503) and NUL text (400)."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import pytest
import sqlalchemy as sa

from server.errors import InvalidRequestError
from server.errors import ServiceUnavailableError
from server.store.session import database_error


def _wrapped(
    orig: BaseException, cls: type[sa.exc.DBAPIError] = sa.exc.OperationalError
) -> sa.exc.DBAPIError:
    return cls("SELECT 1", {}, orig)


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
        _wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")),
        _wrapped(psycopg.errors.TooManyConnections("too many clients")),
        _wrapped(psycopg.OperationalError("connection failed: Connection refused")),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        sa.exc.OperationalError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        sa.exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"),
        _wrapped(_sqlite_error(sqlite3.SQLITE_CANTOPEN, "unable to open database file")),
    ],
    ids=[
        "terminated",
        "starting-up",
        "too-many",
        "refused",
        "lost-unwrapped",
        "invalidated",
        "pool-timeout",
        "sqlite-cantopen",
    ],
)
def test_lost_connection_is_503_with_retry_after(exc: BaseException) -> None:
    err = database_error(exc)
    assert isinstance(err, ServiceUnavailableError)
    assert (err.status, err.issue_code) == (503, "transient")
    assert int(err.headers["Retry-After"]) > 0


def test_nul_refused_by_the_driver_is_400() -> None:
    orig = psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    for exc in (orig, _wrapped(orig, sa.exc.DataError)):
        err = database_error(exc)
        assert isinstance(err, InvalidRequestError)
        assert err.status == 400


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        _wrapped(psycopg.errors.UndefinedTable("relation does not exist"), sa.exc.ProgrammingError),
        _wrapped(psycopg.errors.NumericValueOutOfRange("bigint out of range"), sa.exc.DataError),
        _wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")),
        _wrapped(psycopg.errors.PipelineAborted("pipeline aborted")),
        _wrapped(_sqlite_error(sqlite3.SQLITE_ERROR, "no such table: resource")),
        _wrapped(_sqlite_error(sqlite3.SQLITE_BUSY, "database is locked")),
    ],
    ids=[
        "python",
        "undefined-table",
        "out-of-range",
        "statement-timeout",
        "pipeline",
        "sqlite-no-table",
        "sqlite-busy",
    ],
)
def test_anything_else_stays_a_500(exc: BaseException) -> None:
    assert database_error(exc) is None
