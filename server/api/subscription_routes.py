"""Topic-based Subscriptions wired into the app: topics seeded, storage handed in, the delivery worker.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/
"""

from __future__ import annotations

import logging

import flask

from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.subscriptions import subscription
from server.fhir.subscriptions import topics
from server.settings import Settings
from server.store.repository import SqlRepository
from server.store.subscriptions import SqlStore
from server.subscriptions import outbox
from server.subscriptions.grants import AuthGrants
from server.subscriptions.worker import DeliveryConfig
from server.subscriptions.worker import DeliveryWorker

log = logging.getLogger(__name__)
WORKER = "rehabfhir.subscription_worker"
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def seed_topics(app: flask.Flask, settings: Settings) -> list[str]:
    """Store the SubscriptionTopic resources (missing or changed ones) as the system."""
    with app.extensions["rehabfhir.sessions"]() as session:
        req = FhirRequest(method="PUT", base_url=settings.public_base_url)
        return topics.seed(SqlRepository(session), SYSTEM, req)


def config(settings: Settings) -> subscription.Config:
    """The subscription checks' storage and limits: plain http to loopback in development mode only."""
    return subscription.Config(
        SqlStore(),
        allow_loopback=settings.mode == "development",
        max_timeout=settings.subscription_max_timeout,
    )


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Seed the topics, hand the storage in, hook the outbox and start this process's worker."""
    try:
        written = seed_topics(app, settings)
        if written:
            log.info("seeded subscription topics: %s", ", ".join(written))
    except Exception:  # a server without its tables yet still starts
        log.warning("could not seed the subscription topics", exc_info=True)
    subscription.use(config(settings))
    outbox.enable(app.extensions["rehabfhir.engine"])
    batcher = app.extensions.get("rehabfhir.audit_batcher")
    worker = DeliveryWorker(
        app.extensions["rehabfhir.sessions"],
        DeliveryConfig.from_settings(settings),
        # The owner's grant as auth sees it now (revocation, the client's and user's scopes).
        AuthGrants(app.extensions["rehabfhir.auth"].server),
        audit=None if batcher is None else batcher.write,
        server=settings.public_base_url,
    )
    app.extensions[WORKER] = worker

    @app.after_request
    def _wake_worker(response: flask.Response) -> flask.Response:
        if flask.request.method in _WRITES and response.status_code < 300:
            flask.current_app.extensions[WORKER].wake()
        return response

    if worker.config.worker:
        worker.start()
