"""Verify the audit chain: "intact", or the first broken record and why.

Detects a changed byte (hash mismatch), a deleted, inserted or reordered record (prev_hash
mismatch) and a cut tail (a signed checkpoint naming a record that is gone or different).
"""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.audit.chain import GENESIS
from server.audit.chain import record_hash
from server.audit.chain import sign
from server.audit.models import AuditCheckpoint
from server.audit.models import AuditRecord

_E = AuditRecord.__table__
_C = AuditCheckpoint.__table__
_FIELDS = (
    "recorded",
    "actor",
    "client",
    "patient",
    "action",
    "outcome",
    "type",
    "subtype",
    "resource",
    "query",
    "body",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of a verification."""

    intact: bool
    checked: int
    checkpoints: int
    head: str
    record: int | None = None  # pk of the first broken record (or of the missing one)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it; $verify returns it as Parameters)."""
        out: dict[str, Any] = {
            "result": "intact" if self.intact else "broken",
            "checked": self.checked,
            "checkpoints": self.checkpoints,
            "head": self.head,
        }
        if not self.intact:
            out["record"] = self.record
            out["reason"] = self.reason
        return out


def verify(session: so.Session, key: bytes) -> Verdict:
    """Recompute the chain from genesis and check every signed checkpoint."""
    checkpoints = {}
    for cp in session.execute(sa.select(_C).order_by(_C.c.pk)):
        if not hmac.compare_digest(cp.signature, sign(key, cp.event_pk, cp.head_hash)):
            return Verdict(
                False,
                0,
                len(checkpoints),
                GENESIS,
                cp.event_pk,
                f"checkpoint {cp.pk} has an invalid signature",
            )
        checkpoints[cp.event_pk] = cp.head_hash
    rows = session.execute(sa.select(_E).order_by(_E.c.pk).execution_options(yield_per=1000))
    with contextlib.closing(rows):  # an early verdict must not leave the server-side cursor open
        return _walk(rows, checkpoints)


def _fault(row: Any, prev: str, signed: str | None) -> str | None:
    """Why a record breaks the chain, or None."""
    if row.prev_hash != prev:
        return "prev_hash does not match the preceding record (a record was deleted, inserted or moved)"
    if record_hash(row.prev_hash, {f: getattr(row, f) for f in _FIELDS}) != row.hash:
        return "the record's content does not match its hash (altered)"
    if signed is not None and signed != row.hash:
        return "the record differs from the signed checkpoint of its position"
    return None


def _walk(rows: Any, checkpoints: dict[int, str]) -> Verdict:
    prev, checked, last_pk = GENESIS, 0, 0
    for row in rows:
        reason = _fault(row, prev, checkpoints.get(row.pk))
        if reason is not None:
            return Verdict(False, checked, len(checkpoints), prev, row.pk, reason)
        prev, last_pk, checked = row.hash, row.pk, checked + 1
    missing = [pk for pk in checkpoints if pk > last_pk]
    if missing:
        reason = f"a signed checkpoint names record {min(missing)}, which is gone (the tail was cut)"
        return Verdict(False, checked, len(checkpoints), prev, min(missing), reason)
    return Verdict(True, checked, len(checkpoints), prev)
