"""Topic-based Subscriptions end to end (issue 19): a real HTTP receiver on loopback gets the notifications.

The app's delivery thread is paused; each test drives a DeliveryWorker of its own (retries without
waiting), so what was sent when is deterministic.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from server.api.subscription_routes import WORKER
from server.api.subscription_routes import seed_topics
from server.fhir.subscriptions import subscription as sub
from server.fhir.subscriptions import topics
from server.store import subscriptions as store
from server.subscriptions.worker import DeliveryConfig
from server.subscriptions.worker import DeliveryWorker
from server.subscriptions.worker import post
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token

pytestmark = pytest.mark.pg
PT = topics.PT_MEASURES
PLAN = {
    "resourceType": "CarePlan",
    "status": "active",
    "intent": "plan",
    "subject": {"reference": "Patient/a"},
}


class Receiver:
    """An HTTP server on loopback that records each POST (headers, JSON) and can be told to fail."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_next = 0
        self.always_fail = False
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.always_fail or receiver.fail_next > 0:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    self.send_response(500)
                else:
                    receiver.received.append((dict(self.headers), orjson.loads(body)))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statuses(self, kind: str | None = "event-notification") -> list[dict[str, Any]]:
        """The SubscriptionStatus of each notification received (of one kind)."""
        out = [b["entry"][0]["resource"] for _, b in self.received]
        return [s for s in out if kind is None or s["type"] == kind]

    def numbers(self, subscription_id: str | None = None) -> list[int]:
        """Event numbers received, in arrival order."""
        return [
            int(e["eventNumber"])
            for s in self.statuses()
            if subscription_id is None or s["subscription"]["reference"] == f"Subscription/{subscription_id}"
            for e in s.get("notificationEvent", [])
        ]

    def focus(self) -> list[str]:
        """The focus references received, in arrival order (without base and version)."""
        return [
            e["focus"]["reference"].split("/fhir/", 1)[1].split("/_history")[0]
            for s in self.statuses()
            for e in s.get("notificationEvent", [])
            if "focus" in e
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def worker(app: Any) -> Iterator[DeliveryWorker]:
    """The app's delivery thread paused; a worker driven by the test (no waiting between retries)."""
    app.extensions[WORKER].stop()
    seed_topics(app, app.config["REHABFHIR_SETTINGS"])
    config = DeliveryConfig(worker=False, retry_seconds=0.0, max_attempts=3)
    app_worker = app.extensions[WORKER]
    yield DeliveryWorker(
        app.extensions["rehabfhir.sessions"], config, app_worker.grants, audit=app_worker.audit
    )
    # Left paused: the tests after these write nothing anyone subscribed to (the tables are emptied).


def subscription(
    topic: str, endpoint: str, content: str = "id-only", *filters: str, **channel: Any
) -> dict[str, Any]:
    ext = [{"url": sub.CONTENT, "valueCode": content}]
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "tests",
        "criteria": topics.BASE + topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": ext},
            **channel,
        },
    }
    if filters:
        resource["_criteria"] = {"extension": [{"url": sub.FILTER, "valueString": f} for f in filters]}
    return resource


def subscribe(client: FhirClient, worker: DeliveryWorker, body: dict[str, Any]) -> str:
    r = client.call("POST", "/Subscription", body)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.get_json()["status"] == "requested"
    worker.run_until_idle()  # the handshake
    return str(r.get_json()["id"])


def obs(patient: str, *codings: tuple[str, str], value: float = 10.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "s", "system": "http://unitsofmeasure.org", "code": "s"},
    }


def bare(resource: dict[str, Any]) -> dict[str, Any]:
    """A stored resource without its meta (to PUT it back changed)."""
    return {k: v for k, v in resource.items() if k != "meta"}


def patients(fhir: FhirClient, *ids: str) -> None:
    for id_ in ids:
        assert fhir.call("PUT", f"/Patient/{id_}", {"resourceType": "Patient", "id": id_}).status_code in (
            200,
            201,
        )


def audited(app: Any, subscription_id: str) -> list[tuple[str, int]]:
    with app.extensions["rehabfhir.engine"].connect() as conn:
        rows = conn.execute(
            sa.text("SELECT subtype, outcome FROM audit_event WHERE resource = :r ORDER BY pk"),
            {"r": f"Subscription/{subscription_id}"},
        )
        return [(s, o) for s, o in rows if s in ("handshake", "heartbeat", "event-notification")]


# -- handshake and activation ----------------------------------------------------------------------


def test_handshake_activates_and_carries_the_headers(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    body = subscription("careplan-changed", receiver.url, header=["Authorization: Bearer receiver-secret"])
    id_ = subscribe(fhir, worker, body)
    headers, bundle = receiver.received[0]
    assert headers["Authorization"] == "Bearer receiver-secret"
    assert headers["Content-Type"] == "application/fhir+json"
    status = bundle["entry"][0]["resource"]
    assert (bundle["type"], status["resourceType"], status["type"]) == (
        "history",
        "SubscriptionStatus",
        "handshake",
    )
    assert status["subscription"] == {"reference": f"Subscription/{id_}"}
    assert status["topic"] == topics.BASE + "careplan-changed"
    stored = fhir.call("GET", f"/Subscription/{id_}").get_json()
    assert stored["status"] == "active"
    assert stored["channel"]["header"] == ["Authorization: [redacted]"]  # the secret is not served
    assert audited(app, id_) == [("handshake", 0)]
    # The owner PUTs the served resource back (a new handshake): the stored value is kept.
    again = fhir.call("PUT", f"/Subscription/{id_}", bare(stored))
    assert again.status_code == 200 and again.get_json()["status"] == "requested"
    worker.run_until_idle()
    assert [h["Authorization"] for h, _ in receiver.received] == ["Bearer receiver-secret"] * 2
    fhir.call("PUT", "/Patient/a", {"resourceType": "Patient", "id": "a"})
    fhir.create(PLAN)
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1]  # numbering started over with the new request
    fhir.call("PUT", f"/Subscription/{id_}", bare(stored))
    fhir.create(PLAN)  # an event of the re-requested subscription: number 1 again, no clash
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1, 1]
    unknown = {**bare(stored), "channel": {**stored["channel"], "header": ["X-Other: [redacted]"]}}
    r = fhir.call("PUT", f"/Subscription/{id_}", unknown)
    assert r.status_code == 422 and r.get_json()["issue"][0]["expression"] == [
        "Subscription.channel.header[0]"
    ]


# -- notifications per topic, filters, payload kinds ---------------------------------------------


def test_each_topic_notifies_what_it_defines(
    fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    ids = {t.id: subscribe(fhir, worker, subscription(t.id, receiver.url)) for t in topics.TOPICS}
    receiver.received.clear()
    patients(fhir, "a")
    measure = fhir.create(obs("a", (PT, "tug")))
    fhir.create(obs("a", ("http://loinc.org", "8867-4")))  # no catalog code: no event
    plan = fhir.create(PLAN)
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "walk"},
        "subject": {"reference": "Patient/a"},
    }
    goal = fhir.create(goal)
    fhir.call("PUT", f"/Goal/{goal['id']}", {**bare(goal), "note": [{"text": "same status"}]})
    fhir.call("PUT", f"/Goal/{goal['id']}", {**bare(goal), "lifecycleStatus": "completed"})
    visit = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/a"},
    }
    visit = fhir.create(visit)
    fhir.call("PUT", f"/Encounter/{visit['id']}", {**bare(visit), "status": "finished"})
    episode = fhir.create(
        {"resourceType": "EpisodeOfCare", "status": "finished", "patient": {"reference": "Patient/a"}}
    )
    worker.run_until_idle()
    by_topic = {t: receiver.numbers(i) for t, i in ids.items()}
    assert by_topic == {
        "measure-observation": [1],
        "careplan-changed": [1],
        "goal-status-changed": [1, 2],
        "encounter-finished": [1],
        "episode-finished": [1],
    }
    assert sorted(receiver.focus()) == sorted(
        [f"Observation/{measure['id']}", f"CarePlan/{plan['id']}", f"Goal/{goal['id']}", f"Goal/{goal['id']}"]
        + [f"Encounter/{visit['id']}", f"EpisodeOfCare/{episode['id']}"]
    )


def test_filters_and_payload_kinds(fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver) -> None:
    full = subscribe(
        fhir, worker, subscription("measure-observation", receiver.url, "full-resource", "patient=Patient/a")
    )
    empty = subscribe(
        fhir, worker, subscription("measure-observation", receiver.url, "empty", f"Observation?code={PT}|tug")
    )
    ids = subscribe(fhir, worker, subscription("measure-observation", receiver.url, "id-only"))
    receiver.received.clear()
    patients(fhir, "a", "b")
    a_tug = fhir.create(obs("a", (PT, "tug")))
    b_tug = fhir.create(obs("b", (PT, "tug")))
    a_pain = fhir.create(obs("a", (PT, "pain-nrs")))
    worker.run_until_idle()
    assert (
        receiver.numbers(full) == [1, 2]
        and receiver.numbers(empty) == [1, 2]
        and receiver.numbers(ids) == [1, 2, 3]
    )
    bundles = {b["entry"][0]["resource"]["subscription"]["reference"]: [] for _, b in receiver.received}
    for _, b in receiver.received:
        bundles[b["entry"][0]["resource"]["subscription"]["reference"]].append(b)
    sent_full = [e["resource"] for b in bundles[f"Subscription/{full}"] for e in b["entry"][1:]]
    assert [r["id"] for r in sent_full] == [a_tug["id"], a_pain["id"]]
    assert sent_full[0]["code"] == a_tug["code"]
    for b in bundles[f"Subscription/{empty}"]:  # empty: numbers only, no focus, no entries
        assert len(b["entry"]) == 1 and "focus" not in b["entry"][0]["resource"]["notificationEvent"][0]
    id_only = [e for b in bundles[f"Subscription/{ids}"] for e in b["entry"][1:]]
    assert all("resource" not in e for e in id_only)
    assert [e["fullUrl"].rsplit("/", 1)[1] for e in id_only] == [a_tug["id"], b_tug["id"], a_pain["id"]]


# -- failures, order, replay, restart ----------------------------------------------------------------


def test_retry_after_the_receiver_fails_keeps_order(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("careplan-changed", receiver.url))
    receiver.received.clear()
    receiver.fail_next = 2
    patients(fhir, "a")
    for _ in range(3):
        fhir.create(PLAN)
    worker.run_once()  # first attempt: 500
    assert fhir.call("GET", f"/Subscription/{id_}").get_json()["status"] == "error"
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1, 2, 3]  # each once, in order, after two failures
    assert fhir.call("GET", f"/Subscription/{id_}").get_json()["status"] == "active"
    assert [o for s, o in audited(app, id_) if s == "event-notification"] == [8, 8, 0, 0, 0]


def test_an_endpoint_that_keeps_failing_is_turned_off(
    fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("careplan-changed", receiver.url))
    receiver.always_fail = True
    patients(fhir, "a")
    fhir.create(PLAN)
    worker.run_until_idle()
    stored = fhir.call("GET", f"/Subscription/{id_}").get_json()
    assert stored["status"] == "off" and "attempt 3 of 3" in stored["error"]
    fhir.create(PLAN)
    receiver.always_fail = False
    assert worker.run_until_idle() == 0 and receiver.numbers(id_) == []  # off: nothing more


def test_a_failed_handshake_is_retried_then_heartbeats_follow(
    fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    receiver.fail_next = 1
    beat = [{"url": sub.HEARTBEAT, "valueUnsignedInt": 1}]
    r = fhir.call("POST", "/Subscription", subscription("careplan-changed", receiver.url, extension=beat))
    id_ = r.get_json()["id"]
    worker.run_once()  # the handshake fails: still requested, retried
    assert fhir.call("GET", f"/Subscription/{id_}").get_json()["status"] == "requested"
    worker.run_until_idle()
    assert [s["type"] for s in receiver.statuses(None)] == ["handshake"]
    assert fhir.call("GET", f"/Subscription/{id_}").get_json()["status"] == "active"
    assert worker.run_until_idle() == 0  # the heartbeat is not due yet
    time.sleep(1.1)
    worker.run_until_idle()
    assert [s["type"] for s in receiver.statuses(None)] == ["handshake", "heartbeat"]


def test_a_deleted_subscription_is_never_notified(
    fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("careplan-changed", receiver.url))
    receiver.received.clear()
    patients(fhir, "a")
    fhir.create(PLAN)
    assert fhir.call("DELETE", f"/Subscription/{id_}").status_code in (200, 204)
    fhir.create(PLAN)
    assert worker.run_until_idle() == 0 and receiver.received == []


def test_subscription_end(fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver) -> None:
    past = fhir.call(
        "POST",
        "/Subscription",
        {**subscription("careplan-changed", receiver.url), "end": "2020-01-01T00:00:00Z"},
    )
    assert past.status_code == 422 and past.get_json()["issue"][0]["expression"] == ["Subscription.end"]
    soon = (
        (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    id_ = subscribe(fhir, worker, {**subscription("careplan-changed", receiver.url), "end": soon})
    time.sleep(1.6)
    patients(fhir, "a")
    fhir.create(PLAN)  # after the end: no event
    worker.run_until_idle()
    assert receiver.numbers(id_) == []
    stored = fhir.call("GET", f"/Subscription/{id_}").get_json()
    assert (stored["status"], stored["error"]) == ("off", "Subscription.end reached")


def test_events_and_status_operations(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("measure-observation", receiver.url))
    patients(fhir, "a")
    made = [fhir.create(obs("a", (PT, "tug"), value=v))["id"] for v in (1, 2, 3, 4)]
    worker.run_until_idle()
    r = fhir.call(
        "GET", f"/Subscription/{id_}/$events?eventsSinceNumber=2&eventsUntilNumber=3&content=full-resource"
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    bundle = r.get_json()
    status = bundle["entry"][0]["resource"]
    assert status["type"] == "query-event"
    assert [e["eventNumber"] for e in status["notificationEvent"]] == ["2", "3"]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == made[1:3]
    st = fhir.call("GET", f"/Subscription/{id_}/$status").get_json()["entry"][0]["resource"]
    assert (st["type"], st["status"], st["eventsSinceSubscriptionStart"]) == ("query-status", "active", "4")
    other = FhirClient(app.test_client(), client_credentials_token(app))
    refused = other.call("GET", f"/Subscription/{id_}/$events")
    assert refused.status_code == 404 and refused.get_json()["issue"][0]["code"] == "not-found"  # not its own
    assert FhirClient(app.test_client(), "").call("GET", f"/Subscription/{id_}/$status").status_code == 401
    no_scope = FhirClient(app.test_client(), client_credentials_token(app, "system/Observation.rs"))
    for operation in ("$status", "$events"):
        r = no_scope.call("GET", f"/Subscription/{id_}/{operation}")
        assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    for number in ("x", "%C2%B2"):  # '²' passes str.isdigit but is no event number
        bad = fhir.call("GET", f"/Subscription/{id_}/$events?eventsSinceNumber={number}")
        assert bad.status_code == 400 and bad.get_json()["issue"][0]["expression"] == ["eventsSinceNumber"]
    beyond = fhir.call("GET", f"/Subscription/{id_}/$events?eventsSinceNumber=3&eventsUntilNumber={10**30}")
    assert beyond.status_code == 200  # past any BIGINT: every event from 3 on
    events = beyond.get_json()["entry"][0]["resource"]["notificationEvent"]
    assert [e["eventNumber"] for e in events] == ["3", "4"]


def test_old_delivered_events_are_pruned(
    fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("careplan-changed", receiver.url))
    patients(fhir, "a")
    fhir.create(PLAN)
    worker.run_until_idle()  # event 1 delivered
    receiver.always_fail = True
    fhir.create(PLAN)
    worker.run_once()  # event 2 not delivered
    worker.config.event_days = 1
    assert worker.prune() == 0  # none old enough
    worker.config.event_days = -1  # everything is "old": only the delivered one goes
    assert worker.prune() == 1
    events = fhir.call("GET", f"/Subscription/{id_}/$events").get_json()["entry"][0]["resource"]
    assert [e["eventNumber"] for e in events["notificationEvent"]] == ["2"]


def test_restart_in_the_middle_of_a_backlog(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("measure-observation", receiver.url))
    receiver.received.clear()
    patients(fhir, "a")
    for v in range(5):
        fhir.create(obs("a", (PT, "tug"), value=v))
    worker.run_once()  # event 1 delivered
    # A worker that dies holding the lease after sending event 2 but before recording it.
    dying = DeliveryWorker(
        app.extensions["rehabfhir.sessions"], replace(worker.config, lease_seconds=0.2), worker.grants
    )
    with app.extensions["rehabfhir.sessions"]() as session:
        state = store.claim(session, dying.id, timedelta(seconds=0.2))
    assert state is not None and state.delivered == 1
    with app.extensions["rehabfhir.sessions"]() as session:
        event = store.events(session, id_, 2, 2, 1)
    post(state, sub.notification(replace(state, events=2), "event-notification", [(event[0], None)]))
    assert worker.run_once() is False  # leased by the dead worker
    time.sleep(0.3)
    restarted = DeliveryWorker(app.extensions["rehabfhir.sessions"], worker.config, worker.grants)
    restarted.run_until_idle()
    assert receiver.numbers(id_) == [1, 2, 2, 3, 4, 5]  # at least once, never out of order


def test_two_workers_share_a_backlog_in_order(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("measure-observation", receiver.url))
    receiver.received.clear()
    patients(fhir, "a")
    for v in range(8):
        fhir.create(obs("a", (PT, "tug"), value=v))
    # Two processes' workers at once: the lease lets one at a time send, oldest event first.
    workers = [
        DeliveryWorker(app.extensions["rehabfhir.sessions"], worker.config, worker.grants) for _ in range(2)
    ]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    worker.run_until_idle()  # whatever a lease held back when both stopped
    assert receiver.numbers(id_) == list(range(1, 9))


# -- security ---------------------------------------------------------------------------------------


def test_a_patient_scoped_subscriber_never_hears_of_another_patient(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    patients(fhir, "a", "b")
    scope = "system/Subscription.cruds system/Observation.rs?patient=Patient/a"
    me = FhirClient(app.test_client(), client_credentials_token(app, scope))
    id_ = subscribe(me, worker, subscription("measure-observation", receiver.url, "full-resource"))
    receiver.received.clear()
    mine = fhir.create(obs("a", (PT, "tug")))
    fhir.create(obs("b", (PT, "tug")))
    fhir.create(obs("b", (PT, "pain-nrs")))
    worker.run_until_idle()
    assert receiver.numbers(id_) == [1]
    assert receiver.focus() == [f"Observation/{mine['id']}"]
    sent = [e.get("resource", {}).get("subject") for _, b in receiver.received for e in b["entry"][1:]]
    assert sent == [{"reference": "Patient/a"}]
    events = me.call("GET", f"/Subscription/{id_}/$events").get_json()
    assert [e["eventNumber"] for e in events["entry"][0]["resource"]["notificationEvent"]] == ["1"]


def test_a_narrowed_grant_withholds_at_delivery(
    app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver
) -> None:
    id_ = subscribe(fhir, worker, subscription("measure-observation", receiver.url, "full-resource"))
    receiver.received.clear()
    patients(fhir, "a")
    fhir.create(obs("a", (PT, "tug")))
    with app.extensions["rehabfhir.sessions"]() as session:  # the grant no longer reads Observation
        store.update(session, id_, None, grant_scopes="system/Patient.rs")
    worker.run_until_idle()
    assert receiver.received == []
    with app.extensions["rehabfhir.sessions"]() as session:
        assert store.get(session, id_).delivered == 1  # the number is skipped, not retried


@pytest.mark.parametrize(
    ("change", "status", "code", "where"),
    [
        ({"criteria": "https://example.org/SubscriptionTopic/x"}, 422, "processing", "Subscription.criteria"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://example.org/hook"}},
            422,
            "processing",
            "Subscription.channel.endpoint",
        ),
        (
            {"channel": {"type": "email", "endpoint": "https://example.org"}},
            422,
            "processing",
            "Subscription.channel.type",
        ),
        (
            {"_criteria": {"extension": [{"url": sub.FILTER, "valueString": "status=final"}]}},
            422,
            "processing",
            "Subscription.criteria.extension[0]",
        ),
        (
            {"_criteria": {"extension": [{"url": sub.FILTER, "valueString": "CarePlan?patient=Patient/a"}]}},
            422,
            "processing",
            "Subscription.criteria.extension[0]",
        ),
        ({"channel": "rest-hook"}, 422, "processing", "Subscription.channel.type"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "header": "X-Key: 1"}},
            422,
            "processing",
            "Subscription.channel.header",
        ),
    ],
    ids=[
        "unknown-topic",
        "plain-http",
        "channel",
        "filter-not-allowed",
        "filter-other-type",
        "channel-not-an-object",
        "header-not-a-list",
    ],
)
def test_bad_subscriptions_are_refused(
    fhir: FhirClient,
    worker: DeliveryWorker,
    receiver: Receiver,
    change: dict[str, Any],
    status: int,
    code: str,
    where: str,
) -> None:
    r = fhir.call("POST", "/Subscription", {**subscription("measure-observation", receiver.url), **change})
    assert r.status_code == status, r.get_data(as_text=True)
    issue = r.get_json()["issue"][0]
    assert (issue["code"], issue["expression"]) == (code, [where])


def test_refused_tokens(app: Any, fhir: FhirClient, worker: DeliveryWorker, receiver: Receiver) -> None:
    body = subscription("measure-observation", receiver.url)
    assert FhirClient(app.test_client(), "").call("POST", "/Subscription", body).status_code == 401
    no_subscription = FhirClient(app.test_client(), client_credentials_token(app, "system/Observation.rs"))
    assert no_subscription.call("POST", "/Subscription", body).status_code == 403
    no_observation = FhirClient(app.test_client(), client_credentials_token(app, "system/Subscription.cruds"))
    r = no_observation.call("POST", "/Subscription", body)
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    id_ = subscribe(fhir, worker, body)
    other = FhirClient(app.test_client(), client_credentials_token(app))
    assert other.call("PUT", f"/Subscription/{id_}", {**body, "id": id_}).status_code == 404  # not revealed
    patch = fhir.call(
        "PATCH",
        f"/Subscription/{id_}",
        [{"op": "replace", "path": "/status", "value": "active"}],
        content_type="application/json-patch+json",
    )
    assert patch.status_code == 405
    conditional = fhir.call("PUT", "/Subscription?status=active", body)
    assert conditional.status_code == 405 and conditional.get_json()["issue"][0]["code"] == "not-supported"


# -- the delivery thread of a real server, across a restart ------------------------------------------


def wait_for(check: Any, seconds: float = 15.0) -> None:
    """Wait (briefly) until check() is true: the server's thread delivers on its own."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not delivered in time"
        time.sleep(0.05)


def test_a_running_server_delivers_and_resumes_after_a_restart(
    app: Any, database_url: str, fhir: FhirClient, receiver: Receiver
) -> None:
    import requests

    from tests.conftest import running_server
    from tests.conftest import token_for

    env = {"REHABFHIR_SUBSCRIPTION_POLL_SECONDS": "0.1"}
    patients(fhir, "a")
    with running_server(database_url, workers=1, env=env) as base:
        headers = {
            "Authorization": "Bearer " + token_for(base, database_url),
            "Content-Type": "application/fhir+json",
        }
        body = orjson.dumps(subscription("measure-observation", receiver.url))
        r = requests.post(base + "/Subscription", data=body, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        id_ = r.json()["id"]
        wait_for(lambda: len(receiver.statuses("handshake")) == 1)
        for v in (1, 2):
            made = requests.post(
                base + "/Observation",
                data=orjson.dumps(obs("a", (PT, "tug"), value=v)),
                headers=headers,
                timeout=30,
            )
            assert made.status_code == 201, made.text
        wait_for(lambda: receiver.numbers(id_) == [1, 2])
    for v in (3, 4):  # written while no server runs (by the in-process app): recorded in the outbox
        fhir.create(obs("a", (PT, "tug"), value=v))
    assert receiver.numbers(id_) == [1, 2]
    with running_server(database_url, workers=1, env=env):
        wait_for(lambda: receiver.numbers(id_) == [1, 2, 3, 4])
