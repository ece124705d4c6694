"""flask.Request -> FhirRequest: content negotiation, body limits and JSON parsing."""

from __future__ import annotations

from typing import Any

import flask
import orjson

from server.api.body_shape import check_shape
from server.errors import InvalidRequestError
from server.errors import NotAcceptableError
from server.errors import PayloadTooLargeError
from server.errors import UnsupportedMediaTypeError
from server.fhir.http import FhirRequest
from server.fhir.resources import nul_path
from server.settings import Settings

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
PATCH_TYPES = ("application/json-patch+json",)
FORM_TYPE = "application/x-www-form-urlencoded"
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
_DRAIN_LIMIT = 1024 * 1024 * 1024


def settings() -> Settings:
    """The app's Settings."""
    return flask.current_app.config["REHABFHIR_SETTINGS"]  # type: ignore[no-any-return]


def base_url() -> str:
    """The public base URL, from configuration only: a request's Host header is the caller's to choose."""
    return settings().public_base_url


def _drain_and_refuse(limit: int) -> None:
    # Read the rest of an oversized body before answering, so the client sees a 413
    # instead of a connection reset while it is still sending.
    stream = flask.request.environ.get("wsgi.input")
    remaining = flask.request.content_length or _DRAIN_LIMIT
    while stream is not None and remaining > 0:
        chunk = stream.read(min(1 << 20, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
    raise PayloadTooLargeError(
        f"Request body exceeds the limit of {limit} bytes", message_id="MSG_BODY_TOO_LARGE"
    )


def read_body(limit: int) -> bytes:
    """Return the raw request body, refusing bodies over the limit with 413."""
    length = flask.request.content_length
    if length is not None and length > limit:
        _drain_and_refuse(limit)
    stream = flask.request.stream
    data = stream.read(limit + 1)
    if len(data) > limit:
        _drain_and_refuse(limit)
    return data


def media_type() -> str:
    """The request's media type without parameters, lower-cased."""
    return (flask.request.mimetype or "").lower()


def check_accept() -> None:
    """Refuse with 406 when neither _format nor Accept allows JSON."""
    fmt = flask.request.args.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _FORMAT_JSON:
            raise NotAcceptableError(f"_format {fmt!r} is not supported; this server speaks JSON")
        return
    accept = flask.request.headers.get("Accept", "")
    if not accept.strip():
        return
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in JSON_TYPES or kind in ("*/*", "application/*") or kind.endswith("+json"):
            return
    raise NotAcceptableError(
        f"Accept {accept!r} names no format this server produces (application/fhir+json)"
    )


def parse_json(data: bytes) -> Any:
    """Parse a JSON body, 400 with the parser's message when malformed."""
    if not data.strip():
        raise InvalidRequestError("The request body is empty; a JSON resource is required")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Malformed JSON: {exc}", message_id="MSG_JSON_PARSE") from None
    # JSON can carry NUL only as the escape \u0000: look for it before walking the document.
    if b"\\u0000" in data:
        path = nul_path(doc)
        if path is not None:
            raise InvalidRequestError(
                f"{path} contains a NUL character (U+0000), which no FHIR string may hold",
                expression=(path,),
                message_id="MSG_JSON_PARSE",
            )
    check_shape(doc)  # items per array, depth, items in all: bounded work before any model is built
    return doc


def parse_body(allowed: tuple[str, ...] = JSON_TYPES) -> Any:
    """Check the content type and parse the JSON body."""
    data = read_body(settings().max_body_bytes)
    kind = media_type()
    if kind not in allowed:
        raise UnsupportedMediaTypeError(
            f"Content-Type {kind or '(none)'!r} is not accepted here; use {' or '.join(allowed)}",
            message_id="MSG_CONTENT_TYPE",
        )
    return parse_json(data)


def fhir_request(body: Any = None, params: tuple[tuple[str, str], ...] | None = None) -> FhirRequest:
    """Build the framework-free request the FHIR layer works on."""
    s = settings()
    return FhirRequest(
        method=flask.request.method,
        base_url=base_url(),
        params=tuple(flask.request.args.items(multi=True)) if params is None else params,
        headers={k.lower(): v for k, v in flask.request.headers.items()},
        body=body,
        path=flask.request.path,
        default_count=s.default_page_size,
        max_count=s.max_page_size,
        max_bundle_entries=s.max_bundle_entries,
        referential_integrity=s.referential_integrity,
        delete_referenced=s.delete_referenced,
    )
