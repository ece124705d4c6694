"""Blueprint "fhir": the REST API at the root of the URL, one Flask rule per route of the table.

server/fhir/routing.py decides which method and path is which interaction and handler; this
module only parses what each route's body is, calls the handler and writes the response. The
interaction that ran is left in `flask.g.fhir_interaction` for the audit trail and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

import flask

from server.api import requests as rq
from server.api.responses import to_flask
from server.errors import UnsupportedMediaTypeError
from server.fhir import routing
from server.fhir.http import FhirRequest

bp = flask.Blueprint("fhir", __name__)


@bp.before_request
def _negotiate() -> None:
    rq.check_accept()


def _search_form() -> FhirRequest:
    """POST _search: the query string and the form body together (GET: the query string)."""
    if flask.request.method != "POST":
        return rq.fhir_request()
    body = rq.read_body(rq.settings().max_body_bytes)
    params = list(flask.request.args.items(multi=True))
    if body:
        if rq.media_type() != rq.FORM_TYPE:
            raise UnsupportedMediaTypeError(f"POST _search needs {rq.FORM_TYPE}")
        params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return rq.fhir_request(params=tuple(params))


def _optional_body() -> FhirRequest:
    """An operation: its Parameters (or resource) when POSTed with a body."""
    posted = flask.request.method == "POST" and flask.request.content_length
    return rq.fhir_request(rq.parse_body() if posted else None)


_BODIES: dict[str, Callable[[], FhirRequest]] = {
    "": lambda: rq.fhir_request(),
    "resource": lambda: rq.fhir_request(rq.parse_body()),
    "patch": lambda: rq.fhir_request(rq.parse_body(rq.PATCH_TYPES)),
    "form": _search_form,
    "optional": _optional_body,
}


def _view(route: routing.Route) -> Callable[..., flask.Response]:
    body = _BODIES[route.body]

    def view(**params: str) -> flask.Response:
        g = flask.g._get_current_object()  # type: ignore[attr-defined]  # one context lookup
        # Named before the handler runs, so a refused or failed request is audited as it too.
        g.fhir_interaction = route.target(params)
        req = body()
        resp = routing.run(route, params, g.get("repo"), g.get("access"), req)
        g.fhir_interaction = resp.interaction
        return to_flask(resp)

    view.__name__ = route.endpoint
    view.__doc__ = f"{route.interaction}: {' '.join(route.methods)} {route.path}"
    return view


_VIEWS = {route.endpoint: _view(route) for route in routing.ROUTES}
for _route in routing.ROUTES:
    bp.add_url_rule(_route.path, _route.endpoint, _VIEWS[_route.endpoint], methods=list(_route.methods))


def serve(endpoint: str, **params: str) -> flask.Response:
    """Answer the current request with the route `endpoint` (for blueprints that hand a request on)."""
    return _VIEWS[endpoint](**params)
