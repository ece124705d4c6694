"""`rehabfhir load`: Synthea transaction bundles (.json.gz), NDJSON (plain and gzipped), collections."""

from __future__ import annotations

import gzip
import pathlib
from typing import Any

import orjson
from click.testing import CliRunner

from server.bulk.load import load_command
from tests.conftest import FhirClient

SYNTHEA = sorted(pathlib.Path("/work/shared/data/synthea-r4").glob("*.json.gz"))[:2]


def run(database_url: str, *paths: pathlib.Path) -> Any:
    return CliRunner().invoke(
        load_command,
        [str(p) for p in paths],
        env={"DATABASE_URL": database_url, "REHABFHIR_BASE_URL": "http://testserver/fhir"},
    )


def total(fhir: FhirClient, type_: str) -> int:
    return fhir.call("GET", f"/{type_}?_summary=count").get_json()["total"]  # type: ignore[no-any-return]


def test_load_synthea_transaction_bundles(app: Any, database_url: str, fhir: FhirClient) -> None:
    expected: dict[str, int] = {}
    for path in SYNTHEA:
        for entry in orjson.loads(gzip.decompress(path.read_bytes()))["entry"]:
            type_ = entry["resource"]["resourceType"]
            expected[type_] = expected.get(type_, 0) + 1
    result = run(database_url, *SYNTHEA)
    assert result.exit_code == 0, result.output
    assert f"loaded {sum(expected.values())} resources from 2 file(s)\n" in result.output
    assert total(fhir, "Patient") == 2
    assert total(fhir, "Observation") == expected["Observation"]
    # urn:uuid references were resolved to the stored ids: the compartment finds them.
    patient = fhir.call("GET", "/Patient?_count=1").get_json()["entry"][0]["resource"]
    record = fhir.call("GET", f"/Patient/{patient['id']}/$everything?_type=Encounter&_count=1").get_json()
    assert record["total"] > 0


def test_load_ndjson_plain_and_gzipped_reports_bad_lines(
    tmp_path: pathlib.Path, app: Any, database_url: str, fhir: FhirClient
) -> None:
    lines = [
        orjson.dumps({"resourceType": "Patient", "id": f"nd-{i}", "name": [{"family": f"N{i}"}]})
        for i in range(250)
    ]
    bad_json = b"{broken json"
    no_code = orjson.dumps({"resourceType": "Observation", "status": "final"})
    bad_date = orjson.dumps({"resourceType": "Patient", "birthDate": "yesterday"})
    plain = tmp_path / "Patient.ndjson"
    plain.write_bytes(b"\n".join(lines[:150]) + b"\n\n" + bad_json + b"\n" + no_code + b"\n")
    zipped = tmp_path / "More.ndjson.gz"
    zipped.write_bytes(gzip.compress(b"\n".join(lines[150:]) + b"\n" + bad_date + b"\n"))
    result = run(database_url, plain, zipped)
    assert result.exit_code == 1
    assert "nothing loaded: 3 error(s) in 2 file(s)" in result.output
    assert "error: Patient.ndjson:152: malformed JSON" in result.output
    assert "error: Patient.ndjson:153: Observation" in result.output
    assert "error: More.ndjson.gz:101: Patient" in result.output
    assert total(fhir, "Patient") == 0  # nothing partial
    # Without the bad lines, everything loads.
    plain.write_bytes(b"\n".join(lines[:150]) + b"\n")
    zipped.write_bytes(gzip.compress(b"\n".join(lines[150:]) + b"\n"))
    result = run(database_url, plain, zipped)
    assert result.exit_code == 0, result.output
    assert "loaded 250 resources from 2 file(s)" in result.output
    assert fhir.call("GET", "/Patient/nd-42").get_json()["name"][0]["family"] == "N42"
    # Loading the same export again updates in place (same ids, version 2).
    assert run(database_url, zipped).exit_code == 0
    assert fhir.call("GET", "/Patient/nd-200").get_json()["meta"]["versionId"] == "2"
    assert total(fhir, "Patient") == 250


def _obs(subject: str) -> bytes:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "gait"}}
    return orjson.dumps({**body, "subject": {"reference": subject}})


def test_load_resolves_references_within_the_load_in_any_order(
    tmp_path: pathlib.Path, app: Any, database_url: str, fhir: FhirClient
) -> None:
    fhir.call("PUT", "/Patient/in-db", {"resourceType": "Patient", "id": "in-db"})
    observations = tmp_path / "Observation.ndjson"
    observations.write_bytes(b"\n".join([_obs("Patient/later"), _obs("Patient/in-db"), _obs("Patient/gone")]))
    patients = tmp_path / "Patient.ndjson"
    patients.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "later"}) + b"\n")
    result = run(database_url, observations, patients)
    assert result.exit_code == 1
    assert (
        "error: Observation.ndjson:3: Observation.subject.reference refers to Patient/gone,"
        " which is neither in the load nor on this server"
    ) in result.output
    assert "nothing loaded: 1 error(s) in 2 file(s)" in result.output
    assert total(fhir, "Observation") == 0 and total(fhir, "Patient") == 1
    observations.write_bytes(b"\n".join([_obs("Patient/later"), _obs("Patient/in-db")]))
    result = run(database_url, observations, patients)
    assert result.exit_code == 0, result.output
    assert "loaded 3 resources from 2 file(s)" in result.output
    # REHABFHIR_REFERENTIAL_INTEGRITY=off: a dangling reference is loaded as it is.
    observations.write_bytes(_obs("Patient/gone"))
    off = CliRunner().invoke(
        load_command,
        [str(observations)],
        env={"DATABASE_URL": database_url, "REHABFHIR_REFERENTIAL_INTEGRITY": "off"},
    )
    assert off.exit_code == 0, off.output
    assert total(fhir, "Observation") == 3


def test_load_transaction_bundle_with_a_bad_entry_stores_nothing(
    tmp_path: pathlib.Path, app: Any, database_url: str, fhir: FhirClient
) -> None:
    good = tmp_path / "a.ndjson"
    good.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "ok"}) + b"\n")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PUT", "url": "Patient/t1"},
                "resource": {"resourceType": "Patient", "id": "t1"},
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}},
            },
        ],
    }
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle))
    result = run(database_url, good, path)
    assert result.exit_code == 1
    assert "error: b.json entry[1]: Observation failed validation" in result.output
    assert total(fhir, "Patient") == 0


def test_load_collection_bundle(
    tmp_path: pathlib.Path, app: Any, database_url: str, fhir: FhirClient
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Practitioner", "id": "pt-1", "name": [{"family": "Physio"}]}},
            {"resource": {"resourceType": "Patient", "name": [{"family": "NoId"}]}},
        ],
    }
    path = tmp_path / "collection.json"
    path.write_bytes(orjson.dumps(bundle))
    result = run(database_url, path)
    assert result.exit_code == 0, result.output
    assert fhir.call("GET", "/Practitioner/pt-1").status_code == 200
    assert total(fhir, "Patient") == 1
