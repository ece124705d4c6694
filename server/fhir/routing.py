"""The route table: each FHIR REST method and path, the interaction it is and its handler.

The one place that decides what a request is. The Flask blueprint registers these routes,
batch and transaction entries are dispatched through them, and the audit trail and the
metrics take the interaction a handler's response names (or, for a request no handler
answered, the one its route names). https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequestError
from server.errors import MethodNotAllowedError
from server.errors import NotFoundError
from server.fhir import conditional
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import capability_statement
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
from server.fhir.operations import catalog  # noqa: F401  (registers the operations)
from server.fhir.operations import registry
from server.fhir.repository import FhirRepository
from server.fhir.subscriptions import subscription as subscriptions

Params = Mapping[str, str]
Handler = Callable[..., FhirResponse]  # (repo, ctx, req, params, **extra) -> FhirResponse


@dataclass(frozen=True, slots=True)
class Interaction:
    """What a request (or bundle entry) was: restful-interaction code and its target.

    A batch or transaction names, in `entries`, what each of its entries ran (in the Bundle's
    entry order; None for an entry that named no interaction this server has).
    """

    subtype: str
    type: str | None = None
    id: str | None = None
    version: str | None = None
    entries: tuple[Interaction | None, ...] = ()

    @property
    def is_write(self) -> bool:
        """Whether the interaction stores data (audited in the write's transaction)."""
        return self.subtype in ("create", "update", "patch", "delete")

    @property
    def is_query(self) -> bool:
        """Whether the interaction returns a set (one event per patient in it)."""
        return self.subtype.startswith(("search", "history"))

    def reference(self) -> str | None:
        """Type/id[/_history/v] of the target, if there is one."""
        if not (self.type and self.id):
            return self.type if self.type and self.subtype == "operation" else None
        return f"{self.type}/{self.id}" + (f"/_history/{self.version}" if self.version else "")


@dataclass(frozen=True, slots=True)
class Route:
    """One method set on one path (Flask rule syntax), the interaction it is, and its handler.

    `body` says what the Flask adapter parses: "resource" (FHIR JSON), "patch" (JSON Patch or
    FHIRPath Patch), "form" (a POST _search), "optional" (an operation's Parameters, if any)
    or "" (none). `in_bundle` is False for routes a batch or transaction entry may not name;
    `criteria` marks the conditional ones, which a bundle entry must give search criteria.
    """

    endpoint: str
    methods: tuple[str, ...]
    path: str
    interaction: str
    handler: Handler
    body: str = ""
    in_bundle: bool = True
    criteria: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments ("<type_>", "$<name>", "_history", …)."""
        return tuple(s for s in self.path.split("/") if s)

    def target(self, params: Params) -> Interaction:
        """The interaction this route is for these path parameters."""
        if "target" in params:  # a compartment search is a search of the target type
            return Interaction(self.interaction, params["target"])
        if len(self.segments) == 3 and self.segments[2][:1].isupper():  # /Patient/<id_>/AuditEvent
            return Interaction(self.interaction, self.segments[2])
        first = self.segments[0] if self.segments else ""
        type_ = params.get("type_") or (first if first[:1].isupper() else None)  # "/Subscription"
        return Interaction(self.interaction, type_, params.get("id_"), params.get("vid"))


def _operation(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    type_, id_, name = p.get("type_", ""), p.get("id_"), p["name"]
    op = registry.find(type_, id_, name)
    if op is None:
        raise NotFoundError(f"Unknown operation ${name} on {type_}")
    return op(repo, ctx, req, type_, id_)  # type: ignore[no-any-return]


def _audit_operation(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    return _operation(repo, ctx, req, {**p, "type_": AUDIT_EVENT})


# -- handlers provided from outside this layer ------------------------------------------------
# AuditEvent is served from the audit trail's own tables, which this layer may not reach (it
# imports neither Flask nor SQLAlchemy nor server.audit). Its routes are in the table like every
# other route (Flask rules, bundle entries, the interaction the audit and the metrics see); their
# handlers are provided by server/audit/routes.py, by name, when it is imported (create_app).
AUDIT_EVENT = "AuditEvent"
_PROVIDED: dict[str, Handler] = {}
_WANTED: set[str] = set()


def _provided(name: str) -> Handler:
    """A handler that runs what `provide` registered as `name`."""
    _WANTED.add(name)

    def handler(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, p: Params, **extra: Any) -> Any:
        impl = _PROVIDED.get(name)
        if impl is None:  # the app was built without the module that serves it
            raise NotFoundError(f"{req.method} {req.path or '/'} is not served here")
        return impl(repo, ctx, req, p, **extra)

    handler.__name__ = name
    return handler


def provide(handlers: Mapping[str, Handler]) -> None:
    """Register the handlers of the routes that name them (see `_provided`)."""
    unknown = set(handlers) - _WANTED
    if unknown:
        raise KeyError(f"no route wants the handler(s) {sorted(unknown)}")
    _PROVIDED.update(handlers)


def missing_handlers() -> set[str]:
    """The names routes want and nobody provided (empty in a wired app)."""
    return _WANTED - set(_PROVIDED)


def _bundle(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    from server.fhir.interactions.bundle import process_bundle  # it dispatches through this table

    return process_bundle(repo, ctx, req)


_TYPE = "/<type_>"
_INSTANCE = "/<type_>/<id_>"
ROUTES: tuple[Route, ...] = (
    Route(
        "metadata",
        ("GET",),
        "/metadata",
        "capabilities",
        lambda r, c, q, p: capability_statement(q),
        in_bundle=False,
    ),
    Route("system_search", ("GET",), "/", "search-system", lambda r, c, q, p: search_system(r, c, q)),
    Route("bundle", ("POST",), "/", "transaction", _bundle, body="resource", in_bundle=False),
    Route("system_history", ("GET",), "/_history", "history-system", lambda r, c, q, p: history(r, c, q)),
    Route("system_operation", ("GET", "POST"), "/$<name>", "operation", _operation, body="optional"),
    Route("search_type", ("GET",), _TYPE, "search-type", lambda r, c, q, p: search_type(r, c, q, p["type_"])),
    Route(
        "create_route",
        ("POST",),
        _TYPE,
        "create",
        lambda r, c, q, p, **extra: create(r, c, q, p["type_"], **extra),
        body="resource",
    ),
    Route(
        "conditional_update",
        ("PUT",),
        _TYPE,
        "update",
        lambda r, c, q, p: conditional.conditional_update(r, c, q, p["type_"]),
        body="resource",
        criteria=True,
    ),
    Route(
        "conditional_delete",
        ("DELETE",),
        _TYPE,
        "delete",
        lambda r, c, q, p: conditional.conditional_delete(r, c, q, p["type_"]),
        criteria=True,
    ),
    Route(
        "search_post",
        ("GET", "POST"),
        _TYPE + "/_search",
        "search-type",
        lambda r, c, q, p: search_type(r, c, q, p["type_"]),
        body="form",
    ),
    Route(
        "type_history",
        ("GET",),
        _TYPE + "/_history",
        "history-type",
        lambda r, c, q, p: history(r, c, q, p["type_"]),
    ),
    Route("type_operation", ("GET", "POST"), _TYPE + "/$<name>", "operation", _operation, body="optional"),
    # Subscriptions (Backport IG): checked against their topic and owner before they are stored.
    Route(
        "subscription_create",
        ("POST",),
        "/Subscription",
        "create",
        lambda r, c, q, p, **extra: subscriptions.create_subscription(r, c, q, **extra),
        body="resource",
    ),
    Route(
        "subscription_update",
        ("PUT",),
        "/Subscription/<id_>",
        "update",
        lambda r, c, q, p: subscriptions.update_subscription(r, c, q, p["id_"]),
        body="resource",
    ),
    Route(
        "subscription_conditional_update",
        ("PUT",),
        "/Subscription",
        "update",
        lambda r, c, q, p: subscriptions.refuse_patch(),
        body="resource",
    ),
    Route(
        "subscription_patch",
        ("PATCH",),
        "/Subscription/<id_>",
        "patch",
        lambda r, c, q, p: subscriptions.refuse_patch(),
        body="patch",
    ),
    # AuditEvent (append-only): the server's trail and events other systems submit. Every write
    # but a submission is refused; the handlers are provided by server/audit/routes.py.
    Route("audit_search", ("GET",), "/AuditEvent", "search-type", _provided("audit_search")),
    # The Patient compartment's AuditEvents are the trail's events about that patient.
    Route(
        "audit_compartment",
        ("GET",),
        "/Patient/<id_>/AuditEvent",
        "search-type",
        _provided("audit_compartment"),
    ),
    Route(
        "audit_search_post",
        ("GET", "POST"),
        "/AuditEvent/_search",
        "search-type",
        _provided("audit_search"),
        body="form",
    ),
    Route("audit_create", ("POST",), "/AuditEvent", "create", _provided("audit_create"), body="resource"),
    Route(
        "audit_conditional_update",
        ("PUT",),
        "/AuditEvent",
        "update",
        _provided("audit_refuse"),
        criteria=True,
    ),
    Route(
        "audit_conditional_delete",
        ("DELETE",),
        "/AuditEvent",
        "delete",
        _provided("audit_refuse"),
        criteria=True,
    ),
    Route(
        "audit_export_ndjson",
        ("GET",),
        "/AuditEvent/$export-ndjson",
        "operation",
        _provided("audit_export_ndjson"),
        in_bundle=False,  # a stream of NDJSON, not a resource
    ),
    Route(
        "audit_operation",
        ("GET", "POST"),
        "/AuditEvent/$<name>",
        "operation",
        _audit_operation,
        body="optional",
    ),
    Route("audit_read", ("GET",), "/AuditEvent/<id_>", "read", _provided("audit_read")),
    Route(
        "audit_update", ("PUT",), "/AuditEvent/<id_>", "update", _provided("audit_update"), body="resource"
    ),
    Route("audit_patch", ("PATCH",), "/AuditEvent/<id_>", "patch", _provided("audit_refuse")),
    Route("audit_delete", ("DELETE",), "/AuditEvent/<id_>", "delete", _provided("audit_refuse")),
    Route(
        "audit_history",
        ("GET",),
        "/AuditEvent/<id_>/_history",
        "history-instance",
        _provided("audit_history"),
    ),
    Route("audit_vread", ("GET",), "/AuditEvent/<id_>/_history/<vid>", "vread", _provided("audit_vread")),
    Route("read_route", ("GET",), _INSTANCE, "read", lambda r, c, q, p: read(r, c, q, p["type_"], p["id_"])),
    Route(
        "update_route",
        ("PUT",),
        _INSTANCE,
        "update",
        lambda r, c, q, p: update(r, c, q, p["type_"], p["id_"]),
        body="resource",
    ),
    Route(
        "patch_route",
        ("PATCH",),
        _INSTANCE,
        "patch",
        lambda r, c, q, p: patch(r, c, q, p["type_"], p["id_"]),
        body="patch",
    ),
    Route(
        "delete_route",
        ("DELETE",),
        _INSTANCE,
        "delete",
        lambda r, c, q, p: delete(r, c, q, p["type_"], p["id_"]),
    ),
    Route(
        "instance_history",
        ("GET",),
        _INSTANCE + "/_history",
        "history-instance",
        lambda r, c, q, p: history(r, c, q, p["type_"], p["id_"]),
    ),
    Route(
        "vread_route",
        ("GET",),
        _INSTANCE + "/_history/<vid>",
        "vread",
        lambda r, c, q, p: vread(r, c, q, p["type_"], p["id_"], p["vid"]),
    ),
    Route(
        "instance_operation",
        ("GET", "POST"),
        _INSTANCE + "/$<name>",
        "operation",
        _operation,
        body="optional",
    ),
    Route(
        "compartment_search",
        ("GET",),
        _INSTANCE + "/<target>",
        "search-type",
        lambda r, c, q, p: search_compartment(r, c, q, p["type_"], p["id_"], p["target"]),
    ),
)


def _rank(segment: str) -> int:
    """Literal segments beat "$<name>", which beats a plain variable (as in Flask's rule order)."""
    if segment.startswith("$<"):
        return 1
    return 2 if segment.startswith("<") else 0


# Most specific first: the first route whose method and segments fit is the one.
_ORDERED = sorted(ROUTES, key=lambda r: (len(r.segments), [_rank(s) for s in r.segments]))


def _fit(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for segment, part in zip(segments, parts, strict=True):
        if segment.startswith("$<"):
            if not part.startswith("$") or len(part) == 1:
                return None
            params[segment[2:-1]] = part[1:]
        elif segment.startswith("<"):
            params[segment[1:-1]] = part
        elif segment != part:
            return None
    return params


def match(method: str, parts: list[str]) -> tuple[Route, dict[str, str]] | None:
    """The route and path parameters for a method and a path split on "/" (HEAD is GET)."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    for route in _ORDERED:
        if method in route.methods and len(route.segments) == len(parts):
            params = _fit(route.segments, parts)
            if params is not None:
                return route, params
    return None


def run(
    route: Route, params: Params, repo: FhirRepository, ctx: AccessContext, req: FhirRequest, **extra: Any
) -> FhirResponse:
    """Run the route's handler; the response names the interaction that ran."""
    # Only a create takes extra arguments (the id a transaction assigned to its urn:uuid).
    resp = (
        route.handler(repo, ctx, req, params, **extra)
        if route.interaction == "create"
        else route.handler(repo, ctx, req, params)
    )
    if resp.interaction is None:
        resp.interaction = route.target(params)
    return resp


def dispatch(
    repo: FhirRepository,
    ctx: AccessContext,
    req: FhirRequest,
    parts: list[str],
    has_query: bool,
    **extra: Any,
) -> FhirResponse:
    """Run the interaction that `req.method` on the path `parts` names (a bundle entry)."""
    found = match(req.method, parts)
    if found is None or not found[0].in_bundle:
        raise MethodNotAllowedError(f"{req.method} {'/'.join(parts) or '/'} is not a FHIR interaction here")
    route, params = found
    if route.criteria and not has_query:
        raise InvalidRequestError(f"{req.method} {'/'.join(parts)} needs an id or search criteria")
    return run(route, params, repo, ctx, req, **extra)


_BY_METHOD = {
    "GET": "read",
    "HEAD": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def interaction_of(method: str, parts: list[str]) -> Interaction:
    """The interaction a method and path ask for: the route's, else named after the method.

    The fallback names requests no route takes (answered 404 or 405) for the audit trail.
    """
    found = match(method, parts)
    if found is not None:
        route, params = found
        return route.target(params)
    n = len(parts)
    if n == 0:
        return Interaction("transaction")
    if parts[-1].startswith("$"):
        return Interaction("operation", parts[0] if n > 1 else None, parts[1] if n > 2 else None)
    return Interaction(_BY_METHOD.get(method.upper(), "operation"), parts[0], parts[1] if n > 1 else None)
