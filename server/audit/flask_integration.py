"""Flask wiring of the audit trail: audit every FHIR request, serve AuditEvent (append-only).

- before_request wraps flask.g.repo in an AuditedRepository: writes are audited inside
  their own transaction, before it commits.
- after_request audits everything else (reads, searches, history, operations, each bundle
  entry, failures and denials) in a transaction of its own, before the response is sent;
  if that fails the response becomes a 500 OperationOutcome (fail closed).
- AuditEvent's routes are in the route table (server/fhir/routing.py); server/audit/routes.py
  provides their handlers: search, read, /AuditEvent/$export-ndjson, submitted events, and 405
  for every other write.
https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import io
import logging
import urllib.parse
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import flask
import orjson

from server.api import requests as rq
from server.api.responses import to_flask
from server.audit import chain
from server.audit import store
from server.audit.events import AuditFacts
from server.audit.events import auth_facts
from server.audit.events import outcome_for_status
from server.audit.hook import APPEND_ONLY
from server.audit.hook import AuditedRepository
from server.audit.hook import Interaction
from server.audit.hook import Write
from server.audit.hook import classify
from server.audit.hook import patients_of_text
from server.audit.models import AuditPending
from server.audit.witness import HeadTimer
from server.audit.witness import Witness
from server.audit.witness import default_path as default_witness_path
from server.audit.witness import read_heads
from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.errors import MethodNotAllowedError
from server.errors import NotFoundError
from server.fhir.access import DENY
from server.fhir.access import AccessContext
from server.fhir.http import FhirResponse
from server.fhir.outcomes import issue
from server.fhir.outcomes import operation_outcome
from server.fhir.outcomes import to_operation_outcome
from server.fhir.resources import nul_path
from server.settings import Settings
from server.store.session import is_connection_lost
from server.store.session import unavailable

log = logging.getLogger("rehabfhir.audit")
EXTENSION = "rehabfhir.audit"
NDJSON = "application/fhir+ndjson"
BATCHER = "rehabfhir.audit_batcher"
PENDING = "audit_pending"  # flask.g: chain.Pending of the writes this request committed (PostgreSQL)
_PENDING_TABLE = AuditPending.__table__
# A pending row older than this was left by a request that did not link it (a crash, a lost
# connection): the head timer links it. Requests link theirs within milliseconds.
PENDING_AGE = 5.0
HEAD_TIMER = "rehabfhir.audit_head_timer"
EXPECTED = "audit_expected"  # flask.g: this request was announced to the group commit


@dataclass(frozen=True)
class AuditSettings:
    """Audit configuration: on by default; the keyring links and signs the chain, the witness keeps heads."""

    enabled: bool
    keyring: chain.Keyring
    witness_path: str
    witness_max_bytes: int = 64 * 1024 * 1024
    head_interval: float = 10.0
    head_sink: str = ""
    witness: Witness | None = None  # opened by init_app

    @property
    def grace(self) -> float:
        """How long heads may wait for the witness before verify calls it behind (see verify.py)."""
        return 2 * self.head_interval + 5 if self.head_interval > 0 else 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditSettings:
        """The audit part of Settings (REHABFHIR_AUDIT*): keyring built, witness path chosen."""
        enabled = settings.audit
        key = (settings.audit_key or settings.secret_key).encode()
        keyring = chain.Keyring.build(key, settings.audit_key_id, settings.audit_retired_keys)
        path = settings.audit_witness or default_witness_path(settings.database_url)
        return cls(
            enabled,
            keyring,
            path,
            settings.audit_witness_max_bytes,
            settings.audit_head_interval,
            settings.audit_head_sink,
        )


def audit_settings(app: flask.Flask | None = None) -> AuditSettings:
    """The app's AuditSettings."""
    return (app or flask.current_app).extensions[EXTENSION]  # type: ignore[no-any-return]


def _ctx() -> AccessContext:
    return getattr(flask.g, "access", None) or DENY


def _facts(
    interaction: Interaction,
    status: int,
    *,
    resource: str | None = None,
    query: str | None = None,
    patient: str | None = None,
    description: str | None = None,
    subtype: str | None = None,
) -> AuditFacts:
    ctx = _ctx()
    return AuditFacts(
        subtype=subtype or interaction.subtype,
        outcome=outcome_for_status(status),
        recorded=chain.now(),
        server=rq.base_url(),
        user=getattr(ctx, "fhir_user", None) or ctx.user,
        client_id=ctx.client_id,
        address=ctx.remote_addr or flask.request.remote_addr,
        resource=resource,
        query=query,
        patient=patient,
        description=description,
    )


def _raw_request(method: str | None = None, path: str | None = None, query: str | None = None) -> str:
    req = flask.request
    path = req.path if path is None else path
    query = req.query_string.decode("latin-1") if query is None else query
    return f"{method or req.method} {path}" + (f"?{query}" if query else "")


def _per_patient(base: AuditFacts, patients: tuple[str, ...]) -> list[AuditFacts]:
    if not patients:
        return [base]
    return [replace(base, patient=p) for p in patients]


# -- writes: inside the write's transaction ------------------------------------------------


def _write_facts(write: Write) -> list[AuditFacts]:
    """The events of one write, with the interaction its handler named (hook.Write)."""
    stored = write.stored
    resource = f"{stored.type}/{stored.id}/_history/{stored.version}"
    base = _facts(Interaction(write.interaction), 200, resource=resource)
    return _per_patient(base, write.patients)


def _provenance(inner: Any, writes: list[Write]) -> list[Write]:
    """Store an X-Provenance header as a Provenance targeting the versions just written."""
    header = flask.request.headers.get("X-Provenance")
    targets = [w.stored for w in writes if not w.stored.deleted and w.stored.type != "Provenance"]
    if not header or not targets:
        return []
    from server.audit.hook import _patients
    from server.fhir.writes import new_id
    from server.fhir.writes import prepare_write

    try:
        provenance = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"X-Provenance is not JSON: {exc}", message_id="MSG_PROVENANCE") from None
    if not isinstance(provenance, dict) or provenance.get("resourceType") != "Provenance":
        raise InvalidRequestError("X-Provenance must hold a Provenance resource", message_id="MSG_PROVENANCE")
    nul = nul_path(provenance)
    if nul is not None:
        raise InvalidRequestError(
            f"X-Provenance: {nul} contains a NUL character (U+0000), which no FHIR string may hold",
            expression=(nul,),
            message_id="MSG_PROVENANCE",
        )
    id_ = new_id()
    provenance = {
        **provenance,
        "id": id_,
        "target": [{"reference": f"{s.type}/{s.id}/_history/{s.version}"} for s in targets],
    }
    provenance.setdefault("recorded", chain.now().isoformat(timespec="milliseconds") + "Z")
    write = prepare_write("Provenance", provenance)
    stored = inner.create_resource("Provenance", write, id_)
    return [Write(stored, _patients("Provenance", id_, write), "create")]


def _on_commit(inner: Any, writes: list[Write]) -> None:
    """Record the writes' AuditEvents (and store any X-Provenance) before the transaction commits.

    SQLite: appended to the chain in this transaction. PostgreSQL: committed with the write in
    audit_pending, unlinked, so that writers do not hold the chain lock across their commits; the
    request links them right after the commit (in its group commit, `_audit_response`), before
    it answers. If the transaction rolls back the row is gone and nothing is linked.
    """
    writes = writes + _provenance(inner, writes)
    facts = [f for w in writes for f in _write_facts(w)]
    _note_written(writes)
    cfg = audit_settings()
    session = inner.session
    if session.get_bind().dialect.name != "postgresql":
        chain.append(session, facts, cfg.keyring, cfg.witness)
        return
    pending, row = chain.pending_row(facts, cfg.keyring)
    inner.queue_rows(_PENDING_TABLE, [row])  # sent with the write's rows, in its pipeline
    flask.g.setdefault(PENDING, []).append(pending)


# -- everything else: after the view, before the response is sent -------------------------


def _response_text(response: flask.Response) -> bytes | None:
    if response.is_streamed or not (response.mimetype or "").endswith("json"):
        return None
    return response.get_data()


def _request_facts(response: flask.Response) -> list[AuditFacts]:
    status = response.status_code
    parts = [urllib.parse.unquote(p) for p in flask.request.path.strip("/").split("/") if p]
    interaction = flask.g.get("fhir_interaction") or classify(flask.request.method, parts)
    repo = flask.g.get("repo")
    audited = getattr(repo, "audited", 0)
    if interaction.subtype in ("batch", "transaction"):
        return _bundle_facts(response, interaction)
    if interaction.is_write and status < 400 and audited:
        return []  # already in the write's transaction
    return _interaction_facts(
        interaction,
        status,
        _raw_request(),
        lambda: _response_text(response),
        response.headers.get("ETag"),
        response.headers.get("Location"),
    )


def _version_of(etag: str | None) -> str | None:
    return etag.strip().removeprefix("W/").strip('"') if etag else None


def _interaction_facts(
    interaction: Interaction, status: int, raw: str, body: Any, etag: str | None, location: str | None
) -> list[AuditFacts]:
    """The events of one request or bundle entry that was not a successful, audited write."""
    patients: tuple[str, ...] = ()
    resource = interaction.reference()
    if interaction.subtype in ("read", "vread") and status < 300 and interaction.version is None:
        resource = f"{resource}/_history/{_version_of(etag)}" if etag and resource else resource
    if location and "/_history/" in location and interaction.is_write:
        resource = "/".join(location.split("/")[-4:])
    if status < 300 and interaction.type != "AuditEvent":
        kind = interaction.type if interaction.subtype in ("read", "vread") else None
        patients = patients_of_text(body(), kind)
    if interaction.type == "Patient" and interaction.id and not patients:
        patients = (f"Patient/{interaction.id}",)
    query = raw if interaction.is_query or interaction.subtype == "operation" else None
    base = _facts(interaction, status, resource=resource, query=query)
    return _per_patient(base, patients)


def _capture_bundle() -> None:
    """Keep the raw body of POST / so each entry can be audited (the view reads it again)."""
    req = flask.request
    length = req.content_length
    if req.method != "POST" or req.path.strip("/") or not length or length > rq.settings().max_body_bytes:
        return
    raw = req.environ["wsgi.input"].read(length)
    req.environ["wsgi.input"] = io.BytesIO(raw)
    flask.g.audit_bundle = raw


def _entry_request(entry: Any) -> dict[str, Any]:
    """An entry's `request`, or {} when the entry or its request is not an object (refused with 400)."""
    request = entry.get("request") if isinstance(entry, dict) else None
    return request if isinstance(request, dict) else {}


def _entry_method(entry: Any) -> str:
    return str(_entry_request(entry).get("method", "")).upper()


def _entry_parts(entry: Any) -> tuple[list[str], str]:
    url = str(_entry_request(entry).get("url", ""))
    base = rq.base_url()
    if url.startswith(base + "/"):
        url = url[len(base) + 1 :]
    path, _, query = url.partition("?")
    return [p for p in path.split("/") if p], query


def _note_written(writes: list[Write]) -> None:
    """Remember the versions audited with their writes (a bundle's entries are matched to them)."""
    written = flask.g.setdefault("audit_written", [])
    written += [f"{w.stored.type}/{w.stored.id}/_history/{w.stored.version}" for w in writes]


def _entry_version(interaction: Interaction, meta: dict[str, Any]) -> str | None:
    """Type/id/_history/v an entry's response names (its Location, else its target and ETag)."""
    location = meta.get("location")
    if location and "/_history/" in location:
        return "/".join(str(location).split("/")[-4:])
    version = _version_of(meta.get("etag"))
    target = interaction.reference()
    return f"{target}/_history/{version}" if target and version and interaction.id else None


def _bundle_facts(response: flask.Response, ran: Interaction) -> list[AuditFacts]:
    """One event per entry, with the interaction it ran (the bundle's response names each).

    An entry whose write was audited in its transaction is left out: it is the entry whose
    answer names a version written in this request (each version once: a conditional create
    that found a version written by an earlier batch entry is still audited here).
    """
    status = response.status_code
    try:
        request = orjson.loads(flask.g.get("audit_bundle") or b"{}")
        answer = orjson.loads(response.get_data()) if status < 400 else {}
    except orjson.JSONDecodeError:
        request, answer = {}, {}
    if status >= 400 or not isinstance(request, dict):  # the bundle did not run: one event for it
        kind = request.get("type") if isinstance(request, dict) else None
        subtype = kind if kind in ("batch", "transaction") else ran.subtype
        return [_facts(Interaction(subtype), status, query=_raw_request())]
    written = list(flask.g.get("audit_written", ()))
    facts: list[AuditFacts] = []
    answers = answer.get("entry") or []
    for index, entry in enumerate(request.get("entry") or []):
        method = _entry_method(entry)
        parts, query = _entry_parts(entry)
        reply = answers[index] if index < len(answers) and isinstance(answers[index], dict) else {}
        meta = reply.get("response") or {}
        code = int(str(meta.get("status", "500")).split()[0] or 500)
        named = ran.entries[index] if index < len(ran.entries) else None
        interaction = named or classify(method, parts)  # None: the entry named no interaction
        version = _entry_version(interaction, meta) if interaction.is_write and code < 400 else None
        if version in written:
            written.remove(version)
            continue
        resource = reply.get("resource")
        text = orjson.dumps(resource) if resource is not None else None
        facts += _interaction_facts(
            interaction,
            code,
            f"{method} /{'/'.join(parts)}" + (f"?{query}" if query else ""),
            lambda t=text: t,
            meta.get("etag"),
            meta.get("location"),
        )
    return facts


# Blueprints outside FHIR's URL space whose requests touch clinical data or its exports.
_OTHER = ("bulk", "rehab")
# /rehab views of one patient's data: their events name the patient.
_PATIENT_VIEWS = frozenset({"rehab.get_progress", "rehab.get_measures_csv"})
# flask.g: the patient whose data a /rehab request read by another id (an episode, a goal), once read.
REHAB_PATIENT = "audit_rehab_patient"
_UNAUDITED = ("fhir.metadata", "rehab.get_catalog")  # public, patient-free documents


def name_patient(reference: Any) -> None:
    """Name the patient a /rehab request read data of (its event carries it, answered or refused after)."""
    if isinstance(reference, str) and reference.startswith("Patient/"):
        setattr(flask.g, REHAB_PATIENT, reference)


def _other_facts(response: flask.Response) -> list[AuditFacts]:
    """One event for a /rehab or bulk request (export status, cancel, file download), or a denial.

    A /rehab write that succeeded was audited in its transaction, entry by entry, like FHIR.
    The progress view and the CSV name the patient of their URL; a request about an episode or a goal
    names the patient it read (`name_patient`), so a refusal before that read names nobody. Bulk
    files are audited per download, one event each.
    """
    status = response.status_code
    if getattr(flask.g.get("repo"), "audited", 0) and status < 400:
        return []
    args = flask.request.view_args or {}
    if flask.request.endpoint in _PATIENT_VIEWS:
        patient = f"Patient/{args['id_']}"
    else:
        patient = flask.g.get(REHAB_PATIENT)
    # The query (method and path) says which: a file download, a status poll, a cancel, a view.
    facts = _facts(Interaction("operation"), status, query=_raw_request(), patient=patient)
    action = {"bulk.download": "R", "bulk.cancel": "D"}.get(str(flask.request.endpoint), "E")
    return [replace(facts, action=action)]


def _append(facts: list[Any]) -> None:
    """Commit the events of a request (group commit with concurrent requests).

    Its items are AuditFacts (reads, failures…) and chain.Pending (its committed writes' records).
    """
    flask.current_app.extensions[BATCHER].write(facts, expected=flask.g.pop(EXPECTED, False))


def _link_pending(response: flask.Response) -> flask.Response:
    """Link the records of the writes this request committed (PostgreSQL), before it answers.

    They are already committed with the writes (audit_pending), so the access is on record even
    if linking fails now: the response stands, and the head timer links them later.
    """
    pending = flask.g.pop(PENDING, None)
    if not pending:
        return response
    try:
        _append(pending)
    except Exception:
        log.exception("audit records of %d committed write(s) not linked yet (the timer will)", len(pending))
    return response


def _expect() -> None:
    """Announce the request to the group commit: a leader may wait briefly for its events."""
    flask.current_app.extensions[BATCHER].expect()
    flask.g.setdefault(EXPECTED, True)


def _unexpect(*_: Any) -> None:
    """The request queues no (more) events for the group commit."""
    if flask.g.pop(EXPECTED, False):
        flask.current_app.extensions[BATCHER].unexpect()


def _audited(request: flask.Request) -> bool:
    """Whether `_audit_response` writes events for the request (auth events: `_audit_auth`)."""
    return request.blueprint in ("fhir", *_OTHER) and request.endpoint not in _UNAUDITED


def _audit_response(response: flask.Response) -> flask.Response:
    if not _audited(flask.request):
        return _link_pending(response)
    blueprint = flask.request.blueprint
    try:
        facts = _request_facts(response) if blueprint not in _OTHER else _other_facts(response)
        if facts:
            _append([*facts, *flask.g.pop(PENDING, ())])
        else:  # nothing to queue (a write audited in its transaction)
            _unexpect()
        response = _link_pending(response)
    except Exception as exc:
        log.exception("audit write failed: refusing the response (fail closed)")
        if is_connection_lost(exc):  # the database is gone: no response still, but say retry (503)
            err = unavailable()
            return to_flask(FhirResponse(err.status, to_operation_outcome(err), dict(err.headers)))
        outcome = operation_outcome([issue("fatal", "exception", "The audit record could not be written")])
        return to_flask(FhirResponse(500, outcome))
    return response


def _audit_auth(response: flask.Response) -> flask.Response:
    """Record the sign-in or token event an auth view noted (fail closed: 500 if it cannot be written)."""
    event = flask.g.pop("auth_event", None)
    if event is None:
        return response
    try:
        facts = auth_facts(
            event.kind,
            0 if event.ok else outcome_for_status(response.status_code),
            server=rq.base_url(),
            recorded=chain.now(),
            user=event.user,
            client_id=event.client_id,
            address=flask.request.remote_addr,
            detail=event.detail,
        )
        _append([facts])
    except Exception:
        log.exception("audit write failed: refusing the %s response (fail closed)", event.kind)
        body = {"error": "server_error", "error_description": "The audit record could not be written"}
        headers = {"Cache-Control": "no-store"}
        return flask.Response(orjson.dumps(body), 500, mimetype="application/json", headers=headers)
    return response


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the audit hooks, and the handlers of the AuditEvent routes (they are in the route table)."""
    cfg = AuditSettings.from_settings(settings)
    app.extensions[EXTENSION] = cfg
    from server.audit import routes  # noqa: F401  (provides the handlers of the audit_* routes)

    if not cfg.enabled:
        log.warning("REHABFHIR_AUDIT=off: the audit trail is NOT written (benchmarks only)")
        return
    from server.audit.appender import DirectAppender
    from server.audit.batching import GroupCommit

    cfg = replace(cfg, witness=Witness(cfg.witness_path, cfg.witness_max_bytes, cfg.head_sink))
    app.extensions[EXTENSION] = cfg
    appender = DirectAppender(app.extensions["rehabfhir.engine"])

    def _write_group(target: DirectAppender, facts: list[Any]) -> int:
        store.write_events(target, facts, cfg.keyring, cfg.witness)
        return target.ticket  # read by the leader before it hands leadership on

    batcher = app.extensions[BATCHER] = GroupCommit(_write_group, lambda: appender, cfg.witness.sync)
    sessions = app.extensions["rehabfhir.sessions"]
    if cfg.head_interval > 0:
        sweep = None
        if appender.engine.dialect.name == "postgresql":

            def sweep() -> int:
                return store.link_left_pending(sessions, batcher, cfg.keyring, PENDING_AGE)

        timer = HeadTimer(cfg.witness, sessions, cfg.head_interval, sweep)
        app.extensions[HEAD_TIMER] = timer.start()

    @app.before_request
    def _wrap_repository() -> None:
        repo = flask.g.get("repo")
        if repo is not None and not isinstance(repo, AuditedRepository):
            audited = AuditedRepository(repo, _on_commit)
            audited.verify_audit = _verify  # type: ignore[attr-defined]
            flask.g.repo = audited
        _capture_bundle()
        if _audited(flask.request):  # only requests that queue events here keep a leader waiting
            _expect()

    app.after_request(_audit_response)
    app.after_request(_audit_auth)
    app.teardown_request(_unexpect)


def _verify() -> dict[str, Any]:
    """Verify on a session of its own, opened after the witness is read.

    The request's session may already hold a read snapshot (SQLite keeps the one of the
    transaction's first read) taken before heads that the witness now has: the database
    would then look behind the witness ("witness ahead") though nothing is wrong.
    """
    from server.audit.verify import verify

    cfg = audit_settings()
    heads = read_heads(cfg.witness_path)
    session = flask.current_app.extensions["rehabfhir.sessions"]()
    try:
        return verify(session, cfg.keyring, heads, cfg.grace).as_dict()
    finally:
        session.close()


def forbid_writes() -> None:
    """AuditEvent is written by the server only."""
    raise MethodNotAllowedError(APPEND_ONLY, headers={"Allow": "GET, POST"})


def require_auditor(ctx: AccessContext, interaction: str) -> None:
    """403 unless the token may read AuditEvent (auditor, or a patient reading their own)."""
    if not ctx.can("AuditEvent", interaction):
        raise ForbiddenError(
            "Reading the audit trail needs an auditor scope (AuditEvent.rs)", message_id="MSG_FORBIDDEN"
        )


def not_found(id_: str) -> NotFoundError:
    """404 for an unknown (or invisible) AuditEvent."""
    return NotFoundError(f"AuditEvent/{id_} is not known", message_id="MSG_NO_EXIST")
