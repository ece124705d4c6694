"""The outbox: each write that triggers a live subscription's topic numbers an event in its transaction.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/notifications.html

Hooked into SqlRepository (server.store.repository.WRITE_OBSERVERS) for the engines whose app
enabled subscriptions. An event is recorded only when the version passes the subscription's
filters and its owner's grant permits reading it now (delivery judges it again), so event
numbers count what the subscriber may see and a gap means a lost notification.
"""

from __future__ import annotations

import functools
import types
import weakref
from typing import Any

import orjson

from auth import scopes as scope_rules
from server.fhir.access import AccessContext
from server.fhir.access import permits
from server.fhir.repository import StoredResource
from server.fhir.subscriptions import subscription
from server.fhir.subscriptions import topics
from server.store import repository
from server.store import subscriptions as store

_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def enable(engine: Any) -> None:
    """Record events for writes through this engine (and hook the repository once per process)."""
    _ENGINES.add(engine)
    if observe not in repository.WRITE_OBSERVERS:
        repository.WRITE_OBSERVERS.append(observe)
        repository.WRITE_PREFETCH.append(prefetch)


def prefetch(repo: Any, written: list[StoredResource]) -> None:
    """PostgreSQL: ask for the live subscriptions of the written types' topics with the write's rows."""
    if not repo.is_postgres:
        return
    bind = repo.session.get_bind()
    if getattr(bind, "engine", bind) not in _ENGINES:
        return
    kinds = {s.type for s in written if s.type in topics.TYPES and not s.deleted and s.body}
    urls = [t.url for t in topics.TOPICS if t.resource in kinds]
    if urls:
        store.prefetch_live(repo.session, urls, repo.queue_query)


def grant_context(state: Any) -> AccessContext:
    """The subscription owner's access, rebuilt from the grant recorded at creation."""
    return _grant(state.grant_scopes, state.patient, state.client_id, state.user_id)


@functools.lru_cache(maxsize=256)
def _grant(scopes: str, patient: str | None, client_id: str | None, user_id: str | None) -> AccessContext:
    # Parsed once per grant, not on every write that a subscription is asked about.
    grant = types.SimpleNamespace(grant_scopes=scopes, patient=patient, client_id=client_id, user_id=user_id)
    return subscription.grant_context(grant, scope_rules.parse)


def _previous(repo: Any, stored: StoredResource) -> dict[str, Any] | None:
    if stored.version <= 1:
        return None
    before = repo.read_version(stored.type, stored.id, stored.version - 1)
    return orjson.loads(before.body) if before is not None and before.body else None


def observe(repo: Any, stored: StoredResource) -> None:
    """Number an event for every live subscription this version triggers (inside the write)."""
    if stored.type not in topics.TYPES and stored.type != subscription.TYPE:
        return
    bind = repo.session.get_bind()
    if getattr(bind, "engine", bind) not in _ENGINES:
        return
    if stored.type == subscription.TYPE:
        if stored.deleted:
            repo.flush()
            store.forget(repo.session, stored.id)
        return
    if stored.deleted or not stored.body:
        return
    candidates = {t.url: t for t in topics.TOPICS if t.resource == stored.type}
    live = store.live_for(repo.session, list(candidates))
    if not live:
        return
    current = orjson.loads(stored.body)
    previous = _previous(repo, stored)
    fired = {url for url, t in candidates.items() if topics.fires(t, previous, current)}
    method = "POST" if previous is None else "PUT"
    moment = stored.last_updated
    for state in sorted(live, key=lambda s: s.id):  # one lock order for every writer
        topic = candidates[state.topic]
        if state.topic not in fired or subscription.ended(state, moment):
            continue
        if not subscription.wanted(state, topic, current):
            continue
        if permits(grant_context(state), stored.type, "r", current):
            store.add_event(repo.session, state.id, (stored.type, stored.id, stored.version), method)
