"""FhirResponse -> flask.Response: media type, _pretty, headers."""

from __future__ import annotations

import functools
import http
from collections.abc import Iterable
from typing import Any

import flask
import orjson

from server.fhir.http import FhirResponse

FHIR_JSON = "application/fhir+json; charset=utf-8"


def _wants_pretty(req: flask.Request) -> bool:
    return req.args.get("_pretty", "").lower() == "true"


def _content_type(req: flask.Request) -> str:
    fmt = (req.args.get("_format") or "").lower()
    accept = req.environ.get("HTTP_ACCEPT", "").lower()  # the Accept header
    if fmt in ("application/json", "json") and "fhir" not in accept:
        return "application/json; charset=utf-8"
    if not fmt and accept.startswith("application/json") and "fhir" not in accept:
        return "application/json; charset=utf-8"
    return FHIR_JSON


def to_flask(resp: FhirResponse) -> flask.Response:
    """Serialise the body (stored text is sent as-is unless _pretty) and copy headers."""
    req = flask.request._get_current_object()  # type: ignore[attr-defined]  # one context lookup
    body = resp.body
    if body is None:
        out = flask.Response(status=resp.status)
    elif not isinstance(body, str | dict):  # a stream of text (NDJSON): sent as it comes
        out = flask.Response(body, status=resp.status, content_type=resp.headers.get("Content-Type"))
    else:
        pretty = _wants_pretty(req)
        if isinstance(body, str) and not pretty:
            data = body.encode()
        else:
            doc = orjson.loads(body) if isinstance(body, str) else body
            option = orjson.OPT_INDENT_2 if pretty else 0
            data = orjson.dumps(doc, option=option)
        out = flask.Response(data, status=resp.status, content_type=_content_type(req))
    for name, value in resp.headers.items():
        out.headers[name] = value
    return out


class StandardReasonPhrases:
    """WSGI middleware: send the RFC 9110 reason phrase ("401 Unauthorized"), not werkzeug's upper case.

    werkzeug builds the status line of an integer status as "401 UNAUTHORIZED"; every response
    passes here, whichever view, hook or handler made it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(standard_status(status), headers, exc_info)

        return self.app(environ, start)  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def standard_status(status: str) -> str:
    """ "401 UNAUTHORIZED" -> "401 Unauthorized"; unknown codes are left as they are."""
    code, _, _ = status.partition(" ")
    try:
        return f"{code} {http.HTTPStatus(int(code)).phrase}"
    except ValueError:
        return status
