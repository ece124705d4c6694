"""The outbox reads a transaction's live subscriptions once, not once per written resource (issue 15).

server.store.subscriptions.live_for caches them on the session for one database transaction; the
events are still numbered one per matching write, in order, and a subscription created between two
transactions is seen by the second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from server.store import subscriptions as store
from server.store.repository import SqlRepository
from tests.conftest import FhirClient
from tests.functional import test_subscriptions as subs

pytestmark = pytest.mark.pg
N = 12
receiver = subs.receiver
worker = subs.worker


def _bundle(n: int) -> dict[str, Any]:
    entry = {"request": {"method": "POST", "url": "Observation"}, "resource": subs.obs("a", (subs.PT, "tug"))}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * n}


@pytest.fixture
def live_selects(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SELECTs on subscription_state the app's engine runs while the test does.

    Through SQLAlchemy, and (PostgreSQL) those queued to go out in a write's pipeline.
    """
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and "from subscription_state" in text:
            seen.append(text)

    plain = SqlRepository.queue_query

    def queued(self: SqlRepository, sql: str, params: Any, done: Any) -> None:
        count(None, None, sql)
        plain(self, sql, params, done)

    monkeypatch.setattr(SqlRepository, "queue_query", queued)
    engine = app.extensions["rehabfhir.engine"]
    sa.event.listen(engine, "before_cursor_execute", count)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", count)


def _numbers(app: Any, id_: str) -> list[int]:
    with app.extensions["rehabfhir.sessions"]() as session:
        return [e.number for e in store.events(session, id_, 1, 10**6, 10**6)]


def test_a_transaction_bundle_reads_live_subscriptions_once(
    app: Any, fhir: FhirClient, worker: subs.DeliveryWorker, receiver: subs.Receiver, live_selects: list[str]
) -> None:
    subs.patients(fhir, "a")
    before = fhir.call("POST", "/", _bundle(N))  # nobody subscribed: still one look, no events
    assert before.status_code == 200, before.get_data(as_text=True)
    assert len(live_selects) == 1

    sid = subs.subscribe(fhir, worker, subs.subscription("measure-observation", receiver.url))
    live_selects.clear()
    r = fhir.call("POST", "/", _bundle(N))  # a later transaction sees the new subscription
    assert r.status_code == 200, r.get_data(as_text=True)
    assert len(live_selects) == 1, live_selects
    assert _numbers(app, sid) == list(range(1, N + 1))

    worker.run_until_idle()
    created = {
        "Observation/" + e["response"]["location"].split("/Observation/")[1].split("/")[0]
        for e in r.get_json()["entry"]
    }
    assert sorted(receiver.focus()) == sorted(created)


def test_the_cache_lives_for_one_transaction(
    app: Any, fhir: FhirClient, worker: subs.DeliveryWorker, receiver: subs.Receiver, live_selects: list[str]
) -> None:
    sid = subs.subscribe(fhir, worker, subs.subscription("measure-observation", receiver.url))
    with app.extensions["rehabfhir.sessions"]() as session:
        topic = store.get(session, sid).topic
        live_selects.clear()
        assert [s.id for s in store.live_for(session, [topic])] == [sid]
        assert [s.id for s in store.live_for(session, [topic])] == [sid]
        assert len(live_selects) == 1
        store.forget(session, sid)  # stopped in this transaction: read again
        assert store.live_for(session, [topic]) == []
        session.rollback()  # dropped at the end: the next transaction reads it (live again) afresh
        assert store.LIVE_CACHE not in session.info
        assert [s.id for s in store.live_for(session, [topic])] == [sid]
        session.commit()
        assert store.LIVE_CACHE not in session.info
    assert len(live_selects) == 3
