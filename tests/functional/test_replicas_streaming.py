"""Proof on one machine (issue 18, item 3): two app hosts against a primary and a streaming replica.

A hot standby of the test cluster is started on its own port and data directory
(tests/functional/replica_cluster.py: pg_basebackup, pg_ctl as the postgres user; stopped and
removed afterwards). Two `rehabfhir serve` processes share the primary and the replica. Shown:
reads are served by the replica, a read naming the position of a write made through the other
host sees that write, an export kicked off on one host is served by the other, failed token
requests spread over both hosts are limited as one (exactly the limit passes, then 429 on both),
and once the replica is stopped every read still answers 200 from the primary.
PostgreSQL only (SQLite has no replicas); the replication line it needs in pg_hba.conf is added
when missing (see replica_cluster.allow_replication).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import pathlib
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import fresh_postgres
from tests.conftest import register_client
from tests.conftest import spawn_server
from tests.conftest import token_for
from tests.functional.replica_cluster import streaming_replica

pytestmark = [pytest.mark.server, pytest.mark.replica]
_READS = re.compile(r'^rehabfhir_db_reads_total\{reason="([^"]+)",target="([^"]+)"\} ([0-9.e+]+)$', re.M)
PUBLIC = "http://fhir.clinic.test"
TOKEN_FAILURES = 20  # the token endpoint's limit per address and minute (auth/flask_integration.py)
MAX_LAG = 5.0
_LAG = re.compile(r'^rehabfhir_db_replica_lag_seconds\{replica="[^"]+"\} ([0-9.e+-]+)$', re.M)


def _reads(base: str) -> collections.Counter[str]:
    """Reads this host served, by target ("primary" or the replica's host:port)."""
    text = requests.get(base + "/metrics", timeout=10).text
    counts: collections.Counter[str] = collections.Counter()
    for _reason, target, value in _READS.findall(text):
        counts[target] += int(float(value))
    return counts


@contextlib.contextmanager
def two_hosts(db: str, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Two `rehabfhir serve` processes (one worker each) started and stopped side by side."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda _: spawn_server(db, 1, env), range(2)))
    try:
        yield started[0][1], started[1][1]
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _lag(base: str) -> list[float]:
    return [float(v) for v in _LAG.findall(requests.get(base + "/metrics", timeout=10).text)]


def test_two_hosts_read_from_a_streaming_replica_and_fall_back_when_it_stops(tmp_path: pathlib.Path) -> None:
    with fresh_postgres() as db, streaming_replica(db) as replica:
        replica_name = f"127.0.0.1:{replica.port}"
        env = {
            "DATABASE_REPLICA_URLS": replica.url(sa.make_url(db).database or ""),
            "REHABFHIR_METRICS_OPEN": "true",
            "REHABFHIR_BASE_URL": PUBLIC,  # one public address behind the load balancer
            "REHABFHIR_EXPORT_DIR": str(tmp_path / "shared-export"),  # one directory every host mounts
            "REHABFHIR_REPLICA_POLL_SECONDS": "0.1",
            # Generous for a loaded test machine (default 1 s): the routing, not the lag, is under test.
            "REHABFHIR_REPLICA_MAX_LAG_SECONDS": str(MAX_LAG),
        }
        with two_hosts(db, env) as (a, b):
            auth = {"Authorization": "Bearer " + token_for(a, db), "Accept": "application/fhir+json"}
            sent = 0

            def get(base: str, path: str, **headers: str) -> Any:
                nonlocal sent
                sent += 1
                r = requests.get(base + path, headers={**auth, **headers}, timeout=30)
                assert r.status_code == 200, r.text
                return r.json()

            # Read-your-writes across hosts: write through one, read through the other naming the position.
            for n in range(10):
                writer, reader = (a, b) if n % 2 else (b, a)
                body = {"resourceType": "Patient", "name": [{"family": f"Streamed{n}"}]}
                w = requests.post(writer + "/Patient", json=body, headers=auth, timeout=30)
                assert w.status_code == 201, w.text
                position = w.headers["X-Commit-Position"]
                read = get(reader, "/Patient/" + w.json()["id"], **{"X-Read-After": position})
                assert read["name"][0]["family"] == f"Streamed{n}"
                updated = {**w.json(), "name": [{"family": f"Renamed{n}"}]}
                u = requests.put(
                    reader + "/Patient/" + w.json()["id"], json=updated, headers=auth, timeout=30
                )
                assert u.status_code == 200, u.text
                again = get(
                    writer, "/Patient/" + w.json()["id"], **{"X-Read-After": u.headers["X-Commit-Position"]}
                )
                assert again["meta"]["versionId"] == "2" and again["name"][0]["family"] == f"Renamed{n}"

            # Plain reads and searches: the replica serves them once the monitor has seen it catch up.
            for base in (a, b):
                for _ in range(15):
                    assert get(base, "/Patient?family=Renamed3")["total"] == 1
            by_target = _reads(a) + _reads(b)
            assert sum(by_target.values()) == sent
            assert by_target[replica_name] >= 20, by_target
            assert all(0 <= lag < MAX_LAG for lag in _lag(a) + _lag(b))

            # Export: kicked off through one host, reads on the replica, status and file through the other.
            kick = requests.get(
                a + "/$export?_type=Patient", headers={**auth, "Prefer": "respond-async"}, timeout=30
            )
            assert kick.status_code == 202, kick.text
            status = b + kick.headers["Content-Location"].removeprefix(PUBLIC)
            deadline = time.monotonic() + 30
            while (polled := requests.get(status, headers=auth, timeout=30)).status_code == 202:
                assert time.monotonic() < deadline, "export did not finish"
                time.sleep(0.2)
            assert polled.status_code == 200, polled.text
            (output,) = polled.json()["output"]
            ndjson = requests.get(b + output["url"].removeprefix(PUBLIC), headers=auth, timeout=30)
            assert ndjson.status_code == 200 and len(ndjson.text.splitlines()) == 10
            exported = _reads(a) + _reads(b)
            assert exported[replica_name] == by_target[replica_name] + 1  # the job read from the replica
            assert exported["primary"] == by_target["primary"]

            # Rate limiting as one: failed token requests alternate between the hosts (one address,
            # 127.0.0.1); exactly the limit is answered 401, then both hosts answer 429, even to the
            # right secret. The hosts share nothing but the database.
            client_id, secret = register_client(db, "system/*.rs")
            form = {"grant_type": "client_credentials", "scope": "system/*.rs"}

            def token(base: str, password: str) -> requests.Response:
                return requests.post(base + "/auth/token", data=form, auth=(client_id, password), timeout=30)

            codes = [token((a, b)[n % 2], f"guess{n}").status_code for n in range(TOKEN_FAILURES)]
            assert codes == [401] * TOKEN_FAILURES
            for base in (a, b):
                refused = token(base, secret)
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"] == "too_many_requests"
                assert 1 <= int(refused.headers["Retry-After"]) <= 60

            # The replica stops: every read still answers (from the primary), none fails.
            replica.stop()
            before = _reads(a) + _reads(b)
            for base in (a, b):
                for n in range(10):
                    assert get(base, "/Patient?family=Renamed" + str(n))["total"] == 1
            after = _reads(a) + _reads(b)
            assert after[replica_name] == before[replica_name]
            assert after["primary"] - before["primary"] == 20
