"""SubscriptionTopics (issue 19, slice 1): served, listed in the statement, evaluated as defined."""

from __future__ import annotations

from typing import Any

import pytest

from server.api.subscription_routes import seed_topics
from server.fhir.subscriptions import subscription as sub
from server.fhir.subscriptions import topics
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token

pytestmark = pytest.mark.pg
PT = topics.PT_MEASURES


def test_topics_are_served_and_searchable(app: Any, fhir: FhirClient) -> None:
    written = seed_topics(app, app.config["REHABFHIR_SETTINGS"])  # the app fixture emptied the tables
    assert written == [f"SubscriptionTopic/{t.id}" for t in topics.TOPICS]
    assert seed_topics(app, app.config["REHABFHIR_SETTINGS"]) == []  # unchanged: not written again
    found = fhir.call("GET", "/SubscriptionTopic").get_json()
    by_id = {e["resource"]["id"]: e["resource"] for e in found["entry"]}
    assert sorted(by_id) == sorted(t.id for t in topics.TOPICS)
    encounter = fhir.call("GET", "/SubscriptionTopic/encounter-finished").get_json()
    assert encounter["url"] == topics.BASE + "encounter-finished"
    assert encounter["resourceTrigger"][0]["queryCriteria"] == {
        "previous": "status:not=finished",
        "resultForCreate": "test-passes",
        "current": "status=finished",
        "requireBoth": True,
    }
    measure = by_id["measure-observation"]
    assert [f["filterParameter"] for f in measure["canFilterBy"]] == ["patient", "code"]
    by_url = fhir.call("GET", f"/SubscriptionTopic?url={topics.BASE}goal-status-changed").get_json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == ["goal-status-changed"]


def test_statement_lists_the_topics(fhir: FhirClient) -> None:
    statement = fhir.call("GET", "/metadata").get_json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    listed = [e["valueCanonical"] for e in entry["extension"] if e["url"] == topics.CAPABILITY_TOPIC]
    assert listed == [t.url for t in topics.TOPICS]
    assert sub.SERVER_STATEMENT in statement["instantiates"]
    assert entry["supportedProfile"] == [sub.PROFILE]
    declared = {op["name"]: op["definition"] for op in entry["operation"]}
    assert {n: declared[n] for n in ("status", "events")} == sub.OPERATIONS


def test_topics_need_a_granting_token(app: Any, fhir: FhirClient) -> None:
    seed_topics(app, app.config["REHABFHIR_SETTINGS"])
    assert FhirClient(app.test_client(), "").call("GET", "/SubscriptionTopic").status_code == 401
    other = FhirClient(app.test_client(), client_credentials_token(app, "system/Observation.rs"))
    refused = other.call("GET", "/SubscriptionTopic/careplan-changed")
    assert refused.status_code == 403
    assert refused.get_json()["issue"][0]["code"] == "forbidden"


def _obs(*codings: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "subject": {"reference": "Patient/p1"},
    }


def _with(type_: str, **values: Any) -> dict[str, Any]:
    return {"resourceType": type_, "subject": {"reference": "Patient/p1"}, **values}


@pytest.mark.parametrize(
    ("topic", "previous", "current", "fired"),
    [
        ("measure-observation", None, _obs((PT, "tug")), True),
        ("measure-observation", _obs((PT, "tug")), _obs((PT, "tug"), ("http://loinc.org", "1-8")), True),
        ("measure-observation", None, _obs(("http://loinc.org", "8867-4")), False),
        ("careplan-changed", None, _with("CarePlan", status="active", intent="plan"), True),
        ("careplan-changed", _with("CarePlan", status="draft"), _with("CarePlan", status="active"), True),
        ("goal-status-changed", None, _with("Goal", lifecycleStatus="active"), True),
        (
            "goal-status-changed",
            _with("Goal", lifecycleStatus="active"),
            _with("Goal", lifecycleStatus="completed"),
            True,
        ),
        (
            "goal-status-changed",
            _with("Goal", lifecycleStatus="active"),
            _with("Goal", lifecycleStatus="active"),
            False,
        ),
        (
            "encounter-finished",
            _with("Encounter", status="in-progress"),
            _with("Encounter", status="finished"),
            True,
        ),
        ("encounter-finished", None, _with("Encounter", status="finished"), True),
        ("encounter-finished", None, _with("Encounter", status="in-progress"), False),
        (
            "encounter-finished",
            _with("Encounter", status="finished"),
            _with("Encounter", status="finished"),
            False,
        ),
        (
            "episode-finished",
            _with("EpisodeOfCare", status="active"),
            _with("EpisodeOfCare", status="finished"),
            True,
        ),
        ("episode-finished", None, _with("EpisodeOfCare", status="active"), False),
        ("careplan-changed", None, _with("Goal", lifecycleStatus="active"), False),
    ],
)
def test_topic_triggers(topic: str, previous: Any, current: dict[str, Any], fired: bool) -> None:
    assert topics.fires(topics.BY_URL[topics.BASE + topic], previous, current) is fired
