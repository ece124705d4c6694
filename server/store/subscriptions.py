"""Subscription state and the notification outbox: the `subscription_state` and `subscription_event` tables.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/

A subscription's delivery state (grant, channel, event counter, delivery cursor, failures) lives
beside its Subscription resource, so it survives a restart and is shared by every process. An
event row is written in the transaction of the write that triggers it: its number comes from
`UPDATE ... SET events = events + 1 RETURNING`, which holds the subscription's row lock until that
transaction ends, so a subscription's numbers are gapless and in commit order. Workers take a
subscription with a lease (SKIP LOCKED on PostgreSQL) and send its events in number order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base
from server.store.jobs import now
from server.store.models import BigIntPk
from server.store.session import begin_write

REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
LIVE = (REQUESTED, ACTIVE, ERROR)


class SubscriptionState(Base):
    """One Subscription's owner, grant, channel and delivery progress."""

    __tablename__ = "subscription_state"
    __table_args__ = (sa.Index("ix_subscription_state_topic_status", "topic", "status"),)

    id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16))
    topic: so.Mapped[str] = so.mapped_column(sa.String(255))
    filters: so.Mapped[str] = so.mapped_column(sa.Text)  # JSON [[param, value], ...]
    endpoint: so.Mapped[str] = so.mapped_column(sa.Text)
    headers: so.Mapped[str] = so.mapped_column(sa.Text)  # JSON ["Name: value", ...]
    content: so.Mapped[str] = so.mapped_column(sa.String(16))  # empty | id-only | full-resource
    heartbeat: so.Mapped[int | None] = so.mapped_column(sa.Integer, nullable=True)  # seconds
    timeout: so.Mapped[int] = so.mapped_column(sa.Integer)  # seconds
    max_count: so.Mapped[int] = so.mapped_column(sa.Integer)
    # The creating token: the client (and user: `subject`) that own it, the grant every notification
    # is judged by, and the token's jti and refresh family, whose revocation turns it off.
    client_id: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    subject: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    grant_scopes: so.Mapped[str] = so.mapped_column(sa.Text)
    patient: so.Mapped[str | None] = so.mapped_column(sa.String(64), nullable=True)
    user_id: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    token_id: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    token_family: so.Mapped[str | None] = so.mapped_column(sa.String(255), nullable=True)
    base_url: so.Mapped[str] = so.mapped_column(sa.Text)
    events: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)  # eventsSinceSubscriptionStart
    delivered: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)  # highest number sent
    failures: so.Mapped[int] = so.mapped_column(sa.Integer, default=0)
    next_attempt: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    last_sent: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    heartbeat_due: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    ends: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)  # Subscription.end
    error: so.Mapped[str | None] = so.mapped_column(sa.Text, nullable=True)
    claimed_by: so.Mapped[str | None] = so.mapped_column(sa.String(128), nullable=True)
    lease_until: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime, nullable=True)
    created: so.Mapped[datetime] = so.mapped_column(sa.DateTime)


class SubscriptionEvent(Base):
    """One numbered event of one subscription (kept for $events)."""

    __tablename__ = "subscription_event"
    __table_args__ = (sa.UniqueConstraint("subscription_id", "number"),)

    pk: so.Mapped[int] = so.mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    subscription_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    number: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    recorded: so.Mapped[datetime] = so.mapped_column(sa.DateTime)
    focus_type: so.Mapped[str] = so.mapped_column(sa.String(64))
    focus_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    focus_version: so.Mapped[int] = so.mapped_column(sa.Integer)
    method: so.Mapped[str] = so.mapped_column(sa.String(8))  # POST (create) | PUT (update)


@dataclass(frozen=True, slots=True)
class StateView:
    """A detached snapshot of one subscription's state."""

    id: str
    status: str
    topic: str
    filters: list[tuple[str, str]]
    endpoint: str
    headers: list[str]
    content: str
    heartbeat: int | None
    timeout: int
    max_count: int
    client_id: str | None
    grant_scopes: str
    patient: str | None
    user_id: str | None
    base_url: str
    events: int
    delivered: int
    failures: int
    next_attempt: datetime | None
    last_sent: datetime | None
    error: str | None
    ends: datetime | None = None
    subject: str | None = None
    token_id: str | None = None
    token_family: str | None = None


@dataclass(frozen=True, slots=True)
class EventView:
    """One stored event."""

    number: int
    recorded: datetime
    focus_type: str
    focus_id: str
    focus_version: int
    method: str


_T = SubscriptionState.__table__
_E = SubscriptionEvent.__table__
_STATE_FIELDS = tuple(StateView.__dataclass_fields__)


def _view(row: Any) -> StateView:
    values = {name: getattr(row, name) for name in _STATE_FIELDS}
    values["filters"] = [tuple(f) for f in orjson.loads(row.filters)]
    values["headers"] = orjson.loads(row.headers)
    return StateView(**values)


def record(session: so.Session, values: dict[str, Any]) -> None:
    """Insert a subscription's state (inside the transaction that stores its resource)."""
    row = dict(values)
    row["filters"] = orjson.dumps(list(values["filters"])).decode()
    row["headers"] = orjson.dumps(list(values["headers"])).decode()
    row.update(events=0, delivered=0, failures=0, created=now(), next_attempt=now())
    session.info.pop(LIVE_CACHE, None)
    # A PUT replaces it: requested again, its events start over from number 1.
    session.execute(sa.delete(_E).where(_E.c.subscription_id == row["id"]))
    session.execute(sa.delete(_T).where(_T.c.id == row["id"]))
    session.execute(sa.insert(_T).values(**row))


def get(session: so.Session, id_: str) -> StateView | None:
    """Return a snapshot of the subscription's state, or None."""
    row = session.execute(sa.select(_T).where(_T.c.id == id_)).one_or_none()
    return None if row is None else _view(row)


# session.info entry: topic URL -> its live subscriptions, read once per database transaction (the
# first write of the topic's type asks; a 200-entry bundle then costs one SELECT, not 200) and
# dropped when the transaction ends, when a savepoint rolls back, and when this session records or
# stops a subscription. A subscription committed before the transaction began is in it. Numbering
# is unchanged: add_event's UPDATE takes the row lock and counts only a subscription still live.
LIVE_CACHE = "rehabfhir_live_subscriptions"
_LIVE = sa.select(_T).where(_T.c.topic.in_(sa.bindparam("topics", expanding=True)), _T.c.status.in_(LIVE))


@sa.event.listens_for(so.Session, "after_transaction_end")
def _drop_at_end(session: so.Session, transaction: so.SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(LIVE_CACHE, None)


@sa.event.listens_for(so.Session, "after_soft_rollback")
def _drop_at_rollback(session: so.Session, _previous: so.SessionTransaction) -> None:
    # A rolled-back savepoint may have held a record() or forget() read into the cache.
    session.info.pop(LIVE_CACHE, None)


_LIVE_SQL = f"SELECT * FROM {SubscriptionState.__tablename__} WHERE topic = ANY(%s) AND status = ANY(%s)"


def prefetch_live(session: so.Session, topic_urls: list[str], queue: Any) -> None:
    """Queue the read of these topics' live subscriptions (PostgreSQL: into the write's pipeline).

    `queue(sql, params, done)` sends it with the transaction's next flush; live_for then finds
    the answer in the transaction's cache instead of asking.
    """
    cache: dict[str, list[StateView]] = session.info.setdefault(LIVE_CACHE, {})
    missing = [url for url in dict.fromkeys(topic_urls) if url not in cache]
    if not missing:
        return

    def done(rows: list[Any]) -> None:
        found: dict[str, list[StateView]] = {url: [] for url in missing}
        for row in rows:
            found[row.topic].append(_view(row))
        session.info.setdefault(LIVE_CACHE, {}).update(found)

    queue(_LIVE_SQL, (missing, list(LIVE)), done)


def live_for(session: so.Session, topic_urls: list[str]) -> list[StateView]:
    """Subscriptions (requested, active or in error) on these topics, as this transaction first read them."""
    cache: dict[str, list[StateView]] = session.info.setdefault(LIVE_CACHE, {})
    missing = [url for url in topic_urls if url not in cache]
    if missing:
        for url in missing:
            cache[url] = []
        for row in session.execute(_LIVE, {"topics": missing}):
            cache[row.topic].append(_view(row))
    return [state for url in topic_urls for state in cache[url]]


_NUMBER = (
    sa.update(_T)
    .where(_T.c.id == sa.bindparam("subscription"), _T.c.status.in_(LIVE))
    .values(events=_T.c.events + 1)
    .returning(_T.c.events)
)


def add_event(session: so.Session, id_: str, focus: tuple[str, str, int], method: str) -> int:
    """Number and store an event (in the triggering write's transaction); 0 if it is no longer live."""
    number = session.execute(_NUMBER, {"subscription": id_}).scalar_one_or_none()
    if number is None:  # stopped or replaced since this transaction read it (live_for's cache)
        return 0
    type_, rid, version = focus
    session.execute(
        sa.insert(_E).values(
            subscription_id=id_,
            number=number,
            recorded=now(),
            focus_type=type_,
            focus_id=rid,
            focus_version=version,
            method=method,
        )
    )
    return int(number)


def events(session: so.Session, id_: str, since: int, until: int, limit: int) -> list[EventView]:
    """Events numbered since..until (inclusive), oldest first, at most `limit`."""
    rows = session.execute(
        sa.select(_E.c.number, _E.c.recorded, _E.c.focus_type, _E.c.focus_id, _E.c.focus_version, _E.c.method)
        .where(_E.c.subscription_id == id_, _E.c.number >= since, _E.c.number <= until)
        .order_by(_E.c.number)
        .limit(limit)
    )
    return [EventView(*r) for r in rows]


def claim(session: so.Session, worker: str, lease: timedelta) -> StateView | None:
    """Lease one subscription with work due (events to send, a handshake, a heartbeat) and commit."""
    moment = now()
    begin_write(session)
    stmt = (
        sa.select(SubscriptionState)
        .where(
            SubscriptionState.status.in_(LIVE),
            sa.or_(SubscriptionState.next_attempt.is_(None), SubscriptionState.next_attempt <= moment),
            sa.or_(SubscriptionState.lease_until.is_(None), SubscriptionState.lease_until < moment),
            sa.or_(
                SubscriptionState.status == REQUESTED,
                SubscriptionState.events > SubscriptionState.delivered,
                SubscriptionState.heartbeat_due <= moment,
                SubscriptionState.ends <= moment,  # to be turned off
            ),
        )
        .order_by(SubscriptionState.next_attempt)
        .limit(1)
        .with_for_update(skip_locked=True)  # SQLite renders no FOR UPDATE: BEGIN IMMEDIATE serialises
    )
    row = session.scalars(stmt).first()
    if row is None:
        session.rollback()
        return None
    row.claimed_by, row.lease_until = worker, moment + lease
    view = _view(row)
    session.commit()
    return view


def update(session: so.Session, id_: str, worker: str | None, **values: Any) -> bool:
    """Change a subscription's state (only while `worker` holds its lease, when given) and commit."""
    stmt = sa.update(_T).where(_T.c.id == id_)
    if worker is not None:
        stmt = stmt.where(_T.c.claimed_by == worker)
    if session.in_transaction():
        session.rollback()
    begin_write(session)
    done = session.execute(stmt.values(**values)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(done)


def prune(session: so.Session, before: datetime) -> int:
    """Delete delivered events recorded before `before` (and every event of subscriptions gone); commit."""
    delivered = sa.select(_T.c.delivered).where(_T.c.id == _E.c.subscription_id).scalar_subquery()
    if session.in_transaction():
        session.rollback()
    begin_write(session)
    gone = session.execute(
        sa.delete(_E).where(
            _E.c.recorded < before, sa.or_(delivered.is_(None), _E.c.number <= sa.func.coalesce(delivered, 0))
        )
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return int(gone)


DELETED = "deleted"  # the error of a deleted subscription's state row (kept for its events)


def owned(session: so.Session, client_id: str, subject: str | None, limit: int) -> list[StateView]:
    """The subscriptions of one owner (a client, and its user when `subject` is given), by id."""
    mine = _T.c.subject.is_(None) if subject is None else _T.c.subject == subject
    live = sa.or_(_T.c.error.is_(None), _T.c.error != DELETED)  # a deleted one is left out, as a search does
    rows = session.execute(
        sa.select(_T).where(_T.c.client_id == client_id, mine, live).order_by(_T.c.id).limit(limit)
    )
    return [_view(row) for row in rows]


def forget(session: so.Session, id_: str) -> None:
    """Stop a deleted subscription (its events stay until the state row goes)."""
    session.info.pop(LIVE_CACHE, None)
    session.execute(sa.update(_T).where(_T.c.id == id_).values(status=OFF, error=DELETED))


class SqlStore:
    """server.fhir.subscriptions.subscription.Store over the request's repository session."""

    def record(self, repo: Any, values: dict[str, Any]) -> None:
        """Store a new subscription's state in the repository's transaction."""
        repo.flush()
        record(repo.session, values)

    def state(self, repo: Any, id_: str) -> StateView | None:
        """The subscription's state, or None."""
        return get(repo.session, id_)

    def events(self, repo: Any, id_: str, since: int, until: int, limit: int) -> list[EventView]:
        """Stored events numbered since..until, oldest first."""
        return events(repo.session, id_, since, until, limit)

    def owned(self, repo: Any, client_id: str, subject: str | None, limit: int) -> list[StateView]:
        """The subscriptions of one owner (client and user), by id, at most `limit`."""
        return owned(repo.session, client_id, subject, limit)
