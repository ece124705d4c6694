"""Clients nobody here wrote (fhirpy, fhirclient), unmodified, against the running server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

fhirpy = pytest.importorskip("fhirpy")
fhirclient = pytest.importorskip("fhirclient")


def test_fhirpy_sync_and_async(live_server: str, live_bearer: dict[str, str]) -> None:
    from fhirpy import AsyncFHIRClient
    from fhirpy import SyncFHIRClient

    auth = live_bearer["Authorization"]
    tag = uuid.uuid4().hex[:8]
    client = SyncFHIRClient(live_server, authorization=auth)
    ids = []
    for i in range(5):
        p = client.resource(
            "Patient",
            name=[{"family": f"Py{tag}", "given": [f"N{i}"]}],
            identifier=[{"system": "urn:t", "value": f"{tag}-{i}"}],
        )
        p.save()  # POST with Content-Type: application/json
        ids.append(p.id)
    p = client.reference("Patient", ids[0]).to_resource()
    p["birthDate"] = "1990-01-01"
    p.save()
    p.refresh()
    assert p["birthDate"] == "1990-01-01" and p["meta"]["versionId"] == "2"
    found = client.resources("Patient").search(family=f"Py{tag}").limit(2).fetch_all()  # follows next links
    assert sorted(r.id for r in found) == sorted(ids)
    assert client.resources("Patient").search(family=f"Py{tag}").count() == 5
    first = client.resources("Patient").search(family=f"Py{tag}").sort("_id").first()
    assert first.id == min(ids)
    _, created = (
        client.resources("Patient")
        .search(identifier=f"urn:t|{tag}-2")
        .update(
            client.resource(
                "Patient",
                identifier=[{"system": "urn:t", "value": f"{tag}-2"}],
                active=True,
                name=[{"family": f"Py{tag}"}],
            )
        )
    )
    assert not created
    client.delete("Patient", ids[4])

    async def pages() -> list[str]:
        ac = AsyncFHIRClient(live_server, authorization=auth)
        return [r.id async for r in ac.resources("Patient").search(family=f"Py{tag}").limit(2)]

    assert sorted(asyncio.run(pages())) == sorted(ids[:4])


def test_fhirclient_crud_search_transaction(live_server: str, live_bearer: dict[str, str]) -> None:
    from fhirclient import client
    from fhirclient.models.bundle import Bundle
    from fhirclient.models.patient import Patient

    smart = client.FHIRClient(settings={"app_id": "tests", "api_base": live_server})
    smart.server.auth = None
    smart.server.session.headers["Authorization"] = live_bearer["Authorization"]
    assert smart.server.capabilityStatement.fhirVersion == "4.3.0"  # strict R4 model parse of /metadata
    tag = uuid.uuid4().hex[:8]
    ids = [Patient({"name": [{"family": f"Fc{tag}"}]}).create(smart.server)["id"] for _ in range(3)]
    p = Patient.read(ids[0], smart.server)
    p.name[0].given = ["Updated"]
    p.update(smart.server)
    assert Patient.read(ids[0], smart.server).name[0].given == ["Updated"]
    found = list(
        Patient.where(struct={"family": f"Fc{tag}", "_count": "2"}).perform_resources_iter(smart.server)
    )
    assert sorted(r.id for r in found) == sorted(ids)
    tx = Bundle(
        {
            "type": "transaction",
            "entry": [
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
            ],
        }
    )
    assert tx.create(smart.server)["type"] == "transaction-response"
