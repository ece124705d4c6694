"""The SubscriptionTopics this server offers, and whether a write triggers one.

https://hl7.org/fhir/R4B/subscriptiontopic.html
https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/components.html

Each topic is served as a SubscriptionTopic resource (seeded at start, like the terminology)
and evaluated here from the same definition: the `queryCriteria` strings are parsed as search
parameters and matched in memory against the previous and current version (the matcher the
scope restrictions use), so what a topic says is what it does. Element values (codes,
resource types, SearchParameter canonicals) are from hl7.fhir.r4b.core 4.3.0: subscription
topics (resourceTrigger.supportedInteraction: interaction-trigger = create|update|delete;
queryCriteria.resultForCreate: subscriptiontopic-cr-behavior = test-passes|test-fails) and the
SearchParameters clinical-patient (CarePlan, Encounter, EpisodeOfCare, Goal, Observation) and
clinical-code (Observation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.interactions import capabilities
from server.fhir.repository import FhirRepository

IG = "http://hl7.org/fhir/uv/subscriptions-backport"
# The IG's extension on CapabilityStatement.rest.resource (IG 1.1.0) naming each topic offered
CAPABILITY_TOPIC = f"{IG}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
BASE = "https://rehabfhir.org/fhir/SubscriptionTopic/"
PT_MEASURES = "https://rehabfhir.org/fhir/CodeSystem/pt-measures"
_SP = "http://hl7.org/fhir/SearchParameter/"
_PATIENT = ("patient", _SP + "clinical-patient", "The patient the resource is about (Patient/<id>)")
_CODE = ("code", _SP + "clinical-code", "The Observation's code (system|code)")


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: the resource and interactions that trigger it, its criteria and allowed filters."""

    id: str
    title: str
    description: str
    resource: str
    interactions: tuple[str, ...]
    filters: tuple[tuple[str, str, str], ...]  # (filterParameter, filterDefinition, description)
    previous: str | None = None  # queryCriteria.previous (search parameters)
    current: str | None = None  # queryCriteria.current
    require_both: bool = False
    changed: str | None = None  # an element whose value must differ from the previous version's

    @property
    def url(self) -> str:
        """The topic's canonical URL (what a Subscription's criteria names)."""
        return BASE + self.id


TOPICS: tuple[Topic, ...] = (
    Topic(
        "measure-observation",
        "New or changed measure of a patient",
        "An Observation carrying a rehab catalog measure code was created or updated.",
        "Observation",
        ("create", "update"),
        (_PATIENT, _CODE),
        current=f"code={PT_MEASURES}|",
    ),
    Topic(
        "careplan-changed",
        "Care plan created or changed",
        "A CarePlan (e.g. an exercise plan) was created or updated.",
        "CarePlan",
        ("create", "update"),
        (_PATIENT,),
    ),
    Topic(
        "goal-status-changed",
        "Goal status changed",
        "A Goal was created, or updated with a different lifecycleStatus.",
        "Goal",
        ("create", "update"),
        (_PATIENT,),
        changed="lifecycleStatus",
    ),
    Topic(
        "encounter-finished",
        "Session finished",
        "An Encounter (a treatment session) reached status finished.",
        "Encounter",
        ("create", "update"),
        (_PATIENT,),
        previous="status:not=finished",
        current="status=finished",
        require_both=True,
    ),
    Topic(
        "episode-finished",
        "Episode of care finished (discharge)",
        "An EpisodeOfCare reached status finished.",
        "EpisodeOfCare",
        ("create", "update"),
        (_PATIENT,),
        previous="status:not=finished",
        current="status=finished",
        require_both=True,
    ),
)
BY_URL = {t.url: t for t in TOPICS}
TYPES = frozenset(t.resource for t in TOPICS)


def _trigger(topic: Topic) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "description": topic.description,
        "resource": topic.resource,
        "supportedInteraction": list(topic.interactions),
    }
    if topic.previous or topic.current:
        criteria: dict[str, Any] = {}
        if topic.previous:
            criteria["previous"] = topic.previous
            criteria["resultForCreate"] = "test-passes"
        if topic.current:
            criteria["current"] = topic.current
        criteria["requireBoth"] = topic.require_both
        trigger["queryCriteria"] = criteria
    if topic.changed:
        trigger["fhirPathCriteria"] = (
            f"%previous.empty() or %previous.{topic.changed} != %current.{topic.changed}"
        )
    return trigger


def topic_resource(topic: Topic) -> dict[str, Any]:
    """The SubscriptionTopic resource describing a topic."""
    return {
        "resourceType": "SubscriptionTopic",
        "id": topic.id,
        "url": topic.url,
        "title": topic.title,
        "status": "active",
        "description": topic.description,
        "resourceTrigger": [_trigger(topic)],
        "canFilterBy": [
            {"resource": topic.resource, "filterParameter": p, "filterDefinition": d, "description": text}
            for p, d, text in topic.filters
        ],
        "notificationShape": [{"resource": topic.resource}],
    }


@lru_cache(maxsize=64)
def _tests(type_: str, query: str) -> tuple[Any, ...]:
    from urllib.parse import parse_qsl

    from server.fhir.search.params import parse_search

    params = tuple(parse_qsl(query, keep_blank_values=True))
    return parse_search(FhirRequest("GET", "", params=params), (type_,), strict=True).tests


def matches(type_: str, query: str, resource: dict[str, Any]) -> bool:
    """Whether a resource of `type_` fits search parameters `query` (a=b&c=d), judged in memory."""
    from server.fhir.search.matching import matches as match_tests

    return match_tests(_tests(type_, query), resource)


def fires(topic: Topic, previous: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether storing `current` (after `previous`, None for a create) triggers the topic."""
    if current.get("resourceType") != topic.resource:
        return False
    if topic.interactions and ("create" if previous is None else "update") not in topic.interactions:
        return False
    if topic.changed and previous is not None and previous.get(topic.changed) == current.get(topic.changed):
        return False
    if not (topic.previous or topic.current):
        return True
    old = (
        True if previous is None or not topic.previous else matches(topic.resource, topic.previous, previous)
    )
    new = True if not topic.current else matches(topic.resource, topic.current, current)
    return (old and new) if topic.require_both else (old or new) if topic.previous and topic.current else new


def triggered(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[Topic]:
    """The topics a write of `current` triggers."""
    return [t for t in TOPICS if fires(t, previous, current)]


def seed(repo: FhirRepository, ctx: AccessContext, req: FhirRequest) -> list[str]:
    """Store every topic resource that is missing or changed; return what was written."""
    from server.fhir.operations.terminology import store_missing

    return store_missing(repo, ctx, req, [topic_resource(t) for t in TOPICS])


def declare(statement: dict[str, Any], topics: Sequence[Topic] = TOPICS) -> None:
    """Advertise the topics on the Subscription entry of a CapabilityStatement (the IG's extension)."""
    rest = statement["rest"][0]
    entry = next((e for e in rest["resource"] if e["type"] == "Subscription"), None)
    if entry is None:
        return
    entry.setdefault("extension", []).extend(
        {"url": CAPABILITY_TOPIC, "valueCanonical": t.url} for t in topics
    )


capabilities.contribute(lambda statement, _req: declare(statement))
