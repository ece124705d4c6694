"""Every error leaves as an OperationOutcome: FhirError, HTTPException, or a logged 500."""

from __future__ import annotations

import logging
import uuid

import flask
from werkzeug.exceptions import HTTPException

from server.api.responses import StandardReasonPhrases
from server.api.responses import to_flask
from server.errors import FhirError
from server.fhir.http import FhirResponse
from server.fhir.outcomes import issue
from server.fhir.outcomes import operation_outcome
from server.fhir.outcomes import to_operation_outcome
from server.store.session import database_error

log = logging.getLogger("rehabfhir")

_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
    503: "transient",
}


def handle_fhir_error(err: FhirError) -> flask.Response:
    """Render a FhirError with its status and headers."""
    return to_flask(FhirResponse(err.status, to_operation_outcome(err), dict(err.headers)))


def handle_http_exception(err: HTTPException) -> flask.Response:
    """Wrap werkzeug's HTTP errors (404 route, 405 method, 413 size) as OperationOutcomes."""
    status = err.code or 500
    outcome = operation_outcome(
        [issue("error", _HTTP_CODES.get(status, "exception"), err.description or err.name)]
    )
    headers = {}
    if status == 405 and err.get_response().headers.get("Allow"):
        headers["Allow"] = err.get_response().headers["Allow"]
    return to_flask(FhirResponse(status, outcome, headers))


def handle_unexpected(err: Exception) -> flask.Response:
    """Log an unexpected error with a request id and answer 500 (never 400).

    A lost database connection is not a bug: 503 with Retry-After (the next request reconnects).
    """
    known = database_error(err)
    if known is not None:
        log.warning("database error answered %s: %s", known.status, err)
        return handle_fhir_error(known)
    request_id = uuid.uuid4().hex
    log.exception("unhandled error, request id %s", request_id)
    outcome = operation_outcome(
        [issue("fatal", "exception", f"Internal server error (request id {request_id})")]
    )
    return to_flask(FhirResponse(500, outcome, {"X-Request-Id": request_id}))


def register_error_handlers(app: flask.Flask) -> None:
    """Attach the three handlers; send every status with its standard reason phrase."""
    app.register_error_handler(FhirError, handle_fhir_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    if not isinstance(app.wsgi_app, StandardReasonPhrases):
        app.wsgi_app = StandardReasonPhrases(app.wsgi_app)  # type: ignore[method-assign]
