"""The SHA-256 hash chain over audit records and its HMAC-signed checkpoints.

Each record stores hash = SHA-256(canonical(prev_hash, columns, body)); the first record's
prev_hash is 64 zeros. Appends are serialised (PostgreSQL: a transaction-scoped advisory
lock taken in the writing transaction; SQLite: BEGIN IMMEDIATE), so concurrent writers
produce one linear chain in primary-key order. Every `checkpoint_every` records the head
is signed with HMAC-SHA256 (see signing_key), which makes a cut tail detectable.
Schneier & Kelsey 1999; https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import orm as so

from server.audit.events import AuditFacts
from server.audit.events import audit_event
from server.audit.events import instant
from server.audit.models import AuditCheckpoint
from server.audit.models import AuditRecord

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain head ("rehaaudt").
CHAIN_LOCK = 0x7265686161756474
_E = AuditRecord.__table__
_C = AuditCheckpoint.__table__
_HEAD = sa.select(_E.c.pk, _E.c.hash).order_by(_E.c.pk.desc()).limit(1)


def now() -> datetime:
    """Naive UTC with millisecond precision (what the record shows is what is hashed)."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def columns(facts: AuditFacts) -> dict[str, Any]:
    """The searchable columns and JSON body of one record (no chain fields)."""
    return {
        "recorded": facts.recorded,
        "actor": facts.user,
        "client": facts.client_id or "anonymous",
        "patient": facts.patient,
        "action": facts.action_code,
        "outcome": facts.outcome,
        "type": facts.event_type[1],
        "subtype": facts.subtype,
        "resource": facts.resource,
        "query": facts.query,
        "body": orjson.dumps(audit_event(facts)).decode(),
    }


def canonical(prev_hash: str, cols: dict[str, Any]) -> bytes:
    """The exact bytes hashed: a JSON array in fixed order, the instant in UTC milliseconds."""
    return orjson.dumps(
        [
            prev_hash,
            instant(cols["recorded"]),
            cols["actor"],
            cols["client"],
            cols["patient"],
            cols["action"],
            int(cols["outcome"]),
            cols["type"],
            cols["subtype"],
            cols["resource"],
            cols["query"],
            cols["body"],
        ]
    )


def record_hash(prev_hash: str, cols: dict[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical form."""
    return hashlib.sha256(canonical(prev_hash, cols)).hexdigest()


def sign(key: bytes, event_pk: int, head_hash: str) -> str:
    """HMAC-SHA256 (hex) of a checkpoint."""
    return hmac.new(key, f"{event_pk}:{head_hash}".encode(), hashlib.sha256).hexdigest()


_INSERT = sa.insert(_E).returning(_E.c.pk)
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")


def lock_head(session: so.Session) -> tuple[int | None, str]:
    """Serialise chain writers until commit; return the current head (pk, hash)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"k": CHAIN_LOCK})
    row = conn.execute(_HEAD).one_or_none()
    return (None, GENESIS) if row is None else (row.pk, row.hash)


def due(head_pk: int | None, first_pk: int, last_pk: int, every: int) -> bool:
    """Whether an append of first_pk..last_pk signs the head: the chain's first record, and then
    each time the pks cross a multiple of `every` (no query for the last checkpoint; a gap in
    the key sequence can at most delay a checkpoint to the next multiple)."""
    return head_pk is None or last_pk // every > (first_pk - 1) // every


def append(session: so.Session, facts: Sequence[AuditFacts], key: bytes, checkpoint_every: int) -> list[int]:
    """Append records to the chain inside the caller's write transaction; return their pks.

    Runs on the session's connection with prebuilt statements: this is on every request's path.
    """
    if not facts:
        return []
    head_pk, prev = lock_head(session)
    conn = session.connection()
    pks = []
    for fact in facts:
        cols = columns(fact)
        digest = record_hash(prev, cols)
        cols["prev_hash"], cols["hash"] = prev, digest
        pks.append(conn.execute(_INSERT, cols).scalar_one())
        prev = digest
    if due(head_pk, pks[0], pks[-1], checkpoint_every):
        _insert_checkpoint(session, key, pks[-1], prev)
    return pks


def _insert_checkpoint(session: so.Session, key: bytes, event_pk: int, head_hash: str) -> None:
    session.execute(
        sa.insert(_C).values(
            created=now(), event_pk=event_pk, head_hash=head_hash, signature=sign(key, event_pk, head_hash)
        )
    )


def checkpoint(session: so.Session, key: bytes) -> tuple[int, str] | None:
    """Sign the current head now (inside the caller's write transaction); return it, None if empty."""
    pk, head = lock_head(session)
    if pk is None:
        return None
    last = session.execute(sa.select(sa.func.max(_C.c.event_pk))).scalar()
    if last != pk:
        _insert_checkpoint(session, key, pk, head)
    return pk, head
