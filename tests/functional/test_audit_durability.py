"""Durability: kill -9 the server right after a 201, or in the middle of a transaction bundle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa

from tests.conftest import spawn_server
from tests.conftest import token_for


@contextlib.contextmanager
def killable_server(database_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`rehabfhir serve` in its own process group, so the test can SIGKILL master and workers."""
    proc, base = spawn_server(database_url, workers=1, new_session=True)
    try:
        TOKENS[base] = token_for(base, database_url)
        yield base, proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's process group (master and workers, no shutdown at all)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


TOKENS: dict[str, str] = {}


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if TOKENS.get(base):
        headers["Authorization"] = "Bearer " + TOKENS[base]
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"null")


def audit_rows(database_url: str, sql: str, **params: Any) -> list[Any]:
    from server.store.session import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def test_kill_after_201_keeps_resource_history_and_audit(app: Any, database_url: str) -> None:
    with killable_server(database_url) as (base, proc):
        status, created = call(
            base, "POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "Kill"}]}
        )
        assert status == 201
        kill(proc)
    ref = f"Patient/{created['id']}"
    with killable_server(database_url) as (base, _proc):
        assert call(base, "GET", f"/{ref}")[0] == 200
        status, history = call(base, "GET", f"/{ref}/_history")
        assert status == 200 and history["total"] == 1
    rows = audit_rows(
        database_url,
        "SELECT subtype, outcome FROM audit_event WHERE resource = :r ORDER BY pk",
        r=f"{ref}/_history/1",
    )
    assert [tuple(r) for r in rows] == [("create", 0), ("read", 0)]  # the create, then the read after restart


def test_kill_mid_transaction_leaves_all_or_nothing(app: Any, database_url: str) -> None:
    n = 400
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": f"T{i}"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(n)
        ],
    }
    with killable_server(database_url) as (base, proc):

        def send() -> None:
            with contextlib.suppress(Exception):
                call(base, "POST", "/", bundle)

        worker = threading.Thread(target=send)
        worker.start()
        time.sleep(0.3)
        kill(proc)
        worker.join(60)
    resources = audit_rows(database_url, "SELECT count(*) FROM resource WHERE type = 'Patient'")[0][0]
    creates = audit_rows(database_url, "SELECT count(*) FROM audit_event WHERE subtype = 'create'")[0][0]
    assert resources in (0, n)
    assert (
        creates == resources
    )  # every stored resource has its AuditEvent, and no AuditEvent lacks its resource
