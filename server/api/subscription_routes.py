"""Topic-based Subscriptions wired into the app: the topics seeded at start.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/
"""

from __future__ import annotations

import logging

import flask

from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.subscriptions import topics
from server.settings import Settings
from server.store.repository import SqlRepository

log = logging.getLogger(__name__)


def seed_topics(app: flask.Flask, settings: Settings) -> list[str]:
    """Store the SubscriptionTopic resources (missing or changed ones) as the system."""
    with app.extensions["rehabfhir.sessions"]() as session:
        req = FhirRequest(method="PUT", base_url=settings.public_base_url)
        return topics.seed(SqlRepository(session), SYSTEM, req)


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Seed the topics (the statement lists them once server.fhir.subscriptions.topics is imported)."""
    try:
        written = seed_topics(app, settings)
        if written:
            log.info("seeded subscription topics: %s", ", ".join(written))
    except Exception:  # a server without its tables yet still starts
        log.warning("could not seed the subscription topics", exc_info=True)
