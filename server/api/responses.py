"""FhirResponse -> flask.Response: media type, _pretty, headers."""

from __future__ import annotations

import flask
import orjson

from server.fhir.http import FhirResponse

FHIR_JSON = "application/fhir+json; charset=utf-8"


def _wants_pretty() -> bool:
    return flask.request.args.get("_pretty", "").lower() == "true"


def _content_type() -> str:
    fmt = (flask.request.args.get("_format") or "").lower()
    accept = flask.request.headers.get("Accept", "").lower()
    if fmt in ("application/json", "json") and "fhir" not in accept:
        return "application/json; charset=utf-8"
    if not fmt and accept.startswith("application/json") and "fhir" not in accept:
        return "application/json; charset=utf-8"
    return FHIR_JSON


def to_flask(resp: FhirResponse) -> flask.Response:
    """Serialise the body (stored text is sent as-is unless _pretty) and copy headers."""
    body = resp.body
    if body is None:
        out = flask.Response(status=resp.status)
    else:
        if isinstance(body, str) and not _wants_pretty():
            data = body.encode()
        else:
            doc = orjson.loads(body) if isinstance(body, str) else body
            option = orjson.OPT_INDENT_2 if _wants_pretty() else 0
            data = orjson.dumps(doc, option=option)
        out = flask.Response(data, status=resp.status, content_type=_content_type())
    for name, value in resp.headers.items():
        out.headers[name] = value
    return out
