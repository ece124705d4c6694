"""The keyed chain over audit records and the signed head of every audit commit.

Record n (its primary key is its sequence number: 1, 2, 3 … with no gaps) stores
hash = HMAC-SHA256(key, ["link", n, key id] + canonical(prev_hash, columns, body)); the
first record's prev_hash is 64 zeros. The key comes from configuration, never from the
database, and its id is stored with the record, so keys can rotate (verify holds the old
ones). Without the key nobody can recompute a link: a changed, removed, inserted or
moved record stays visible even to someone who can rewrite every row.

Appends are serialised (PostgreSQL: a transaction-scoped advisory lock taken in the writing
transaction; SQLite: BEGIN IMMEDIATE). Each append (one group commit, or one clinical write)
ends by signing its head (sequence number, link, time, key id) into audit_checkpoint in the
same transaction; after the commit the same head goes to the witness file outside the
database (witness.py). Records written before revision b002 have key_id NULL and a plain
SHA-256 link; they are accepted only as a prefix of the chain (verify.py).
Schneier & Kelsey 1999; RFC 9162 §4.10 (signed tree head); https://profiles.ihe.net/ITI/BALP/
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
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
# session.info entry: (witness, head) of an uncommitted append, published after the commit.
PENDING_HEAD = "rehabfhir.audit_head"
_E = AuditRecord.__table__
_C = AuditCheckpoint.__table__
_HEAD = sa.select(_E.c.pk, _E.c.hash).order_by(_E.c.pk.desc()).limit(1)
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


def key_fingerprint(key: bytes) -> str:
    """A key id derived from the key (when none is configured): changes when the key does."""
    return "k" + hashlib.sha256(b"rehabfhir-audit-key-id\0" + key).hexdigest()[:12]


@dataclass(frozen=True)
class Keyring:
    """The key that links and signs now, and every key verify accepts, by id."""

    key_id: str
    keys: Mapping[str, bytes]

    @property
    def key(self) -> bytes:
        """The current key."""
        return self.keys[self.key_id]

    @classmethod
    def build(cls, key: bytes, key_id: str = "", retired: str = "") -> Keyring:
        """The current key (its id given or derived) and retired keys as "id=secret" words."""
        key_id = key_id or key_fingerprint(key)
        keys: dict[str, bytes] = {}
        for word in retired.replace(",", " ").split():
            kid, sep, secret = word.partition("=")
            if not sep or not secret:
                raise ValueError("REHABFHIR_AUDIT_RETIRED_KEYS: expected id=secret words")
            keys[kid] = secret.encode()
        keys[key_id] = key
        for kid in keys:
            if not _KEY_ID.match(kid):
                raise ValueError(f"audit key id {kid!r}: 1-32 of A-Z a-z 0-9 . _ -")
        return cls(key_id, keys)


def now() -> datetime:
    """Naive UTC with millisecond precision (what the record shows is what is hashed)."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# The searchable columns' lengths (varchar on PostgreSQL): a longer value (a 300-character id in a
# refused request's URL, a made-up client id) is cut to fit before it is linked, so the record is
# written (a 500 "could not be written" otherwise) and the link covers what is stored. The JSON
# body (text) keeps every value whole.
_LENGTHS = {
    name: column.type.length
    for name, column in AuditRecord.__table__.columns.items()
    if isinstance(column.type, sa.String) and column.type.length
}


def _fit(name: str, value: Any) -> Any:
    limit = _LENGTHS.get(name)
    return value[:limit] if limit and isinstance(value, str) and len(value) > limit else value


def columns(facts: AuditFacts) -> dict[str, Any]:
    """The searchable columns and JSON body of one record (no chain fields)."""
    cols = {
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
    return {name: _fit(name, value) for name, value in cols.items()}


def canonical(prev_hash: str, cols: Mapping[str, Any]) -> bytes:
    """The exact bytes linked: a JSON array in fixed order, the instant in UTC milliseconds."""
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


def link(key: bytes, seq: int, key_id: str, prev_hash: str, cols: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of record `seq`: its position, key id, predecessor's link and content."""
    message = orjson.dumps(["link", seq, key_id]) + canonical(prev_hash, cols)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def record_hash(prev_hash: str, cols: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical form: the unkeyed link of records before b002."""
    return hashlib.sha256(canonical(prev_hash, cols)).hexdigest()


def legacy_signature(key: bytes, event_pk: int, head_hash: str) -> str:
    """HMAC-SHA256 (hex) of a checkpoint written before b002."""
    return hmac.new(key, f"{event_pk}:{head_hash}".encode(), hashlib.sha256).hexdigest()


def head_signature(key: bytes, seq: int, link_: str, time: str, key_id: str) -> str:
    """HMAC-SHA256 (hex) of a signed head."""
    return hmac.new(key, orjson.dumps(["head", seq, link_, time, key_id]), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """A signed chain head: record `seq` has link `link`, as signed at `time` with key `kid`."""

    seq: int
    link: str
    time: str  # FHIR instant, UTC milliseconds
    kid: str
    sig: str

    def valid(self, keyring: Keyring) -> bool:
        """Whether the signature is right under a key the ring holds."""
        key = keyring.keys.get(self.kid)
        return key is not None and hmac.compare_digest(
            self.sig, head_signature(key, self.seq, self.link, self.time, self.kid)
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (one witness line, `rehabfhir audit head`)."""
        return {"seq": self.seq, "link": self.link, "time": self.time, "kid": self.kid, "sig": self.sig}

    @classmethod
    def parse(cls, text: str | bytes) -> Head:
        """Read the JSON form; ValueError when it is not one."""
        try:
            d = orjson.loads(text)
            return cls(int(d["seq"]), str(d["link"]), str(d["time"]), str(d["kid"]), str(d["sig"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a signed audit head: {exc}") from None


def sign_head(keyring: Keyring, seq: int, link_: str, moment: datetime) -> Head:
    """Sign (seq, link, time, key id) with the current key."""
    time = instant(moment)
    return Head(
        seq, link_, time, keyring.key_id, head_signature(keyring.key, seq, link_, time, keyring.key_id)
    )


_INSERT = sa.insert(_E)
_INSERT_HEAD = sa.insert(_C)
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")


def lock_head(session: so.Session) -> tuple[int | None, str]:
    """Serialise chain writers until commit; return the current head (pk, hash)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"k": CHAIN_LOCK})
    row = conn.execute(_HEAD).one_or_none()
    return (None, GENESIS) if row is None else (row.pk, row.hash)


def link_rows(
    facts: Sequence[AuditFacts | dict[str, Any]], keyring: Keyring, head_pk: int | None, prev: str
) -> list[dict[str, Any]]:
    """The rows that extend a chain whose head is (head_pk, prev): columns, pk, key id and links.

    Each item is an AuditFacts, or the columns of one already (a pending write's records).
    """
    seq, kid, key = head_pk or 0, keyring.key_id, keyring.key
    rows = []
    for fact in facts:
        seq += 1
        cols = dict(fact) if isinstance(fact, dict) else columns(fact)
        digest = link(key, seq, kid, prev, cols)
        cols.update(pk=seq, key_id=kid, prev_hash=prev, hash=digest)
        rows.append(cols)
        prev = digest
    return rows


def append(target: Any, facts: Sequence[AuditFacts], keyring: Keyring, witness: Any = None) -> Head | None:
    """Append records and their signed head; return the head.

    On a Session: inside the caller's write transaction; with a witness, (witness, head) is left
    in session.info[PENDING_HEAD]: witness.py publishes it once the transaction has committed and
    drops it if it rolls back. Runs on the session's connection with prebuilt statements and one
    multi-row INSERT. On anything else (appender.DirectAppender, the group commit of reads): the
    target runs the append in a transaction of its own on its own connection, commits it and
    writes the head to the witness (not yet fsync'd: the caller makes it durable, see batching.py).
    """
    if not facts:
        return None
    if not isinstance(target, so.Session):
        return target.append(facts, keyring, witness)  # type: ignore[no-any-return]
    session = target
    head_pk, prev = lock_head(session)
    rows = link_rows(facts, keyring, head_pk, prev)
    seq, prev = rows[-1]["pk"], rows[-1]["hash"]
    conn = session.connection()
    conn.execute(_INSERT, rows)
    moment = now()
    head = sign_head(keyring, seq, prev, moment)
    conn.execute(
        _INSERT_HEAD,
        {"created": moment, "event_pk": seq, "head_hash": prev, "signature": head.sig, "key_id": head.kid},
    )
    if witness is not None:
        session.info[PENDING_HEAD] = (witness, head)
    return head


# -- writes: records committed with the write, linked right after it (PostgreSQL) -------------


@dataclass(frozen=True, slots=True)
class Pending:
    """The records of one committed write, waiting in audit_pending (row `pk`) to be linked."""

    pk: int
    records: tuple[dict[str, Any], ...]  # chain.columns of each record


def _pending_text(records: Sequence[Mapping[str, Any]]) -> str:
    stamped = [{**r, "recorded": r["recorded"].isoformat(timespec="microseconds")} for r in records]
    return orjson.dumps(stamped).decode()


def pending_mac(key: bytes, pk: int, created: datetime, text: str) -> str:
    """HMAC-SHA256 (hex) of a pending row: its pk, time and records (a row without it is never linked)."""
    message = orjson.dumps(["pending", pk, created.isoformat(timespec="microseconds"), text])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def pending_row(
    facts: Sequence[AuditFacts | dict[str, Any]], keyring: Keyring
) -> tuple[Pending, dict[str, Any]]:
    """A write's records (AuditFacts, or their columns) as a Pending and its audit_pending row."""
    records = tuple(dict(f) if isinstance(f, dict) else columns(f) for f in facts)
    pk = secrets.randbits(62) + 1
    created, text = now(), _pending_text(records)
    mac = pending_mac(keyring.key, pk, created, text)
    row = {"pk": pk, "created": created, "records": text, "mac": mac, "key_id": keyring.key_id}
    return Pending(pk, records), row


def pending_of_row(row: Any, keyring: Keyring) -> Pending | None:
    """The Pending a stored row holds, or None when its MAC is not right under a key of the ring."""
    key = keyring.keys.get(row.key_id)
    if key is None or not hmac.compare_digest(row.mac, pending_mac(key, row.pk, row.created, row.records)):
        return None
    records = tuple(
        {**r, "recorded": datetime.fromisoformat(r["recorded"])} for r in orjson.loads(row.records)
    )
    return Pending(row.pk, records)


def latest_head(session: so.Session) -> Head | None:
    """The newest signed head in the database (None if there is none, or it predates b002)."""
    row = session.execute(sa.select(_C).order_by(_C.c.event_pk.desc(), _C.c.pk.desc()).limit(1)).one_or_none()
    if row is None or row.key_id is None:
        return None
    return Head(row.event_pk, row.head_hash, instant(row.created), row.key_id, row.signature)
