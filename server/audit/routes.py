"""AuditEvent over FHIR, append-only: the server's trail, and events other systems submit.

The routes are in the one route table (server/fhir/routing.py, the audit_* endpoints): Flask,
batch and transaction entries, the audit trail and the metrics all take them from there. This
module provides their handlers, which read the trail's own tables (server/audit/store.py):

GET /AuditEvent?date=ge..&agent=..&entity=..&patient=..&type=..&subtype=..&action=..&outcome=..
&source=..&_sort=..&_count=..&_offset=.. (also GET/POST /AuditEvent/_search); GET /AuditEvent/<id>,
/AuditEvent/<id>/_history and /AuditEvent/<id>/_history/1 (each event has one version);
GET /AuditEvent/$export-ndjson (the same filters, NDJSON oldest first); GET /AuditEvent/$verify
(via the operation registry). POST /AuditEvent (or PUT with a new non-numeric id) stores an event
another system submits (IHE RESTful ATNA), kept in the resource store; every other write answers 405.
https://hl7.org/fhir/R4B/auditevent.html
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import flask

from server.audit import flask_integration as fi
from server.audit import store
from server.audit.events import chain_pk
from server.audit.events import instant
from server.audit.events import trail_id
from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.fhir import routing
from server.fhir.access import AccessContext
from server.fhir.bundles import Entry
from server.fhir.bundles import bundle_text
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.create import create
from server.fhir.interactions.history import history
from server.fhir.interactions.read import read
from server.fhir.interactions.update import update
from server.fhir.interactions.vread import vread
from server.fhir.resources import check_id
from server.fhir.search.dates import parse_date_range
from server.fhir.search.paging import nonnegative
from server.fhir.search.paging import page_size
from server.fhir.search.params import check_text

AUDIT = routing.AUDIT_EVENT
_RESULT = {"_count", "_offset", "_sort", "_format", "_pretty", "_total", "_summary", "_elements"}
Params = routing.Params


def _query(params: list[tuple[str, str]], patient: str | None, req: FhirRequest) -> store.AuditQuery:
    filters, sort, count, offset = [], [], req.default_count, 0
    strict = "strict" in (req.header("prefer") or "")
    for name, value in params:
        check_text(name, value)
        if name == "_count":
            count = page_size(value, default=req.default_count, maximum=req.max_count)
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


def _link(base: str, params: list[tuple[str, str]], offset: int | None) -> str:
    kept = [(k, v) for k, v in params if k != "_offset"]
    if offset:
        kept.append(("_offset", str(offset)))
    return f"{base}/AuditEvent" + ("?" + urllib.parse.urlencode(kept) if kept else "")


def search(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """Search the audit trail (auditors; a patient sees events about their own record)."""
    fi.require_auditor(ctx, "s")
    params = list(req.params)
    query = _query(params, ctx.patient, req)
    base = req.base_url
    rows, total = store.search(repo.session, query, base)
    entries = [
        Entry(
            {"fullUrl": f"{base}/AuditEvent/{r.pk}", "search": {"mode": "match"}},
            store.served_body(r.pk, r.recorded, r.body),
        )
        for r in rows
    ]
    links = [("self", _link(base, params, query.offset))]
    if query.offset + query.count < total and query.count:
        links.append(("next", _link(base, params, query.offset + query.count)))
    if query.offset:
        links.append(("previous", _link(base, params, max(0, query.offset - query.count))))
    return FhirResponse(200, bundle_text("searchset", entries, total=total, links=links))


def compartment(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """GET /Patient/{id}/AuditEvent: the trail's events about that patient (as /AuditEvent?patient=)."""
    check_id(p["id_"])
    patient = ("patient", f"Patient/{p['id_']}")
    return search(repo, ctx, replace(req, params=(*req.params, patient)), p)


def export_ndjson(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """Stream the events of a time range (the same filters as search) as NDJSON."""
    fi.require_auditor(ctx, "s")
    query = _query(list(req.params), ctx.patient, req)
    sessions = flask.current_app.extensions["rehabfhir.sessions"]
    stmt = store.export_statement(query, req.base_url)  # a bad filter is a 400 here, not mid-stream

    def lines() -> Iterator[str]:
        # Its own session, closed when the stream ends: a server-side cursor's transaction
        # must not outlive the stream even if the client never closes the response.
        session = sessions()
        try:
            yield from store.export(session, stmt)
        finally:
            session.close()

    return FhirResponse(200, lines(), {"Content-Type": fi.NDJSON})


def _trail_row(repo: Any, ctx: AccessContext, id_: str) -> Any:
    """The record of the trail's event `id_` the token may see, else 404."""
    pk = chain_pk(id_)
    row = None if pk is None else store.read(repo.session, pk, ctx.patient)
    if row is None:
        raise fi.not_found(id_)
    return row


def read_event(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """Read one AuditEvent: of the trail (numeric id), or one another system submitted."""
    id_ = p["id_"]
    fi.require_auditor(ctx, "r")
    if not trail_id(id_):  # an event another system submitted: stored like any resource
        return read(repo, ctx, req, AUDIT, id_)
    row = _trail_row(repo, ctx, id_)
    return FhirResponse(200, store.served_body(row.pk, row.recorded, row.body), {"ETag": 'W/"1"'})


def vread_event(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """Read a version of an AuditEvent: a trail event has version 1 only."""
    id_, vid = p["id_"], p["vid"]
    fi.require_auditor(ctx, "r")
    if not trail_id(id_):
        return vread(repo, ctx, req, AUDIT, id_, vid)
    row = _trail_row(repo, ctx, id_)
    if vid != "1":
        raise NotFoundError(f"AuditEvent/{id_} has no version {vid!r}", message_id="MSG_NO_VERSION")
    return FhirResponse(200, store.served_body(row.pk, row.recorded, row.body), {"ETag": 'W/"1"'})


def _within(recorded: datetime, req: FhirRequest) -> bool:
    """Whether a trail event's only version is in the history _since and _at ask for."""
    since, at = req.param("_since"), req.param("_at")
    if since is not None and recorded < parse_date_range(since)[0]:
        return False
    return at is None or recorded < parse_date_range(at)[1]


def history_event(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """The history of an AuditEvent: a trail event's one version (its creation), else the stored one's."""
    id_ = p["id_"]
    fi.require_auditor(ctx, "r")
    if not trail_id(id_):
        return history(repo, ctx, req, AUDIT, id_)
    row = _trail_row(repo, ctx, id_)
    base = f"{req.base_url}/AuditEvent/{row.pk}"
    entries = []
    if _within(row.recorded, req):
        members = {
            "fullUrl": base,
            "request": {"method": "POST", "url": AUDIT},
            "response": {"status": "201", "etag": 'W/"1"', "lastModified": instant(row.recorded)},
        }
        entries.append(Entry(members, store.served_body(row.pk, row.recorded, row.body)))
    links = [("self", f"{base}/_history")]
    return FhirResponse(200, bundle_text("history", entries, total=len(entries), links=links))


def create_event(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params, **extra: Any) -> FhirResponse:
    """Record an event another system submits (IHE RESTful ATNA): a backend with AuditEvent create."""
    _require_submitter(ctx)
    return create(repo, ctx, replace(req, body=_as_submitted_by(req.body, ctx, req.base_url)), AUDIT, **extra)


def update_event(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """PUT with a new non-numeric id records a submitted event; an existing one is never changed (405).

    The server's own trail (numeric ids) and every stored event are never changed or deleted
    (hook.AuditedRepository refuses it inside the write's transaction).
    """
    id_ = p["id_"]
    if trail_id(id_):
        fi.forbid_writes()
    _require_submitter(ctx)
    return update(repo, ctx, replace(req, body=_as_submitted_by(req.body, ctx, req.base_url)), AUDIT, id_)


def refuse(repo: Any, ctx: AccessContext, req: FhirRequest, p: Params) -> FhirResponse:
    """Any other write (patch, delete, conditional update or delete): 405, AuditEvent is append-only."""
    fi.forbid_writes()
    raise AssertionError("unreachable")


routing.provide(
    {
        "audit_search": search,
        "audit_compartment": compartment,
        "audit_export_ndjson": export_ndjson,
        "audit_read": read_event,
        "audit_vread": vread_event,
        "audit_history": history_event,
        "audit_create": create_event,
        "audit_update": update_event,
        "audit_refuse": refuse,
    }
)


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


def _as_submitted_by(body: Any, ctx: AccessContext, base: str) -> Any:
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
    observer = {"identifier": {"system": base + "/auth/clients", "value": ctx.client_id or "unknown"}}
    if claimed and claimed != observer and not source.get("site"):
        source["site"] = f"observer claimed by the submitter: {json.dumps(claimed, sort_keys=True)}"
    source["observer"] = observer
    return {**body, "source": source}
