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
    assert f"loaded {sum(expected.values())} resources from 2 file(s), 0 error(s)" in result.output
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
    plain = tmp_path / "Patient.ndjson"
    plain.write_bytes(
        b"\n".join(lines[:150])
        + b"\n\n{broken json\n"
        + orjson.dumps({"resourceType": "Observation", "status": "final"})
        + b"\n"
    )
    zipped = tmp_path / "More.ndjson.gz"
    zipped.write_bytes(
        gzip.compress(
            b"\n".join(lines[150:])
            + b"\n"
            + orjson.dumps({"resourceType": "Patient", "birthDate": "yesterday"})
            + b"\n"
        )
    )
    result = run(database_url, plain, zipped)
    assert result.exit_code == 1
    assert "loaded 250 resources from 2 file(s), 3 error(s)" in result.output
    assert "Patient.ndjson:152: malformed JSON" in result.output
    assert "Patient.ndjson:153:" in result.output and "More.ndjson.gz:101:" in result.output
    assert total(fhir, "Patient") == 250
    assert fhir.call("GET", "/Patient/nd-42").get_json()["name"][0]["family"] == "N42"
    # Loading the same export again updates in place (same ids, version 2).
    assert run(database_url, zipped).exit_code == 1
    assert fhir.call("GET", "/Patient/nd-200").get_json()["meta"]["versionId"] == "2"
    assert total(fhir, "Patient") == 250


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
