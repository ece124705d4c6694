"""Which database a request reads from: a fresh read replica for reads, the primary for the rest.

Reads, vreads, searches (GET or POST _search, compartment searches), history and $everything use
a replica within REHABFHIR_REPLICA_MAX_LAG_SECONDS (server/store/replicas.py), else the primary.
Everything else stays on the primary: writes, conditional operations, bundles, other operations
($export's kick-off writes a job), the audit trail and the authorization server (`flask.g.session`
is always the primary's; only `flask.g.repo` of a read changes).

Read-your-writes: a write's response carries the primary's WAL position after its commit in the
`X-Commit-Position` header and the `rehabfhir_position` cookie; a read that sends it back (header
`X-Read-After`, or the cookie) is served only by a replica that has replayed it, else the primary.
A value that is not a position sends the read to the primary (never a stale answer, never an error).
"""

from __future__ import annotations

import logging

import flask
import sqlalchemy as sa

from server.settings import Settings
from server.store.replicas import Replicas
from server.store.replicas import commit_position
from server.store.replicas import parse_position
from server.store.repository import SqlRepository

log = logging.getLogger("rehabfhir.replicas")
EXTENSION = "rehabfhir.replicas"
POSITION_HEADER = "X-Commit-Position"
READ_AFTER_HEADER = "X-Read-After"
COOKIE = "rehabfhir_position"
COOKIE_SECONDS = 300
READS = frozenset(
    "fhir." + name
    for name in (
        "read_route",
        "vread_route",
        "search_type",
        "search_post",
        "system_search",
        "compartment_search",
        "instance_history",
        "type_history",
        "system_history",
    )
)
READ_OPERATIONS = frozenset({"fhir.type_operation", "fhir.instance_operation"})
READ_OPERATION_NAMES = frozenset({"everything"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def replica_urls(settings: Settings) -> list[str]:
    """DATABASE_REPLICA_URLS split at commas (blank: none)."""
    return [url.strip() for url in settings.database_replica_urls.split(",") if url.strip()]


def is_read(request: flask.Request) -> bool:
    """Whether the request only reads resources (and so may be served by a replica)."""
    if request.endpoint in READS:
        return True
    name = (request.view_args or {}).get("name")
    return request.endpoint in READ_OPERATIONS and name in READ_OPERATION_NAMES


def asked_position(request: flask.Request) -> tuple[bool, int | None]:
    """(whether the request names a position, the newest one it names; None if one is malformed)."""
    given = [v for v in (request.headers.get(READ_AFTER_HEADER), request.cookies.get(COOKIE)) if v]
    if not given:
        return False, None
    positions = [parse_position(v) for v in given]
    if any(p is None for p in positions):
        return True, None
    return True, max(p for p in positions if p is not None)


def init_app(app: flask.Flask, settings: Settings, engine: sa.Engine) -> None:
    """Route reads to replicas when DATABASE_REPLICA_URLS names some (register after the session opens)."""
    urls = replica_urls(settings)
    if not urls:
        return
    replicas = Replicas.connect(engine, urls, settings.replica_max_lag_seconds, settings.replica_poll_seconds)
    app.extensions[EXTENSION] = replicas
    secure = settings.public_base_url.startswith("https://")

    @app.before_request
    def _choose_database() -> None:
        request = flask.request
        if not is_read(request):
            return
        named, position = asked_position(request)
        if named and position is None:
            replicas.count_read("primary", "malformed")
            return
        session, _reason = replicas.read_session(position)
        if session is not None:
            flask.g.read_session = session
            flask.g.repo = SqlRepository(session)

    @app.after_request
    def _tell_position(response: flask.Response) -> flask.Response:
        if flask.request.method not in WRITE_METHODS or is_read(flask.request) or response.status_code >= 500:
            return response
        try:
            position = commit_position(engine)
        except Exception as exc:  # the write's answer stands; only its position is missing
            log.warning("no commit position for the response: %s", type(exc).__name__)
            return response
        response.headers[POSITION_HEADER] = position
        response.set_cookie(
            COOKIE, position, max_age=COOKIE_SECONDS, httponly=True, samesite="Lax", secure=secure
        )
        return response

    @app.teardown_request
    def _close_read_session(_exc: BaseException | None) -> None:
        session = flask.g.pop("read_session", None)
        if session is not None:
            session.close()

    metrics = app.extensions.get("rehabfhir.metrics")
    if metrics is not None:
        metrics.registry.register(replicas)
