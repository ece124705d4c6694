"""Writes' audit records on PostgreSQL: committed with the write (audit_pending), linked right after.

A write's records commit in its own transaction, unlinked, so writers do not hold the chain lock
across their commits; the request links them in its group commit before it answers. If that
fails (or the process dies first) the records are still on record, and the head timer links them
later: only rows with a valid MAC, each once. SQLite links a write's records in its transaction
(its write lock serialises writers anyway), so audit_pending stays empty there.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from server.audit import chain
from server.audit import store
from server.audit.appender import DirectAppender
from server.audit.flask_integration import BATCHER
from server.audit.flask_integration import audit_settings
from server.audit.verify import verify
from tests.conftest import FhirClient
from tests.conftest import as_owner


def _engine(app: Any) -> sa.Engine:
    return app.extensions["rehabfhir.engine"]  # type: ignore[no-any-return]


def _rows(app: Any, sql: str) -> list[Any]:
    with _engine(app).connect() as conn:
        return list(conn.execute(sa.text(sql)))


def _records_of(app: Any, resource: str) -> list[Any]:
    with _engine(app).connect() as conn:
        q = sa.text("SELECT pk, subtype FROM audit_event WHERE resource = :r ORDER BY pk")
        return list(conn.execute(q, {"r": resource}))


def _verify(app: Any) -> Any:
    cfg = audit_settings_of(app)
    session = app.extensions["rehabfhir.sessions"]()
    try:
        return verify(session, cfg.keyring, [], cfg.grace)
    finally:
        session.close()


def audit_settings_of(app: Any) -> Any:
    with app.app_context():
        return audit_settings()


def _sweep(app: Any) -> int:
    cfg = audit_settings_of(app)
    return store.link_left_pending(
        app.extensions["rehabfhir.sessions"], app.extensions[BATCHER], cfg.keyring, 0
    )


def _postgres_only(app: Any) -> bool:
    return _engine(app).dialect.name == "postgresql"


def test_a_write_is_linked_before_it_is_answered(fhir: FhirClient, app: Any) -> None:
    p = fhir.create({"resourceType": "Patient", "name": [{"family": "Linked"}]})
    assert _rows(app, "SELECT pk FROM audit_pending") == []  # linked (PostgreSQL) or never pending (SQLite)
    (record,) = _records_of(app, f"Patient/{p['id']}/_history/1")
    assert record.subtype == "create"
    report = _verify(app)
    assert report.intact, report.as_dict()


def test_records_a_failed_link_left_are_linked_later(
    fhir: FhirClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = DirectAppender.append

    def no_pending(self: Any, facts: Any, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(f, chain.Pending) for f in facts):
            raise RuntimeError("lost the connection after the write's commit")
        return plain(self, facts, *args, **kwargs)

    monkeypatch.setattr(DirectAppender, "append", no_pending)
    r = fhir.call("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "Later"}]})
    assert r.status_code == 201  # the write and its records are committed: the answer stands
    resource = f"Patient/{r.get_json()['id']}/_history/1"
    monkeypatch.undo()
    if not _postgres_only(app):  # SQLite linked it in the write's transaction
        assert len(_records_of(app, resource)) == 1 and _sweep(app) == 0
        return
    assert len(_rows(app, "SELECT pk FROM audit_pending")) == 1
    assert _records_of(app, resource) == []
    waiting = _verify(app)
    assert waiting.intact and waiting.as_dict()["pending"] == 1
    assert _sweep(app) == 1
    assert _rows(app, "SELECT pk FROM audit_pending") == []
    assert [r.subtype for r in _records_of(app, resource)] == ["create"]
    assert _sweep(app) == 0
    report = _verify(app)
    assert report.intact, report.as_dict()


def test_a_forged_or_replayed_pending_row_is_never_linked(fhir: FhirClient, app: Any) -> None:
    if not _postgres_only(app):
        fhir.create({"resourceType": "Patient"})
        assert _rows(app, "SELECT pk FROM audit_pending") == []
        return
    p = fhir.create({"resourceType": "Patient"})
    cfg = audit_settings_of(app)
    (linked,) = _records_of(app, f"Patient/{p['id']}/_history/1")
    # A copy of the row that was linked, put back: its MAC is right (it was the server's own row).
    facts = [_facts_like(app, linked.pk)]
    _pending, row = chain.pending_row(facts, cfg.keyring)
    forged = {**row, "pk": row["pk"] + 1, "mac": "0" * 64}  # without the key: no valid MAC
    with as_owner(_engine(app)) as conn:
        conn.execute(
            sa.text("INSERT INTO audit_pending VALUES (:pk, :created, :records, :mac, :key_id)"), row
        )
        conn.execute(
            sa.text("INSERT INTO audit_pending VALUES (:pk, :created, :records, :mac, :key_id)"), forged
        )
    before = _rows(app, "SELECT count(*) FROM audit_event")[0][0]
    assert _sweep(app) == 0
    assert _rows(app, "SELECT count(*) FROM audit_event")[0][0] == before  # nothing added
    assert [r.pk for r in _rows(app, "SELECT pk FROM audit_pending")] == [forged["pk"]]  # the replay removed
    report = _verify(app)
    assert not report.intact and report.kind == "pending-forged" and report.pending == 1
    assert report.record == report.seq + 1 and str(forged["pk"]) in (report.reason or "")


def _facts_like(app: Any, pk: int) -> dict[str, Any]:
    """The columns of record `pk`, as chain.pending_row takes them (a replay of a linked write)."""
    with _engine(app).connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM audit_event WHERE pk = :pk"), {"pk": pk}).one()
    names = ("recorded", "actor", "client", "patient", "action", "outcome", "type", "subtype")
    return {n: getattr(row, n) for n in (*names, "resource", "query", "body")}


def test_a_conditional_create_is_audited_in_its_own_transaction(
    fhir: FhirClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST with If-None-Exist that creates: its record commits with the write, like a plain create.
    It was audited only after the commit, by the request, so an audit append failing then (here:
    every append) left a stored resource without a record and answered 500."""

    def broken(self: Any, facts: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the audit connection is gone")

    monkeypatch.setattr(DirectAppender, "append", broken)
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "cc-1"}]}
    r = fhir.call("POST", "/Patient", body, headers={"If-None-Exist": "identifier=urn:x|cc-1"})
    assert r.status_code == 201, r.get_data(as_text=True)
    resource = f"Patient/{r.get_json()['id']}/_history/1"
    monkeypatch.undo()
    if _postgres_only(app):
        assert len(_rows(app, "SELECT pk FROM audit_pending")) == 1 and _sweep(app) == 1
    assert [r.subtype for r in _records_of(app, resource)] == ["create"]
    report = _verify(app)
    assert report.intact, report.as_dict()
