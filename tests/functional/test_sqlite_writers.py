"""Concurrent writers through the app: all succeed, the trail stays intact (SQLite and PostgreSQL).

On SQLite the writes take turns in the writer queue (server/store/sqlite_queue.py): every
session's write transaction and the audit group commit's raw connection go through it, and no
turn is left held afterwards. PostgreSQL has no queue and must behave as before.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from server.store import sqlite_queue
from tests.conftest import FhirClient


def _engine(app: Any) -> sa.Engine:
    return app.extensions["rehabfhir.engine"]  # type: ignore[no-any-return]


def test_sixteen_threads_create_read_and_update_at_once(app: Any, fhir: FhirClient) -> None:
    engine = _engine(app)
    queue = sqlite_queue.queue_for(str(engine.url.database)) if engine.dialect.name == "sqlite" else None
    turns = queue.turns if queue else 0
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": "Queue"}]})
    errors: list[str] = []
    created: list[str] = []
    start = threading.Barrier(16)

    def client() -> None:
        http = FhirClient(app.test_client())
        start.wait()
        for i in range(4):
            r = http.call(
                "POST",
                "/Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"w{i}"},
                    "subject": {"reference": f"Patient/{patient['id']}"},
                },
            )
            if r.status_code != 201:
                errors.append(r.get_data(as_text=True))
                continue
            obs = r.get_json()
            created.append(obs["id"])
            r = http.call("GET", f"/Patient/{patient['id']}")  # a read: audit group commit
            if r.status_code != 200:
                errors.append(r.get_data(as_text=True))
            r = http.call("PUT", f"/Observation/{obs['id']}", {**obs, "status": "amended"})
            if r.status_code != 200:
                errors.append(r.get_data(as_text=True))

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(set(created)) == 64
    with engine.connect() as conn:
        versions = conn.execute(
            sa.text(
                "SELECT max(version) FROM resource WHERE type = 'Observation' AND id IN :ids GROUP BY id"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": created},
        ).scalars()
        assert sorted(versions) == [2] * 64  # each created, then updated once
    r = fhir.call("GET", "/AuditEvent/$verify")
    assert r.status_code == 200
    assert {p["name"]: p.get("valueString") for p in r.get_json()["parameter"]}["result"] == "intact"
    if queue is not None:
        # Every create and update, their tokens and the reads' audit groups took a turn, in order.
        assert queue.turns - turns >= 64 * 2
        assert not queue._busy and not queue._waiters
