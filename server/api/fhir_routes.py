"""Blueprint "fhir": the REST API at the root of the URL. Parse, call one function, respond."""

from __future__ import annotations

import flask

from server.api import requests as rq
from server.api.responses import to_flask
from server.errors import NotFoundError
from server.fhir import conditional
from server.fhir.access import AccessContext
from server.fhir.interactions import capabilities
from server.fhir.interactions.bundle import process_bundle
from server.fhir.interactions.create import create
from server.fhir.interactions.delete import delete
from server.fhir.interactions.history import history
from server.fhir.interactions.patch import patch
from server.fhir.interactions.read import read
from server.fhir.interactions.search_compartment import search_compartment
from server.fhir.interactions.search_system import search_system
from server.fhir.interactions.search_type import search_type as run_search_type
from server.fhir.interactions.update import update
from server.fhir.interactions.vread import vread
from server.fhir.operations import catalog  # noqa: F401  (registers the operations)
from server.fhir.operations import registry
from server.fhir.repository import FhirRepository

bp = flask.Blueprint("fhir", __name__)


def _repo() -> FhirRepository:
    return flask.g.repo  # type: ignore[no-any-return]


def _ctx() -> AccessContext:
    return flask.g.access  # type: ignore[no-any-return]


@bp.before_request
def _negotiate() -> None:
    rq.check_accept()


@bp.get("/metadata")
def metadata() -> flask.Response:
    return to_flask(capabilities.capability_statement(rq.fhir_request()))


@bp.get("/_history")
def system_history() -> flask.Response:
    return to_flask(history(_repo(), _ctx(), rq.fhir_request()))


@bp.get("/")
def system_search() -> flask.Response:
    return to_flask(search_system(_repo(), _ctx(), rq.fhir_request()))


@bp.post("/")
def bundle() -> flask.Response:
    body = rq.parse_body()
    return to_flask(process_bundle(_repo(), _ctx(), rq.fhir_request(body)))


@bp.route("/$<name>", methods=["GET", "POST"])
def system_operation(name: str) -> flask.Response:
    return _operation("", None, name)


@bp.get("/<type_>")
def search_type(type_: str) -> flask.Response:
    return to_flask(run_search_type(_repo(), _ctx(), rq.fhir_request(), type_))


@bp.post("/<type_>/_search")
def search_post(type_: str) -> flask.Response:
    body = rq.read_body(rq.settings().max_body_bytes)
    params = list(flask.request.args.items(multi=True))
    if body:
        if rq.media_type() != rq.FORM_TYPE:
            from server.errors import UnsupportedMediaTypeError

            raise UnsupportedMediaTypeError(f"POST _search needs {rq.FORM_TYPE}")
        from urllib.parse import parse_qsl

        params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return to_flask(run_search_type(_repo(), _ctx(), rq.fhir_request(params=tuple(params)), type_))


@bp.post("/<type_>")
def create_route(type_: str) -> flask.Response:
    return to_flask(create(_repo(), _ctx(), rq.fhir_request(rq.parse_body()), type_))


@bp.put("/<type_>")
def conditional_update(type_: str) -> flask.Response:
    return to_flask(conditional.conditional_update(_repo(), _ctx(), rq.fhir_request(rq.parse_body()), type_))


@bp.delete("/<type_>")
def conditional_delete(type_: str) -> flask.Response:
    return to_flask(conditional.conditional_delete(_repo(), _ctx(), rq.fhir_request(), type_))


@bp.get("/<type_>/_history")
def type_history(type_: str) -> flask.Response:
    return to_flask(history(_repo(), _ctx(), rq.fhir_request(), type_))


@bp.get("/<type_>/<id_>")
def read_route(type_: str, id_: str) -> flask.Response:
    if id_.startswith("$"):
        return _operation(type_, None, id_[1:])
    return to_flask(read(_repo(), _ctx(), rq.fhir_request(), type_, id_))


@bp.put("/<type_>/<id_>")
def update_route(type_: str, id_: str) -> flask.Response:
    return to_flask(update(_repo(), _ctx(), rq.fhir_request(rq.parse_body()), type_, id_))


@bp.patch("/<type_>/<id_>")
def patch_route(type_: str, id_: str) -> flask.Response:
    body = rq.parse_body(rq.PATCH_TYPES)
    return to_flask(patch(_repo(), _ctx(), rq.fhir_request(body), type_, id_))


@bp.delete("/<type_>/<id_>")
def delete_route(type_: str, id_: str) -> flask.Response:
    return to_flask(delete(_repo(), _ctx(), rq.fhir_request(), type_, id_))


@bp.get("/<type_>/<id_>/_history")
def instance_history(type_: str, id_: str) -> flask.Response:
    return to_flask(history(_repo(), _ctx(), rq.fhir_request(), type_, id_))


@bp.get("/<type_>/<id_>/_history/<vid>")
def vread_route(type_: str, id_: str, vid: str) -> flask.Response:
    return to_flask(vread(_repo(), _ctx(), rq.fhir_request(), type_, id_, vid))


@bp.get("/<type_>/<id_>/<target>")
def compartment_search(type_: str, id_: str, target: str) -> flask.Response:
    if target.startswith("$"):
        return _operation(type_, id_, target[1:])
    return to_flask(search_compartment(_repo(), _ctx(), rq.fhir_request(), type_, id_, target))


@bp.route("/<type_>/$<name>", methods=["POST"])
def type_operation_post(type_: str, name: str) -> flask.Response:
    return _operation(type_, None, name)


@bp.route("/<type_>/<id_>/$<name>", methods=["POST"])
def instance_operation_post(type_: str, id_: str, name: str) -> flask.Response:
    return _operation(type_, id_, name)


def _operation(type_: str, id_: str | None, name: str) -> flask.Response:
    op = registry.find(type_, id_, name)
    if op is None:
        raise NotFoundError(f"Unknown operation ${name} on {type_}")
    body = rq.parse_body() if flask.request.method == "POST" and flask.request.content_length else None
    return to_flask(op(_repo(), _ctx(), rq.fhir_request(body), type_, id_))
