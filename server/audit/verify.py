"""Verify the audit trail: "intact", or the first problem, its sequence number and its kind.

Walks the database (records and signed heads) together with the witness (signed heads kept
outside the database, and any head given on the command line). Kinds:

changed              a record's content or link does not match its key (or a signed head)
missing              a sequence number is gone (or a record's predecessor is)
reordered            a record sits at another position than the one it was linked at
tail-cut             a signed head in the database names a record that is gone
truncated            the database holds no records, yet signed heads name some
checkpoint-missing   the last record, or a witnessed head, has no signed head in the database
checkpoint-unsigned  a signed head (database or witness) has a wrong signature
unknown-key          a record or head names a key id this server does not hold
witness-ahead        the witness signed a head past the end of the database
witness-behind       the database has signed heads the witness never saw, over more than the
                     grace period (an older copy of the witness, or lost lines)
pending-forged       a row waiting in audit_pending (a write's records, PostgreSQL) has no valid
                     MAC: someone without the key put it there; it is never linked

`pending` counts the committed writes whose records are not linked yet (normally none: a
request links its own before it answers; after a crash, until the head timer links them).

The witness is read first and the database afterwards, so a group that commits meanwhile cannot
look like a witness ahead of the database.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.audit.chain import GENESIS
from server.audit.chain import Head
from server.audit.chain import Keyring
from server.audit.chain import head_signature
from server.audit.chain import legacy_signature
from server.audit.chain import link
from server.audit.chain import pending_of_row
from server.audit.chain import record_hash
from server.audit.events import instant
from server.audit.models import AuditCheckpoint
from server.audit.models import AuditPending
from server.audit.models import AuditRecord

_E = AuditRecord.__table__
_C = AuditCheckpoint.__table__
_P = AuditPending.__table__
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
)
_FIELDS += ("body",)
_NEAR = 64  # how far from its position verify looks for where a moved record belongs


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of a verification."""

    intact: bool
    checked: int
    checkpoints: int
    head: str
    seq: int = 0  # sequence number of the last record checked
    witnessed: int | None = None  # signed heads read from the witness (None: no witness given)
    pending: int = 0  # committed writes whose records are not linked yet (PostgreSQL, audit_pending)
    record: int | None = None  # sequence number of the first problem
    kind: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it; $verify returns it as Parameters)."""
        out: dict[str, Any] = {
            "result": "intact" if self.intact else "broken",
            "checked": self.checked,
            "checkpoints": self.checkpoints,
            "head": self.head,
            "seq": self.seq,
        }
        if self.witnessed is not None:
            out["witnessed"] = self.witnessed
        if self.pending:
            out["pending"] = self.pending
        if not self.intact:
            out.update(record=self.record, kind=self.kind, reason=self.reason)
        return out


@dataclass(frozen=True, slots=True)
class _Problem:
    seq: int
    kind: str
    reason: str


def verify(
    session: so.Session, keyring: Keyring, witness: Iterable[Head] | None = None, grace: float = 25.0
) -> Verdict:
    """Recompute every link, check every signed head, and compare them with the witness."""
    heads = None if witness is None else list(witness)  # before the database: see the module doc
    problems: list[_Problem] = []
    witnessed: dict[int, str] = {}
    for h in heads or ():
        if h.seq <= 0:
            problems.append(
                _Problem(0, "checkpoint-unsigned", "the witness holds a line that is not a signed head")
            )
        elif h.kid not in keyring.keys:
            problems.append(
                _Problem(h.seq, "unknown-key", f"a witness head is signed with unknown key {h.kid}")
            )
        elif not h.valid(keyring):
            problems.append(
                _Problem(h.seq, "checkpoint-unsigned", f"the witness head {h.seq} is not validly signed")
            )
        elif witnessed.setdefault(h.seq, h.link) != h.link:
            problems.append(_Problem(h.seq, "changed", f"the witness holds two different links for {h.seq}"))
    signed = _checkpoints(session, keyring, problems)
    walk = _Walk(session, keyring, signed, witnessed)
    rows = session.execute(sa.select(_E).order_by(_E.c.pk).execution_options(yield_per=1000))
    with contextlib.closing(rows):  # an early verdict must not leave the server-side cursor open
        complete = walk.run(rows, min((p.seq for p in problems), default=None))
    problems += walk.problems
    if complete:
        problems += _ends(session, keyring, walk, signed, witnessed, heads, grace)
    pending = _pending(session, keyring, walk.seq, problems)
    verdict = Verdict(
        True, walk.checked, len(signed), walk.prev, walk.seq, None if heads is None else len(heads), pending
    )
    if not problems:
        return verdict
    first = min(problems, key=lambda p: p.seq)
    return replace(verdict, intact=False, record=first.seq, kind=first.kind, reason=first.reason)


def _pending(session: so.Session, keyring: Keyring, last: int, problems: list[_Problem]) -> int:
    """How many committed writes wait to be linked; a pending row without a valid MAC is a problem.

    Such a row was not written by this server (the server would link it into the chain with its
    key if it were taken for genuine): `pending-forged`, reported past the last record.
    """
    count = 0
    for row in session.execute(sa.select(_P).order_by(_P.c.created)):
        count += 1
        if pending_of_row(row, keyring) is None:
            reason = f"audit_pending row {row.pk} has no valid MAC: not written by this server"
            problems.append(_Problem(last + 1, "pending-forged", reason))
    return count


def _checkpoints(session: so.Session, keyring: Keyring, problems: list[_Problem]) -> dict[int, Any]:
    """Valid signed heads in the database by sequence number; bad ones become problems."""
    signed: dict[int, Any] = {}
    for cp in session.execute(sa.select(_C).order_by(_C.c.pk)):
        reason = _bad_signature(cp, keyring)
        if reason is not None:
            kind = "unknown-key" if "unknown key" in reason else "checkpoint-unsigned"
            problems.append(_Problem(cp.event_pk, kind, reason))
        else:
            signed[cp.event_pk] = cp
    return signed


def _bad_signature(cp: Any, keyring: Keyring) -> str | None:
    if cp.key_id is None:  # before b002: HMAC over "pk:hash" with whichever key was configured
        if any(
            hmac.compare_digest(cp.signature, legacy_signature(k, cp.event_pk, cp.head_hash))
            for k in keyring.keys.values()
        ):
            return None
        return f"checkpoint {cp.pk} (record {cp.event_pk}) has an invalid signature"
    key = keyring.keys.get(cp.key_id)
    if key is None:
        return f"checkpoint {cp.pk} (record {cp.event_pk}) is signed with unknown key {cp.key_id}"
    expected = head_signature(key, cp.event_pk, cp.head_hash, instant(cp.created), cp.key_id)
    if not hmac.compare_digest(cp.signature, expected):
        return f"checkpoint {cp.pk} (record {cp.event_pk}) has an invalid signature"
    return None


class _Walk:
    """One pass over the records in sequence order, stopping at the first problem."""

    def __init__(
        self, session: so.Session, keyring: Keyring, signed: dict[int, Any], witnessed: dict[int, str]
    ):
        self.session, self.keyring, self.signed, self.witnessed = session, keyring, signed, witnessed
        self.prev, self.seq, self.checked, self.keyed = GENESIS, 0, 0, False
        self.problems: list[_Problem] = []

    def run(self, rows: Any, stop: int | None) -> bool:
        """Check the records; False if stopped early (a problem here or at `stop`)."""
        for row in rows:
            if stop is not None and row.pk > stop:
                return False  # an earlier problem is already known
            problem = self._fault(row) or self._against_heads(row)
            if problem is not None:
                self.problems.append(problem)
                return False
            self.prev, self.seq, self.checked = row.hash, row.pk, self.checked + 1
            self.keyed = self.keyed or row.key_id is not None
        return True

    def _fault(self, row: Any) -> _Problem | None:
        cols = {f: getattr(row, f) for f in _FIELDS}
        if row.key_id is None:  # an unkeyed record from before b002: only as a prefix
            if self.keyed:
                return _Problem(
                    row.pk, "changed", f"record {row.pk} has an unkeyed SHA-256 link after keyed records"
                )
            if row.prev_hash != self.prev:
                return self._displaced(row)
            if record_hash(row.prev_hash, cols) != row.hash:
                return _Problem(row.pk, "changed", f"record {row.pk} does not match its hash (altered)")
            return None
        key = self.keyring.keys.get(row.key_id)
        if key is None:
            return _Problem(row.pk, "unknown-key", f"record {row.pk} is linked with unknown key {row.key_id}")
        if self.keyed and row.pk != self.seq + 1:
            return self._gap(row)
        if link(key, row.pk, row.key_id, row.prev_hash, cols) != row.hash:
            return self._moved(row, key, cols) or _Problem(
                row.pk, "changed", f"record {row.pk} does not match its link under key {row.key_id} (altered)"
            )
        if row.prev_hash != self.prev:
            return self._displaced(row)
        return None

    def _against_heads(self, row: Any) -> _Problem | None:
        cp = self.signed.get(row.pk)
        if cp is not None and cp.head_hash != row.hash:
            return _Problem(
                row.pk, "changed", f"record {row.pk} differs from the signed head of its position"
            )
        seen = self.witnessed.get(row.pk)
        if seen is not None and seen != row.hash:
            return _Problem(row.pk, "changed", f"record {row.pk} differs from the witness's signed head")
        if seen is not None and cp is None:
            return _Problem(
                row.pk,
                "checkpoint-missing",
                f"the witness signed record {row.pk}; the database lost that head",
            )
        return None

    def _moved_successor(self, seq: int) -> int | None:
        """Where the record linked right after the last good one is now, if it was moved there
        intact (its link holds for position `seq`); None if it is gone or was rewritten."""
        row = self.session.execute(sa.select(_E).where(_E.c.prev_hash == self.prev).limit(1)).one_or_none()
        key = None if row is None or row.key_id is None else self.keyring.keys.get(row.key_id)
        if row is None or key is None or row.pk == seq:
            return None
        cols = {f: getattr(row, f) for f in _FIELDS}
        return row.pk if link(key, seq, row.key_id, row.prev_hash, cols) == row.hash else None

    def _gap(self, row: Any) -> _Problem:
        expected = self.seq + 1
        moved = self._moved_successor(expected)
        if moved is not None:
            return _Problem(expected, "reordered", f"record {expected} was moved to position {moved}")
        return _Problem(expected, "missing", f"record {expected} is missing (the next one is {row.pk})")

    def _displaced(self, row: Any) -> _Problem:
        moved = self._moved_successor(row.pk)
        if moved is not None:
            return _Problem(row.pk, "reordered", f"record {row.pk} was moved to position {moved}")
        return _Problem(row.pk, "missing", f"the record linked before record {row.pk} is missing")

    def _moved(self, row: Any, key: bytes, cols: dict[str, Any]) -> _Problem | None:
        """A record whose link is right for another position was moved: try the position after its
        predecessor's current one, and the positions near where it is now (only at a fault)."""
        before = self.session.execute(
            sa.select(_E.c.pk).where(_E.c.hash == row.prev_hash)
        ).scalar_one_or_none()
        near = range(max(1, row.pk - _NEAR), row.pk + _NEAR + 1)
        for seq in ([before + 1] if before is not None else []) + list(near):
            if seq != row.pk and link(key, seq, row.key_id, row.prev_hash, cols) == row.hash:
                return _Problem(
                    row.pk, "reordered", f"record {row.pk} holds the record linked at position {seq}"
                )
        return None


def _ends(
    session: so.Session,
    keyring: Keyring,
    walk: _Walk,
    signed: dict[int, Any],
    witnessed: dict[int, str],
    heads: list[Head] | None,
    grace: float,
) -> list[_Problem]:
    """Problems at the ends: a cut or truncated tail, an unsigned head, a witness ahead or behind."""
    last = walk.seq
    beyond = [s for s in signed if s > last]
    ahead = [s for s in witnessed if s > last]
    if walk.checked == 0 and (signed or witnessed):
        top = max([*signed, *witnessed])
        return [
            _Problem(1, "truncated", f"the database holds no records; signed heads name records up to {top}")
        ]
    if beyond:
        return [
            _Problem(
                last + 1, "tail-cut", f"a signed head names record {max(beyond)}; the chain ends at {last}"
            )
        ]
    if ahead:
        return [
            _Problem(
                last + 1, "witness-ahead", f"the witness signed record {max(ahead)}; the chain ends at {last}"
            )
        ]
    if walk.checked and last not in signed and not _signed_later(session, keyring, last):
        return [_Problem(last, "checkpoint-missing", f"the last record ({last}) has no signed head")]
    if heads is not None:
        return _behind(session, max(witnessed, default=0), grace)
    return []


def _signed_later(session: so.Session, keyring: Keyring, seq: int) -> bool:
    """Whether a head for `seq` committed after the first read (a group committing meanwhile)."""
    rows = session.execute(sa.select(_C).where(_C.c.event_pk == seq))
    return any(_bad_signature(cp, keyring) is None for cp in rows)


def _behind(session: so.Session, top: int, grace: float) -> list[_Problem]:
    """The database's keyed heads past the witness may span at most `grace` seconds."""
    stmt = sa.select(sa.func.min(_C.c.event_pk), sa.func.min(_C.c.created), sa.func.max(_C.c.created))
    first, oldest, newest = session.execute(stmt.where(_C.c.event_pk > top, _C.c.key_id.is_not(None))).one()
    if first is None or _seconds(newest, oldest) <= grace:
        return []
    reason = (
        f"the witness ends at record {top}; the database signed heads up to record {first} and beyond over"
        f" {_seconds(newest, oldest):.0f} s that it never saw (an older copy, or lost lines)"
    )
    return [_Problem(top + 1, "witness-behind", reason)]


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()
