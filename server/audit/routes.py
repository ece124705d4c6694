"""Blueprint "audit": AuditEvent over FHIR, append-only (the server's trail, and submitted events).

GET /AuditEvent?date=ge..&agent=..&entity=..&patient=..&type=..&subtype=..&action=..&outcome=..
&source=..&_sort=..&_count=..&_offset=..; GET /AuditEvent/<id>; GET /AuditEvent/$export-ndjson
(the same filters, NDJSON oldest first); GET /AuditEvent/$verify (via the operation registry).
POST /AuditEvent (or PUT with a new non-numeric id) stores an event another system submits
(IHE RESTful ATNA), kept in the resource store; every other write answers 405.
https://hl7.org/fhir/R4B/auditevent.html
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import flask

from server.api import fhir_routes
from server.api import requests as rq
from server.api.responses import to_flask
from server.audit import flask_integration as fi
from server.audit import store
from server.audit.events import chain_pk
from server.audit.events import trail_id
from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.fhir.access import AccessContext
from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.create import create
from server.fhir.interactions.update import update
from server.fhir.search.paging import nonnegative
from server.fhir.search.paging import page_size
from server.fhir.search.params import check_text

bp = flask.Blueprint("audit", __name__)
_WRITES = ["POST", "PUT", "PATCH", "DELETE"]
_RESULT = {"_count", "_offset", "_sort", "_format", "_pretty", "_total", "_summary", "_elements"}


def _ctx() -> AccessContext:
    return fi._ctx()


@bp.before_request
def _negotiate() -> None:
    rq.check_accept()


def _query(params: list[tuple[str, str]], patient: str | None) -> store.AuditQuery:
    s = rq.settings()
    filters, sort, count, offset = [], [], s.default_page_size, 0
    strict = "strict" in (flask.request.headers.get("Prefer") or "")
    for name, value in params:
        check_text(name, value)
        if name == "_count":
            count = page_size(value, default=s.default_page_size, maximum=s.max_page_size)
        elif name == "_offset":
            offset = nonnegative(value, "_offset")
        elif name == "_sort":
            for key in value.split(","):
                desc = key.startswith("-")
                if key.lstrip("-") not in store.SORTS:
                    raise InvalidRequestError(
                        f"_sort {key!r}: AuditEvent sorts by {', '.join(sorted(store.SORTS))}"
                    )
                sort.append((key.lstrip("-"), desc))
        elif name in store.SORTS and value:
            filters.append((name, value))
        elif strict and name not in _RESULT:
            raise InvalidRequestError(f"Unknown AuditEvent search parameter {name!r}")
    return store.AuditQuery(tuple(filters), tuple(sort), count, offset, patient)


def _link(params: list[tuple[str, str]], offset: int | None) -> str:
    kept = [(k, v) for k, v in params if k != "_offset"]
    if offset:
        kept.append(("_offset", str(offset)))
    return f"{rq.base_url()}/AuditEvent" + ("?" + urllib.parse.urlencode(kept) if kept else "")


@bp.get("/AuditEvent")
def search() -> flask.Response:
    """Search the audit trail (auditors; a patient sees events about their own record)."""
    ctx = _ctx()
    fi.require_auditor(ctx, "s")
    params = list(flask.request.args.items(multi=True))
    query = _query(params, ctx.patient)
    rows, total = store.search(flask.g.session, query, rq.base_url())
    base = rq.base_url()
    entries = [
        Entry(
            {"fullUrl": f"{base}/AuditEvent/{r.pk}", "search": {"mode": "match"}},
            store.served_body(r.pk, r.recorded, r.body),
        )
        for r in rows
    ]
    links = [("self", _link(params, query.offset))]
    if query.offset + query.count < total and query.count:
        links.append(("next", _link(params, query.offset + query.count)))
    if query.offset:
        links.append(("previous", _link(params, max(0, query.offset - query.count))))
    return to_flask(FhirResponse(200, bundle_text("searchset", entries, total=total, links=links)))


@bp.get("/AuditEvent/$export-ndjson")
def export_ndjson() -> flask.Response:
    """Stream the events of a time range (the same filters as search) as NDJSON."""
    ctx = _ctx()
    fi.require_auditor(ctx, "s")
    query = _query(list(flask.request.args.items(multi=True)), ctx.patient)
    sessions = flask.current_app.extensions["rehabfhir.sessions"]
    base = rq.base_url()

    def lines() -> Iterator[str]:
        # Its own session, closed when the stream ends: a server-side cursor's transaction
        # must not outlive the stream even if the client never closes the response.
        session = sessions()
        try:
            yield from store.export(session, query, base)
        finally:
            session.close()

    return flask.Response(lines(), status=200, content_type=fi.NDJSON)


@bp.get("/AuditEvent/<id_>")
def read(id_: str) -> flask.Response:
    """Read one AuditEvent (or run an AuditEvent operation such as $verify)."""
    if id_.startswith("$"):
        return _operation(id_[1:])
    ctx = _ctx()
    fi.require_auditor(ctx, "r")
    if not trail_id(id_):  # an event another system submitted: stored like any resource
        return fhir_routes.serve("read_route", type_="AuditEvent", id_=id_)
    pk = chain_pk(id_)
    row = None if pk is None else store.read(flask.g.session, pk, ctx.patient)
    if row is None:
        raise fi.not_found(id_)
    headers = {"ETag": 'W/"1"'}
    return to_flask(FhirResponse(200, store.served_body(row.pk, row.recorded, row.body), headers))


@bp.post("/AuditEvent/$<name>")
def operation_post(name: str) -> flask.Response:
    """Run an AuditEvent operation by POST."""
    return _operation(name)


def _operation(name: str) -> flask.Response:
    from server.fhir.operations import registry

    op = registry.find("AuditEvent", None, name)
    if op is None:
        raise NotFoundError(f"Unknown operation ${name} on AuditEvent")
    return to_flask(op(flask.g.repo, _ctx(), rq.fhir_request(), "AuditEvent", None))


@bp.route("/AuditEvent", methods=_WRITES)
@bp.route("/AuditEvent/<id_>", methods=_WRITES)
@bp.route("/AuditEvent/<id_>/<path:rest>", methods=_WRITES)
def write(id_: str | None = None, rest: str | None = None) -> flask.Response:
    """Submitting a new AuditEvent (POST, or PUT with a new id) is a create; anything else is 405.

    IHE RESTful ATNA: other systems record their audit events here. The server's own trail
    (numeric ids) and every stored event are never changed or deleted (AuditedRepository).
    """
    method = flask.request.method
    is_create = rest is None and method == "POST" and id_ is None
    if is_create or (rest is None and method == "PUT" and id_ is not None and not trail_id(id_)):
        ctx = _ctx()
        _require_submitter(ctx)
        body = _as_submitted_by(rq.parse_body(), ctx)
        request = rq.fhir_request(body)
        repo = flask.g.repo
        if is_create:
            return to_flask(create(repo, ctx, request, "AuditEvent"))
        return to_flask(update(repo, ctx, request, "AuditEvent", id_ or ""))
    fi.forbid_writes()
    raise AssertionError("unreachable")


# What AuditEvent serves: the trail's search, read, vread and history (each event has one version),
# and the create another system submits. Never update, patch or delete (append-only:
# hook.AuditedRepository); a PUT to a new non-numeric id is taken as a create, not declared as update.
INTERACTIONS = ("read", "vread", "history-instance", "search-type", "create")
EXPORT_NDJSON = "https://rehabfhir.org/fhir/OperationDefinition/AuditEvent-export-ndjson"


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare AuditEvent as this blueprint serves it: append-only, its own search, $export-ndjson."""
    for entry in statement["rest"][0]["resource"]:
        if entry["type"] != "AuditEvent":
            continue
        entry["documentation"] = (
            "Append-only: the server's own trail (numeric ids) and events other systems submit "
            "(POST, IHE RESTful ATNA, a system/ scope with AuditEvent create). No event is ever "
            "changed or deleted (405)."
        )
        entry["interaction"] = [{"code": code} for code in INTERACTIONS]
        entry["versioning"] = "versioned"
        entry["readHistory"] = False
        entry["updateCreate"] = False
        entry["conditionalUpdate"] = False
        entry["conditionalDelete"] = "not-supported"
        # The trail's search takes its own parameters (store.SORTS), and no _include/_revinclude.
        entry["searchParam"] = [p for p in entry.get("searchParam", ()) if p["name"] in store.SORTS]
        entry.pop("searchInclude", None)
        entry.pop("searchRevInclude", None)
        entry.setdefault("operation", []).append({"name": "export-ndjson", "definition": EXPORT_NDJSON})


def _require_submitter(ctx: AccessContext) -> None:
    """Only a backend system may record audit events (a system/ grant with AuditEvent.c), never a user."""
    if not any(r.context == "system" and r.covers("AuditEvent", "c") for r in ctx.rules):
        raise ForbiddenError(
            "Submitting an AuditEvent needs a system/ scope granting AuditEvent create (backend services)",
            message_id="MSG_FORBIDDEN",
        )


def _as_submitted_by(body: Any, ctx: AccessContext) -> Any:
    """Record the authenticated client as the event's audit source (IHE ATNA: source.observer).

    The audit source is the system that detected and reported the event; here that is the
    client whose token submitted it, whatever the body claims. A claimed observer that differs
    is kept as source.site's text so nothing the submitter said is lost.
    """
    if not isinstance(body, dict):
        return body  # validation answers it
    source = dict(body.get("source") or {}) if isinstance(body.get("source"), dict) else {}
    claimed = source.get("observer")
    # The system: this server's namespace of registered OAuth client ids.
    observer = {
        "identifier": {"system": rq.base_url() + "/auth/clients", "value": ctx.client_id or "unknown"}
    }
    if claimed and claimed != observer and not source.get("site"):
        source["site"] = f"observer claimed by the submitter: {json.dumps(claimed, sort_keys=True)}"
    source["observer"] = observer
    return {**body, "source": source}
