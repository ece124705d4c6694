"""Our StructureDefinitions are seeded and served; resources claiming a held profile are validated
against it on every write path and in $validate; `rehabfhir ig install` adds an IG's profiles."""

from __future__ import annotations

import copy
import io
import json
import pathlib
import tarfile
from typing import Any

from click.testing import CliRunner

from fhir_mapping import codes
from fhir_mapping import profiles
from fhir_mapping.resource_profiles import resource_profiles
from server.api.rehab_routes import seed_terminology
from server.api.wiring import hold_installed_profiles
from server.cli import cli
from server.fhir.validation import profiles as held
from tests.conftest import FhirClient
from tests.functional.test_rehab import ASSESSMENT

JSON = "application/json"
PT_CODING = {"system": codes.PT, "code": "tug_time"}


def _obs(patient: str, profile: str | None = profiles.FINDING, coding: bool = True) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [codes.category("exam")],
        "code": {"coding": [PT_CODING] if coding else [{"system": codes.LOINC, "code": "8310-5"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-20",
        "valueQuantity": codes.quantity(14.2, "s"),
    }
    if profile:
        obs["meta"] = {"profile": [profile]}
    return obs


def _patient(fhir: FhirClient) -> str:
    return str(fhir.create({"resourceType": "Patient", "name": [{"family": "Profiled"}]})["id"])


def test_definitions_are_seeded_and_served(app: Any, fhir: FhirClient) -> None:
    written = seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    ids = [sd["id"] for sd in [*profiles.extension_definitions(), *resource_profiles()]]
    assert [w for w in written if w.startswith("StructureDefinition/")] == [
        f"StructureDefinition/{i}" for i in ids
    ]
    sd = fhir.call("GET", "/StructureDefinition/exercise-sets").get_json()
    assert (sd["url"], sd["type"], sd["context"]) == (
        codes.EXT_SETS,
        "Extension",
        [{"type": "element", "expression": "CarePlan.activity.detail"}],
    )
    found = fhir.call("GET", f"/StructureDefinition?url={codes.EXT_PARAMETER}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["procedure-parameter"]
    total = fhir.call("GET", "/StructureDefinition?type=Extension&_summary=count").get_json()["total"]
    assert total == len(profiles.extension_definitions())
    finding = fhir.call("GET", "/StructureDefinition/rehab-finding").get_json()
    assert (finding["url"], finding["derivation"], finding["type"]) == (
        profiles.FINDING,
        "constraint",
        "Observation",
    )
    assert len(finding["snapshot"]["element"]) > len(finding["differential"]["element"])


def test_capability_statement_lists_the_held_profiles(fhir: FhirClient) -> None:
    statement = fhir.call("GET", "/metadata").get_json()
    by_type = {r["type"]: r.get("supportedProfile", []) for r in statement["rest"][0]["resource"]}
    assert set(by_type["Observation"]) >= {
        profiles.FINDING,
        profiles.PANEL_PROFILE,
        profiles.SCORE,
        profiles.SENSOR_SERIES,
    }
    assert by_type["CarePlan"] == [profiles.EXERCISE_PLAN]
    assert by_type["Procedure"] == [profiles.SESSION_PROCEDURE]


def test_rehab_writes_claim_their_profiles(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    r = fhir.call("POST", "/rehab/assessments", {"patient": patient, **ASSESSMENT}, content_type=JSON)
    assert r.status_code == 201, r.get_data(as_text=True)
    refs = r.get_json()["references"]
    panel = fhir.call("GET", f"/{refs['panel'][0]}").get_json()
    finding = fhir.call("GET", f"/{refs['finding'][0]}").get_json()
    assert panel["meta"]["profile"] == [profiles.PANEL_PROFILE]
    assert finding["meta"]["profile"] == [profiles.FINDING]
    encounter = fhir.call("GET", f"/{refs['encounter'][0]}").get_json()
    assert "profile" not in encounter["meta"]


def test_create_update_patch_refuse_what_breaks_the_profile(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    r = fhir.call("POST", "/Observation", _obs(patient, coding=False))
    assert r.status_code == 422
    (first, *_) = r.get_json()["issue"]
    assert first["expression"] == ["Observation.code.coding"]
    assert "Observation.code.coding:rehab: minimum required = 1" in first["diagnostics"]
    stored = fhir.create(_obs(patient))
    broken = {**stored, "code": {"coding": [{"system": codes.LOINC, "code": "8310-5"}]}}
    assert fhir.call("PUT", f"/Observation/{stored['id']}", broken).status_code == 422
    patch = [{"op": "replace", "path": "/code/coding/0/system", "value": codes.LOINC}]
    r = fhir.call("PATCH", f"/Observation/{stored['id']}", patch, content_type="application/json-patch+json")
    assert r.status_code == 422 and r.get_json()["issue"][0]["expression"] == ["Observation.code.coding"]
    # Without the claim, the same resource is only held to the base R4B definition.
    assert fhir.call("POST", "/Observation", _obs(patient, profile=None, coding=False)).status_code == 201


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def test_transaction_fails_whole_batch_fails_the_entry(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    entries = [_entry(_obs(patient)), _entry(_obs(patient, coding=False))]
    r = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 422
    assert r.get_json()["issue"][0]["expression"] == ["Bundle.entry[1]", "Observation.code.coding"]
    out = fhir.call("POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": entries}).get_json()
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "422 Unprocessable Entity"]
    total = fhir.call("GET", "/Observation?_summary=count").get_json()["total"]
    assert total == 1


def _validate(fhir: FhirClient, resource: dict[str, Any], query: str = "") -> list[dict[str, Any]]:
    r = fhir.call("POST", f"/Observation/$validate{query}", resource)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["issue"]  # type: ignore[no-any-return]


def test_validate_claimed_asked_and_unknown_profiles(fhir: FhirClient) -> None:
    patient = _patient(fhir)
    issues = _validate(fhir, _obs(patient, coding=False))
    assert [(i["severity"], i["expression"]) for i in issues if i["severity"] == "error"] == [
        ("error", ["Observation.code.coding"])
    ]
    plain = _obs(patient, profile=None, coding=False)
    assert not [i for i in _validate(fhir, plain) if i["severity"] == "error"]
    asked = _validate(fhir, plain, f"?profile={profiles.FINDING}")
    assert [i["expression"] for i in asked if i["severity"] == "error"] == [["Observation.code.coding"]]
    unknown = _obs(patient, profile="http://example.org/StructureDefinition/nowhere")
    issues = _validate(fhir, unknown)
    assert [i["expression"] for i in issues if i["code"] == "not-supported"] == [["Observation.meta.profile"]]
    assert fhir.call("POST", "/Observation", unknown).status_code == 201  # accepted on write


def _package(tmp: pathlib.Path, resources: list[dict[str, Any]]) -> pathlib.Path:
    """An NPM package .tgz (package/package.json + one file per resource), built here."""
    path = tmp / "example.ig-0.1.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        files = {
            "package/package.json": {"name": "example.ig", "version": "0.1.0", "fhirVersions": ["4.3.0"]}
        }
        for r in resources:
            files[f"package/{r['resourceType']}-{r['id']}.json"] = r
        files["package/example/Observation-x.json"] = {"resourceType": "Observation"}  # not installed
        for name, doc in files.items():
            data = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_ig_install_makes_a_package_profile_enforced(
    app: Any, fhir: FhirClient, database_url: str, tmp_path: pathlib.Path
) -> None:
    url = "http://example.org/fhir/StructureDefinition/example-finding"
    vs_url = "http://example.org/fhir/ValueSet/example-statuses"
    sd = copy.deepcopy(next(p for p in resource_profiles() if p["url"] == profiles.FINDING))
    sd.update(id="example-finding", url=url, name="ExampleFinding")
    sd["differential"]["element"].append(
        {
            "id": "Observation.status",
            "path": "Observation.status",
            "binding": {"strength": "required", "valueSet": vs_url},
        }
    )
    vs = {
        "resourceType": "ValueSet",
        "id": "example-statuses",
        "url": vs_url,
        "status": "active",
        "compose": {
            "include": [{"system": "http://hl7.org/fhir/observation-status", "concept": [{"code": "final"}]}]
        },
    }
    package = _package(tmp_path, [sd, vs])
    env = {"DATABASE_URL": database_url, "REHABFHIR_BASE_URL": "http://testserver/fhir"}
    result = CliRunner().invoke(cli, ["ig", "install", str(package)], env=env)
    assert result.exit_code == 0, result.output
    assert (
        "installed example.ig#0.1.0: 1 StructureDefinitions (1 resource profiles), 1 ValueSets"
        in result.output
    )
    assert fhir.call("GET", "/StructureDefinition/example-finding").get_json()["url"] == url
    try:
        assert url in hold_installed_profiles(app.extensions["rehabfhir.sessions"])  # as on a restart
        patient = _patient(fhir)
        assert fhir.call("POST", "/Observation", _obs(patient, profile=url)).status_code == 201
        r = fhir.call("POST", "/Observation", {**_obs(patient, profile=url), "status": "preliminary"})
        assert r.status_code == 422
        assert r.get_json()["issue"][0]["expression"] == ["Observation.status"]
        assert fhir.call("POST", "/Observation", _obs(patient, profile=url, coding=False)).status_code == 422
    finally:
        held.forget([url])


def test_ig_install_refuses_a_bad_package_whole(
    app: Any, fhir: FhirClient, database_url: str, tmp_path: pathlib.Path
) -> None:
    good = {
        "resourceType": "ValueSet",
        "id": "fine",
        "url": "http://example.org/fhir/ValueSet/fine",
        "status": "active",
    }
    bad = {
        "resourceType": "CodeSystem",
        "id": "broken",
        "url": "http://example.org/fhir/CodeSystem/broken",
        "status": "nonsense",
        "content": "complete",
    }
    env = {"DATABASE_URL": database_url, "REHABFHIR_BASE_URL": "http://testserver/fhir"}
    result = CliRunner().invoke(cli, ["ig", "install", str(_package(tmp_path, [good, bad]))], env=env)
    assert result.exit_code == 1
    assert "package/CodeSystem-broken.json" in result.output and "nothing installed" in result.output
    assert fhir.call("GET", "/ValueSet/fine").status_code == 404
    not_a_package = tmp_path / "x.tgz"
    not_a_package.write_bytes(b"not a tar")
    result = CliRunner().invoke(cli, ["ig", "install", str(not_a_package)], env=env)
    assert result.exit_code == 1 and "not a package" in result.output


def test_load_checks_lines_claiming_a_profile(
    fhir: FhirClient, database_url: str, tmp_path: pathlib.Path
) -> None:
    from server.bulk.load import load_command

    patient = _patient(fhir)
    lines = tmp_path / "obs.ndjson"
    lines.write_text(f"{json.dumps(_obs(patient))}\n{json.dumps(_obs(patient, coding=False))}\n")
    env = {"DATABASE_URL": database_url, "REHABFHIR_BASE_URL": "http://testserver/fhir"}
    result = CliRunner().invoke(load_command, [str(lines)], env=env)
    assert result.exit_code == 1
    assert "obs.ndjson:2" in result.output and "Observation.code.coding:rehab" in result.output
    assert fhir.call("GET", "/Observation?_summary=count").get_json()["total"] == 0
