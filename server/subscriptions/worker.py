"""The delivery worker: handshakes, event notifications in number order, heartbeats, retries.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/channels.html#rest-hook

One daemon thread per server process (like the export worker). It leases one subscription at a
time (server.store.subscriptions.claim: SKIP LOCKED on PostgreSQL), so a subscription's events
go out from one process at a time, oldest first, up to its max count per notification. The
cursor (`delivered`) moves only after the receiver answered 2xx: a crash between sending and
recording sends that notification again (at least once), never out of order. A failed POST is
retried after retry_seconds * 2^(failures-1); the subscription is `error` meanwhile and `off`
after max_attempts failures in a row. Before each lease's work the owner's grant is looked up as
it stands now (server.subscriptions.grants): revoked, or its client or user gone, the
subscription is turned `off` with the reason and nothing more is sent; else each event is
judged under the recorded scopes narrowed to what the client and user may still have, and
what that no longer permits is left out (its number is skipped). Every attempt is audited.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import orm as so

from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.interactions.update import update
from server.fhir.subscriptions import subscription
from server.polling import PollingWorker
from server.settings import Settings
from server.store import subscriptions as store
from server.store.jobs import now
from server.store.repository import SqlRepository
from server.subscriptions.grants import GrantCheck
from server.subscriptions.outbox import grant_context

log = logging.getLogger(__name__)
NOTIFICATION = "https://rehabfhir.org/fhir/CodeSystem/subscription-event"


@dataclass
class DeliveryConfig:
    """How the worker polls, retries and gives up (from Settings; tests shorten them)."""

    worker: bool = True
    poll_seconds: float = 1.0
    retry_seconds: float = 2.0
    max_attempts: int = 5
    lease_seconds: float = 60.0
    event_days: float = 7.0
    prune_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        """The delivery settings."""
        return cls(
            # Tests drive a DeliveryWorker themselves: no thread polling their databases.
            worker=settings.subscription_worker and not settings.testing,
            poll_seconds=settings.subscription_poll_seconds,
            retry_seconds=settings.subscription_retry_seconds,
            max_attempts=settings.subscription_max_attempts,
            event_days=settings.subscription_event_days,
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A receiver may not send a notification elsewhere (e.g. to a plain-http URL)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(state: Any, bundle: dict[str, Any]) -> tuple[bool, str]:
    """POST a notification to the endpoint; (2xx?, what happened)."""
    request = urllib.request.Request(state.endpoint, data=orjson.dumps(bundle), method="POST")
    request.add_header("Content-Type", "application/fhir+json")
    for header in state.headers:
        name, _, value = header.partition(":")
        request.add_header(name.strip(), value.strip())
    try:
        with _OPENER.open(request, timeout=state.timeout) as answer:
            return 200 <= answer.status < 300, f"HTTP {answer.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        return False, f"{type(err).__name__}: {err}"


class DeliveryWorker(PollingWorker):
    """A daemon thread that delivers notifications."""

    thread_name = "rehabfhir-subscriptions"
    join_on_stop = True

    def __init__(
        self,
        factory: Callable[[], so.Session],
        config: DeliveryConfig,
        grants: GrantCheck,
        audit: Callable[[list[Any]], None] | None = None,
        server: str = "",
    ) -> None:
        super().__init__()
        self.factory, self.config, self.audit, self.server = factory, config, audit, server
        self.grants = grants

    @property
    def poll_seconds(self) -> float:
        return self.config.poll_seconds

    @property
    def housekeeping_seconds(self) -> float:
        return self.config.prune_seconds

    def run_once(self) -> bool:
        """Lease one subscription with work due and do it; return whether there was one."""
        with self.factory() as session:
            state = store.claim(session, self.id, timedelta(seconds=self.config.lease_seconds))
        if state is None:
            return False
        try:
            self._deliver(state)
        finally:
            with self.factory() as session:
                store.update(session, state.id, self.id, claimed_by=None, lease_until=None)
        return True

    def housekeeping(self) -> int:
        return self.prune()

    def prune(self) -> int:
        """Remove delivered events older than event_days; return how many."""
        with self.factory() as session:
            return store.prune(session, now() - timedelta(days=self.config.event_days))

    def run_until_idle(self, limit: int = 1000) -> int:
        """Run until nothing is due (tests, CLI); return how many leases were worked."""
        n = 0
        while n < limit and self.run_once():
            n += 1
        return n

    # -- one subscription ------------------------------------------------------------------

    def _deliver(self, state: Any) -> None:
        if subscription.ended(state, now()):
            self._turn_off(state, "Subscription.end reached")
            return
        with self.factory() as session:
            standing = self.grants.standing(session, state)
        if standing.scopes is None:
            error = f"The owner's grant was withdrawn: {standing.withdrawn}"
            log.warning("subscription %s turned off: %s", state.id, error)
            self._turn_off(state, error)
            return
        state = replace(state, grant_scopes=standing.scopes)  # what the grant still covers
        if state.status == store.REQUESTED:
            self._send(state, "handshake", [], state.delivered)
            return
        if state.events > state.delivered:
            self._send_events(state)
            return
        self._send(state, "heartbeat", [], state.delivered)

    def _turn_off(self, state: Any, error: str) -> None:
        with self.factory() as session:
            store.update(session, state.id, self.id, status=store.OFF, error=error)
        self._set_resource_status(state, store.OFF, error)

    def _send_events(self, state: Any) -> None:
        ctx = grant_context(state)
        with self.factory() as session:
            repo = SqlRepository(session)
            batch = store.events(session, state.id, state.delivered + 1, state.events, state.max_count)
            items = []
            for event in batch:
                allowed, body = subscription.shown(repo, ctx, event)
                if allowed:
                    items.append((event, body))
        last = batch[-1].number if batch else state.events
        if not items:  # nothing the grant still permits: skip these numbers
            with self.factory() as session:
                store.update(session, state.id, self.id, delivered=last)
            return
        self._send(state, "event-notification", items, last)

    def _send(self, state: Any, kind: str, items: list[Any], last: int) -> None:
        shown = replace(state, events=last)
        bundle = subscription.notification(shown, kind, items)
        ok, what = post(state, bundle)
        self._audit(state, kind, items, ok, what)
        moment = now()
        if ok:
            beat = moment + timedelta(seconds=state.heartbeat) if state.heartbeat else None
            values: dict[str, Any] = dict(
                failures=0, last_sent=moment, heartbeat_due=beat, next_attempt=moment, error=None
            )
            if kind == "event-notification":
                values["delivered"] = last
            if state.status != store.ACTIVE:
                values["status"] = store.ACTIVE
            with self.factory() as session:
                store.update(session, state.id, self.id, **values)
            if state.status != store.ACTIVE:
                self._set_resource_status(state, store.ACTIVE, None)
            return
        failures = state.failures + 1
        # A handshake not yet answered stays requested (retried); a failing active one is in error.
        status = store.REQUESTED if kind == "handshake" else store.ERROR
        status = store.OFF if failures >= self.config.max_attempts else status
        delay = self.config.retry_seconds * 2 ** (failures - 1)
        error = (
            f"{kind} to {state.endpoint} failed ({what}), attempt {failures} of {self.config.max_attempts}"
        )
        log.warning("subscription %s: %s", state.id, error)
        with self.factory() as session:
            store.update(
                session,
                state.id,
                self.id,
                failures=failures,
                status=status,
                error=error,
                next_attempt=moment + timedelta(seconds=delay),
            )
        if status != state.status:
            self._set_resource_status(state, status, error)

    def _set_resource_status(self, state: Any, status: str, error: str | None) -> None:
        """Show the state on the Subscription resource (a new version, written as the system)."""
        with self.factory() as session:
            repo = SqlRepository(session)
            stored = repo.read_resource(subscription.TYPE, state.id)
            if stored is None or stored.deleted or not stored.body:
                return
            body = orjson.loads(stored.body)
            meta = body.pop("meta", None) or {}
            if meta.get("tag"):
                body["meta"] = {"tag": meta["tag"]}  # the owner tag: who may see the subscription
            body["status"] = status
            body.pop("error", None)
            if error:
                body["error"] = error
            req = FhirRequest(method="PUT", base_url=state.base_url)
            update(repo, SYSTEM, req, subscription.TYPE, state.id, body=body)

    def _audit(self, state: Any, kind: str, items: list[Any], ok: bool, what: str) -> None:
        if self.audit is None:
            return
        from server.audit.events import AuditFacts

        numbers = [event.number for event, _ in items]
        patients = sorted({p for _, body in items if body for p in _patients(body)})
        facts = AuditFacts(
            subtype=kind,
            outcome=0 if ok else 8,
            recorded=now(),
            server=self.server or state.base_url,
            client_id=state.client_id,
            resource=f"Subscription/{state.id}",
            patient=patients[0] if len(patients) == 1 else None,
            description=f"{kind} {numbers or ''} to {state.endpoint}: {what}".replace("  ", " "),
            event_type=(NOTIFICATION, "rest-hook", "Subscription notification (rest-hook)"),
            subtype_system=NOTIFICATION,
            action="E",
        )
        try:
            self.audit([facts])
        except Exception:  # the delivery happened: a failed audit write is logged loudly
            log.exception("subscription %s: the delivery could not be audited", state.id)


def _patients(body: dict[str, Any]) -> set[str]:
    from server.audit.hook import patients_of

    return set(patients_of(body))
