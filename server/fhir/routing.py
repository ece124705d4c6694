"""Map a relative FHIR URL and method to its interaction (used by batch and transaction entries).

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.errors import InvalidRequestError
from server.errors import MethodNotAllowedError
from server.errors import NotFoundError
from server.fhir import conditional
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.create import create
from server.fhir.interactions.delete import delete
from server.fhir.interactions.history import history
from server.fhir.interactions.patch import patch
from server.fhir.interactions.read import read
from server.fhir.interactions.search_compartment import search_compartment
from server.fhir.interactions.search_system import search_system
from server.fhir.interactions.search_type import search_type
from server.fhir.interactions.update import update
from server.fhir.interactions.vread import vread
from server.fhir.operations import registry
from server.fhir.repository import FhirRepository

Handler = Callable[..., FhirResponse]


def _operation(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None, name: str
) -> FhirResponse:
    op = registry.find(type_, id_, name)
    if op is None:
        raise NotFoundError(f"Unknown operation ${name} on {type_}")
    return op(repo, ctx, req, type_, id_)  # type: ignore[no-any-return]


def dispatch(
    repo: FhirRepository,
    ctx: AccessContext,
    req: FhirRequest,
    parts: list[str],
    has_query: bool,
    **extra: Any,
) -> FhirResponse:
    """Run the interaction that `req.method` on the path `parts` names."""
    method, n = req.method, len(parts)
    if n == 0:
        if method == "GET":
            return search_system(repo, ctx, req)
    elif n == 1:
        (type_,) = parts
        if type_ == "_history" and method == "GET":
            return history(repo, ctx, req)
        if type_.startswith("$"):
            return _operation(repo, ctx, req, "", None, type_[1:])
        handlers: dict[str, Handler] = {
            "GET": lambda: search_type(repo, ctx, req, type_),
            "POST": lambda: create(repo, ctx, req, type_, **extra),
            "PUT": lambda: conditional.conditional_update(repo, ctx, req, type_),
            "DELETE": lambda: conditional.conditional_delete(repo, ctx, req, type_),
        }
        if method in handlers:
            if method in ("PUT", "DELETE") and not has_query:
                raise InvalidRequestError(f"{method} {type_} needs an id or search criteria")
            return handlers[method]()
    elif n == 2:
        type_, id_ = parts
        if id_ == "_history" and method == "GET":
            return history(repo, ctx, req, type_)
        if id_ == "_search" and method in ("GET", "POST"):
            return search_type(repo, ctx, req, type_)
        if id_.startswith("$"):
            return _operation(repo, ctx, req, type_, None, id_[1:])
        handlers = {
            "GET": lambda: read(repo, ctx, req, type_, id_),
            "PUT": lambda: update(repo, ctx, req, type_, id_),
            "PATCH": lambda: patch(repo, ctx, req, type_, id_),
            "DELETE": lambda: delete(repo, ctx, req, type_, id_),
        }
        if method in handlers:
            return handlers[method]()
    elif n == 3 and method == "GET":
        type_, id_, third = parts
        if third == "_history":
            return history(repo, ctx, req, type_, id_)
        if third.startswith("$"):
            return _operation(repo, ctx, req, type_, id_, third[1:])
        return search_compartment(repo, ctx, req, type_, id_, third)
    elif n == 3 and parts[2].startswith("$"):
        return _operation(repo, ctx, req, parts[0], parts[1], parts[2][1:])
    elif n == 4 and method == "GET" and parts[2] == "_history":
        return vread(repo, ctx, req, parts[0], parts[1], parts[3])
    raise MethodNotAllowedError(f"{method} {'/'.join(parts) or '/'} is not a FHIR interaction here")
