"""Blueprint "ops": health, readiness, Prometheus metrics, and one structured log line per request.

- GET /healthz: the process answers (open, never touches the database).
- GET /readyz: the database answers, its migrations are at head, the export worker runs and can
  write its directory (open; 503 with the failed check otherwise). Neither says more than
  ok/failed per check.
- GET /metrics: Prometheus text format; a backend services token with a system/ scope, or open
  with REHABFHIR_METRICS_OPEN (the access rule lives with the others, in auth's before_request).
- /favicon.ico: 404, not a FHIR search (and so not audited as one).
None of these is a FHIR interaction: the audit trail does not record them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from typing import Any

import flask
import orjson
import prometheus_client
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily

from server.audit.hook import classify
from server.errors import ForbiddenError
from server.settings import Settings

bp = flask.Blueprint("ops", __name__)
log = logging.getLogger("rehabfhir.request")
EXTENSION = "rehabfhir.metrics"
OPEN_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.favicon"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FHIR_BLUEPRINTS = ("fhir",)  # AuditEvent too: its routes are in the route table
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@bp.get("/healthz")
def healthz() -> flask.Response:
    """Answer that the process is up."""
    return flask.jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> flask.Response:
    """Answer whether this process can serve: database, migrations, export worker and directory."""
    checks = readiness(flask.current_app)
    ready = all(v in ("ok", "disabled") for v in checks.values())
    response = flask.jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics() -> flask.Response:
    """Answer the Prometheus metrics of this process."""
    registry = flask.current_app.extensions[EXTENSION].registry
    return flask.Response(
        prometheus_client.generate_latest(registry), mimetype=prometheus_client.CONTENT_TYPE_LATEST
    )


@bp.route("/favicon.ico", methods=["GET", "HEAD"])
def favicon() -> flask.Response:
    """There is no icon: 404 (a browser asks for it; it is not a FHIR resource type)."""
    return flask.Response(status=404)


def readiness(app: flask.Flask) -> dict[str, str]:
    """Run the readiness checks; each answers ok, disabled or a short failure."""
    from server.store.migrate import missing_heads

    engine = app.extensions["rehabfhir.engine"]
    checks: dict[str, str] = {}
    try:
        missing = missing_heads(engine)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if not missing else "behind: " + " ".join(missing)
    except Exception as exc:  # unreachable, refused, or no such database: not ready
        log.warning("readyz: database check failed: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    worker = app.extensions.get("rehabfhir.export_worker")
    config = app.extensions.get("rehabfhir.bulk")
    if worker is None or (config is not None and not config.worker):
        checks["export_worker"] = "disabled"
    else:
        checks["export_worker"] = "ok" if worker.alive() else "stopped"
    if config is not None:
        checks["export_dir"] = "ok" if _writable(config.export_dir) else "not writable"
    return checks


def _writable(directory: str) -> bool:
    """Whether this process can write export files in directory (or create it)."""
    path = os.path.abspath(directory)
    while not os.path.exists(path):  # created on the first export: its nearest parent must allow it
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def check_metrics_access(ctx: Any) -> None:
    """Let /metrics through for a backend services token (no user, a system/ grant); else 403."""
    system = any(getattr(rule, "context", None) == "system" for rule in ctx.rules)
    if ctx.user is not None or not system:
        raise ForbiddenError("/metrics needs a backend services token with a system/ scope")


# -- metrics --------------------------------------------------------------------------------


class _StateCollector:
    """Database pool, export jobs, export worker and the audit trail's backlog, read at scrape time."""

    def __init__(self, app: flask.Flask) -> None:
        self.app = app

    def collect(self) -> Any:
        from server.store import stats

        engine = self.app.extensions["rehabfhir.engine"]
        pool = GaugeMetricFamily(
            "rehabfhir_db_pool_connections", "Database pool connections", labels=["state"]
        )
        for state, count in stats.pool_state(engine).items():
            pool.add_metric([state], count)
        yield pool
        worker = self.app.extensions.get("rehabfhir.export_worker")
        up = GaugeMetricFamily("rehabfhir_export_worker_up", "1 if this process's export worker runs")
        up.add_metric([], 1 if worker is not None and worker.alive() else 0)
        yield up
        jobs = GaugeMetricFamily("rehabfhir_export_jobs", "Export jobs by status", labels=["status"])
        try:
            with self.app.extensions["rehabfhir.sessions"]() as session:
                for status, count in sorted(stats.export_jobs_by_status(session).items()):
                    jobs.add_metric([status], count)
        except Exception as exc:  # the database is away: say so by leaving the family empty
            log.warning("metrics: export job counts unavailable: %s", type(exc).__name__)
        yield jobs
        yield from self._audit()

    def _audit(self) -> Any:
        """The audit trail's backlog: writes not yet linked into the chain, and this process's queue."""
        from server.audit import chain
        from server.audit.store import pending_backlog

        pending = GaugeMetricFamily(
            "rehabfhir_audit_pending_rows",
            "Committed writes whose audit records are not linked into the chain yet (PostgreSQL)",
        )
        lag = GaugeMetricFamily(
            "rehabfhir_audit_chain_lag_seconds",
            "Age of the oldest committed write whose audit records are not linked yet (0: none)",
        )
        try:
            with self.app.extensions["rehabfhir.sessions"]() as session:
                count, oldest = pending_backlog(session)
            pending.add_metric([], count)
            age = (chain.now() - oldest).total_seconds() if oldest is not None else 0.0
            lag.add_metric([], max(0.0, age))
        except Exception as exc:  # the database is away (or has no audit_pending): leave them empty
            log.warning("metrics: audit backlog unavailable: %s", type(exc).__name__)
        yield pending
        yield lag
        batcher = self.app.extensions.get("rehabfhir.audit_batcher")
        if batcher is not None:
            queued = GaugeMetricFamily(
                "rehabfhir_audit_queue_requests",
                "Requests of this process whose audit events wait for the next group commit",
            )
            queued.add_metric([], batcher.waiting)
            yield queued
            batches = CounterMetricFamily(
                "rehabfhir_audit_batches", "Audit group-commit transactions written by this process"
            )
            batches.add_metric([], batcher.batches)
            yield batches
            records = CounterMetricFamily(
                "rehabfhir_audit_records", "Audit events written by this process's group commits"
            )
            records.add_metric([], batcher.records)
            yield records


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, app: flask.Flask) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Histogram(
            "rehabfhir_http_request_duration_seconds",
            "HTTP requests by interaction and status, with their latency",
            ["interaction", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(app))
        # The histogram's child per (interaction, status), found without labels()' checks and lock.
        self._children: dict[tuple[str, int], Any] = {}

    def observe(self, name: str, status: int, duration: float) -> None:
        """Count one request of interaction `name` that answered `status` after `duration` seconds."""
        key = (name, status)
        child = self._children.get(key)
        if child is None:  # a bounded set: interactions times statuses
            child = self._children[key] = self.requests.labels(name, str(status))
        child.observe(duration)


# -- per request: id, timing, metric, log line ---------------------------------------------


def interaction(req: flask.Request | None = None, g: Any = None) -> str:
    """Name what the request did, from a bounded set (never a raw path: ids and names stay out)."""
    if req is None:
        req = flask.request._get_current_object()  # type: ignore[attr-defined]
    if req.url_rule is None:
        return "unmatched"
    blueprint = req.blueprint
    if blueprint in _FHIR_BLUEPRINTS:
        if g is None:
            g = flask.g._get_current_object()  # type: ignore[attr-defined]
        named = g.get("fhir_interaction") or classify(req.method, [p for p in req.path.split("/") if p])
        return str(named.subtype)
    return blueprint or str(req.endpoint)


def _start() -> None:
    # The request and flask.g looked up once: each flask.request / flask.g is a context lookup.
    req = flask.request._get_current_object()  # type: ignore[attr-defined]
    g = flask.g._get_current_object()  # type: ignore[attr-defined]
    given = req.environ.get("HTTP_X_REQUEST_ID", "")  # the X-Request-Id header
    g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finisher(metrics: Metrics) -> Any:
    """The after_request hook of one app: its metric, the X-Request-Id header and the log line."""

    def _finish(response: flask.Response) -> flask.Response:
        g = flask.g._get_current_object()  # type: ignore[attr-defined]
        started = g.get("request_started")
        if started is None:
            return response
        duration = time.perf_counter() - started
        req = flask.request._get_current_object()  # type: ignore[attr-defined]
        name = interaction(req, g)
        status = response.status_code
        metrics.observe(name, status, duration)
        request_id = g.request_id
        response.headers.setdefault("X-Request-Id", request_id)
        if log.isEnabledFor(logging.INFO):
            rule = req.url_rule
            view_args = req.view_args
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "client_id": getattr(g.get("access"), "client_id", None),
                    "interaction": name,
                    "method": req.method,
                    "route": rule.rule if rule is not None else None,  # the pattern, not the path
                    "resource_type": view_args.get("type_") if view_args else None,
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                },
            )
        return response

    return _finish


# -- logging --------------------------------------------------------------------------------

_FIELDS = (
    "request_id",
    "client_id",
    "interaction",
    "method",
    "route",
    "resource_type",
    "status",
    "duration_ms",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields, the exception."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last whole second and its text

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        last, text = self._second
        if second != last:  # strftime once a second, not once a line
            text = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def configure_logging(settings: Settings) -> None:
    """Send the rehabfhir loggers to stderr in the configured format (once per process; not in tests)."""
    logger = logging.getLogger("rehabfhir")
    logger.setLevel(settings.log_level.upper())
    if settings.testing or any(getattr(h, "rehabfhir", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.rehabfhir = True  # type: ignore[attr-defined]
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the ops routes, the request hooks and the app's metrics registry."""
    configure_logging(settings)
    metrics = app.extensions[EXTENSION] = Metrics(app)
    app.register_blueprint(bp)
    app.before_request(_start)
    app.after_request(_finisher(metrics))
