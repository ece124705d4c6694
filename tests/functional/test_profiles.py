"""Our extensions' StructureDefinitions are seeded with the terminology and served at /StructureDefinition."""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping import profiles
from server.api.rehab_routes import seed_terminology
from tests.conftest import FhirClient


def test_extension_definitions_are_seeded_and_served(app: Any, fhir: FhirClient) -> None:
    written = seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    ids = [sd["id"] for sd in profiles.extension_definitions()]
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
    assert total == len(ids)
