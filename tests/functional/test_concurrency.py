"""No lost writes: real threads against a running gunicorn server (2 workers)."""

from __future__ import annotations

import threading

import requests

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def test_concurrent_updates_give_gapless_versions(live_server: str, live_bearer: dict[str, str]) -> None:
    headers = {**HEADERS, **live_bearer}
    created = requests.post(
        f"{live_server}/Patient",
        json={"resourceType": "Patient", "active": True},
        headers=headers,
        timeout=30,
    ).json()
    pid = created["id"]
    statuses: list[int] = []

    def writer(n: int) -> None:
        with requests.Session() as s:
            for i in range(5):
                body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"w{n}-{i}"}]}
                statuses.append(
                    s.put(f"{live_server}/Patient/{pid}", json=body, headers=headers, timeout=60).status_code
                )

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    history = requests.get(
        f"{live_server}/Patient/{pid}/_history?_count=100", headers=headers, timeout=30
    ).json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, 42))
    current = requests.get(f"{live_server}/Patient/{pid}", headers=headers, timeout=30).json()
    assert current["meta"]["versionId"] == "41"


def test_same_if_match_exactly_one_wins(live_server: str, live_bearer: dict[str, str]) -> None:
    headers = {**HEADERS, **live_bearer}
    created = requests.post(
        f"{live_server}/Patient", json={"resourceType": "Patient"}, headers=headers, timeout=30
    ).json()
    pid = created["id"]
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def writer(n: int) -> None:
        body = {"resourceType": "Patient", "id": pid, "name": [{"text": f"w{n}"}]}
        barrier.wait()
        r = requests.put(
            f"{live_server}/Patient/{pid}", json=body, timeout=60, headers={**headers, "If-Match": 'W/"1"'}
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [412] * 9
    history = requests.get(f"{live_server}/Patient/{pid}/_history", headers=headers, timeout=30).json()
    assert history["total"] == 2


def test_concurrent_update_as_create_same_id(live_server: str, live_bearer: dict[str, str]) -> None:
    headers = {**HEADERS, **live_bearer}
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def writer(n: int) -> None:
        barrier.wait()
        r = requests.put(
            f"{live_server}/Patient/race-1",
            json={"resourceType": "Patient", "id": "race-1"},
            headers=headers,
            timeout=60,
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 7 + [201]
    history = requests.get(
        f"{live_server}/Patient/race-1/_history?_count=50", headers=headers, timeout=30
    ).json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"]) == list(range(1, 9))


def test_oversized_body_over_the_wire(live_server: str, live_bearer: dict[str, str]) -> None:
    headers = {**HEADERS, **live_bearer}
    r = requests.post(f"{live_server}/Patient", data=b"x" * (20 * 1024 * 1024), headers=headers, timeout=60)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"
