"""SQL over the audit tables: append events, search AuditEvent by its columns, export a range.

AuditEvent search is its own small query on audit_event (not the idx_* tables), so audit
data never enters the clinical search indexes. https://hl7.org/fhir/R4B/auditevent.html#search
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.audit import chain
from server.audit.events import AuditFacts
from server.audit.events import chain_pk
from server.audit.models import AuditPending
from server.audit.models import AuditRecord
from server.audit.witness import PUBLISH_ERROR
from server.errors import InvalidRequestError
from server.fhir.search.dates import parse_date_range
from server.store.session import start_write

log = logging.getLogger("rehabfhir.audit")
_E = AuditRecord.__table__
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
SORTS = {
    "date": _E.c.recorded,
    "agent": _E.c.actor,
    "entity": _E.c.resource,
    "patient": _E.c.patient,
    "type": _E.c.type,
    "subtype": _E.c.subtype,
    "action": _E.c.action,
    "outcome": _E.c.outcome,
    "source": _E.c.pk,
    "_id": _E.c.pk,
}
PARAMS = frozenset(SORTS) | {"address", "client"}


def write_events(
    session: so.Session | Any, facts: Sequence[AuditFacts], keyring: chain.Keyring, witness: Any = None
) -> None:
    """Append events in a transaction of their own (reads, failures): commit and witness, or raise.

    On a Session the head is fsync'd to the witness before this returns. On an
    appender.DirectAppender (the group commit) it is written but not yet fsync'd: the caller
    makes it durable with witness.sync(appender.ticket) (batching.py).
    """
    if not isinstance(session, so.Session):
        chain.append(session, facts, keyring, witness)
        return
    start_write(session)  # ends or carries on a read's implicit transaction
    try:
        chain.append(session, facts, keyring, witness)
        session.commit()  # witness.py's after-commit hook appends the signed head to the witness
    except BaseException:
        session.rollback()
        raise
    error = session.info.pop(PUBLISH_ERROR, None)
    if error is not None:
        raise error  # committed but not anchored: fail closed (the timer republishes the head)


_P = AuditPending.__table__
_FORGED: set[int] = set()  # pending rows without a valid MAC this process has logged


def link_left_pending(sessions: Any, batcher: Any, keyring: chain.Keyring, older_than: float) -> int:
    """Link the pending write records older than `older_than` seconds (left by a crash); return how many rows.

    Only rows whose MAC is right under a key of the ring are linked; any other row was not
    written by this server and is left where it is, with an error in the log. A row whose records
    are in the chain already (a copy of a row linked before, put back) is deleted, not linked again.
    """
    cutoff = chain.now() - timedelta(seconds=older_than)
    session = sessions()
    try:
        left = sa.select(_P).where(_P.c.created < cutoff).order_by(_P.c.pk)
        rows = session.execute(left).all()
        good: list[chain.Pending] = []
        for row in rows:
            pending = chain.pending_of_row(row, keyring)
            if pending is None:
                if row.pk in _FORGED:
                    continue  # said once per process; verify names it every time (pending-forged)
                _FORGED.add(row.pk)
                log.error("audit_pending row %s: no valid MAC (not written here), not linked", row.pk)
            elif _already_linked(session, pending):
                # Said only if this process removed it: another host's sweep may have just linked
                # (and removed) the same row, which is no repeat.
                gone = session.execute(sa.delete(_P).where(_P.c.pk == row.pk).returning(_P.c.pk)).first()
                session.commit()
                if gone is not None:
                    log.error("audit_pending row %s repeats records in the chain: removed", row.pk)
            else:
                good.append(pending)
    finally:
        session.close()
    for start in range(0, len(good), 500):  # groups of a bounded size
        batcher.write(good[start : start + 500])
    return len(good)


def _already_linked(session: so.Session, pending: chain.Pending) -> bool:
    first = pending.records[0]
    found = session.execute(
        sa.select(_E.c.pk)
        .where(
            _E.c.resource == first["resource"],
            _E.c.recorded == first["recorded"],
            _E.c.action == first["action"],
            _E.c.body == first["body"],
        )
        .limit(1)
    ).first()
    return found is not None


def pending_backlog(session: so.Session) -> tuple[int, datetime | None]:
    """How many committed writes wait in audit_pending to be linked, and when the oldest was written.

    PostgreSQL only: on SQLite writes link in their own transaction, so the table stays empty.
    """
    count, oldest = session.execute(sa.select(sa.func.count(), sa.func.min(_P.c.created))).one()
    return int(count), oldest


def served_body(pk: int, recorded: datetime, body: str) -> str:
    """The stored AuditEvent JSON with its id and meta spliced in."""
    from server.audit.events import instant

    head = '{"resourceType":"AuditEvent",'
    meta = f'"id":"{pk}","meta":{{"versionId":"1","lastUpdated":"{instant(recorded)}"}},'
    return head + meta + body[len(head) :]


def _date_clause(value: str) -> Any:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    low, high = parse_date_range(value[2:] if value[:2] in _PREFIXES else value)
    col = _E.c.recorded
    return {
        "eq": sa.and_(col >= low, col < high),
        "ne": sa.or_(col < low, col >= high),
        "gt": col >= high,
        "sa": col >= high,
        "lt": col < low,
        "eb": col < low,
        "ge": col >= low,
        "le": col < high,
    }[prefix]


def _code(value: str) -> str:
    return value.rsplit("|", 1)[-1]


def _patient(value: str) -> str:
    return value if "/" in value else f"Patient/{value}"


def _clause(name: str, value: str, server: str) -> Any:
    if name == "date":
        return _date_clause(value)
    alternatives = []
    for v in value.split(","):
        if name == "agent":
            alternatives.append(sa.or_(_E.c.actor == v, _E.c.client == v))
        elif name == "entity":
            alternatives.append(
                sa.or_(
                    _E.c.resource == v,
                    _E.c.resource.like(
                        v.replace("%", r"\%").replace("_", r"\_") + "/\\_history/%", escape="\\"
                    ),
                )
            )
        elif name == "patient":
            alternatives.append(_E.c.patient == _patient(v))
        elif name in ("type", "subtype", "action"):
            alternatives.append(getattr(_E.c, name) == _code(v))
        elif name == "outcome":
            if _code(v) not in ("0", "4", "8", "12"):
                raise InvalidRequestError(f"outcome {v!r}: expected 0, 4, 8 or 12")
            alternatives.append(_E.c.outcome == int(_code(v)))
        elif name == "source":
            alternatives.append(sa.true() if _code(v) in (server, "rehabfhir") else sa.false())
        elif name == "_id":
            alternatives.append(_E.c.pk == (chain_pk(v) or -1))
    return sa.or_(*alternatives)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A parsed AuditEvent search."""

    params: tuple[tuple[str, str], ...]
    sort: tuple[tuple[str, bool], ...]  # (param, descending)
    count: int
    offset: int
    patient: str | None = None  # restrict to one patient's record (patient-scoped tokens)


def _statement(query: AuditQuery, server: str) -> sa.Select[Any]:
    stmt = sa.select(_E.c.pk, _E.c.recorded, _E.c.body)
    for name, value in query.params:
        stmt = stmt.where(_clause(name, value, server))
    if query.patient is not None:
        stmt = stmt.where(_E.c.patient == _patient(query.patient))
    return stmt


def search(session: so.Session, query: AuditQuery, server: str) -> tuple[list[Any], int]:
    """Return one page of (pk, recorded, body) rows and the total number of matches."""
    stmt = _statement(query, server)
    total = session.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
    order = [SORTS[name].desc() if desc else SORTS[name].asc() for name, desc in query.sort]
    order.append(_E.c.pk.desc() if not query.sort or query.sort[0][1] else _E.c.pk.asc())
    rows = session.execute(stmt.order_by(*order).limit(query.count).offset(query.offset)).all()
    return list(rows), total


def read(session: so.Session, pk: int, patient: str | None) -> Any:
    """Return one (pk, recorded, body) row, or None (also when it is another patient's)."""
    stmt = sa.select(_E.c.pk, _E.c.recorded, _E.c.body).where(_E.c.pk == pk)
    if patient is not None:
        stmt = stmt.where(_E.c.patient == _patient(patient))
    return session.execute(stmt).one_or_none()


def export_statement(query: AuditQuery, server: str) -> Any:
    """The statement of an NDJSON export, oldest first; raises 400 for a bad filter (before any output)."""
    return _statement(query, server).order_by(_E.c.pk).execution_options(yield_per=1000)


def export(session: so.Session, stmt: Any) -> Iterator[str]:
    """Yield the events `export_statement` selects as NDJSON lines."""
    for row in session.execute(stmt):
        yield served_body(row.pk, row.recorded, row.body) + "\n"
