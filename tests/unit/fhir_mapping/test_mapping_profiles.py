"""The StructureDefinitions of our extensions: one per extension URL we write, each valid R4B."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mapping import codes
from fhir_mapping import profiles
from server.fhir.writes import prepare_write

DEFINITIONS = {sd["url"]: sd for sd in profiles.extension_definitions()}


def test_every_extension_url_we_write_has_a_definition() -> None:
    ours = {v for k, v in vars(codes).items() if k.startswith("EXT_") and isinstance(v, str)}
    assert ours == set(DEFINITIONS)
    assert len({sd["id"] for sd in DEFINITIONS.values()}) == len(DEFINITIONS)


@pytest.mark.parametrize("sd", list(DEFINITIONS.values()), ids=list(DEFINITIONS))
def test_definition_is_valid_r4b(sd: dict[str, Any]) -> None:
    stored = prepare_write("StructureDefinition", sd).resource
    assert stored["url"] == sd["url"] and stored["type"] == "Extension"
    assert stored["differential"]["element"][0]["path"] == "Extension"


def test_value_types_match_what_the_builders_write() -> None:
    assert profiles.value_type(codes.EXT_SETS) == "integer"  # plans.py: valueInteger
    assert profiles.value_type(codes.EXT_LOAD) == "Quantity"  # plans.py: valueQuantity
    assert profiles.value_type(codes.EXT_SESSION_TIMING) == "code"  # sessions.py: valueCode
    assert profiles.value_type(codes.EXT_PARAMETER) is None  # complex: parameter + value
    parts = [e for e in DEFINITIONS[codes.EXT_PARAMETER]["differential"]["element"] if e.get("sliceName")]
    assert [p["sliceName"] for p in parts] == ["parameter", "value"]
