"""Every extension a built resource carries resolves: our own StructureDefinitions, the official core
ones we seed, or an implementation guide's canonical named in README; each with the value type and
context its definition gives. The home-program CodeSystem holds exactly the codes adherence writes."""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_mapping import adherence
from fhir_mapping import codes
from fhir_mapping import episodes
from fhir_mapping import plan_of_care
from fhir_mapping import profiles
from fhir_mapping import questionnaires
from fhir_mapping import schemas
from fhir_mapping import terminology
from server.fhir.writes import prepare_write
from tests.unit.fhir_mapping.test_mapping_payloads import ENDPOINTS

DEFINITIONS = {sd["url"]: sd for sd in profiles.extension_definitions()}
OWN = {sd["url"] for sd in profiles.own_extension_definitions()}
CORE = {sd["url"] for sd in profiles.core_extension_definitions()}
README = pathlib.Path(__file__).resolve().parents[3] / "README.md"
# Finding options the payload examples leave out: position, protocol, a session's pre/post pain.
FINDINGS = {
    "patient": "p1",
    "date": "2026-11-20T10:00:00Z",
    "findings": [
        {"measure": "tug_time", "value": 12.0, "unit": "s", "position": "sitting"},
        {
            "measure": "single_leg_stance",
            "value": 20,
            "unit": "s",
            "side": "left",
            "protocol": "phenx-170801",
        },
    ],
}


def built() -> Iterator[dict[str, Any]]:
    """Every resource the builders write from the endpoint payloads, linked to an episode, and the seeds."""
    loaded = [(build, schemas.load(schema, copy.deepcopy(p))) for _, schema, build, _, p in ENDPOINTS]
    loaded.append((ENDPOINTS[0][2], schemas.load(ENDPOINTS[0][1], copy.deepcopy(FINDINGS))))
    day = {
        "patient": "p1",
        "date": "2026-11-21",
        "exercises": [
            {"exercise": "Bridges", "status": status, "sets": 3, "reps": 10, "pain": 2}
            for status in adherence.STATUSES
        ],
    }
    loaded.append((lambda p: adherence.build_adherence(p, "CarePlan/c1", "Patient/p1"), day))
    episode = {
        "patient": "p1",
        "start": "2026-11-20",
        "condition": {"system": "icd-10-cm", "code": "M17.12"},
        "referring": "ref1",
        "care_manager": "pt1",
    }
    loaded.append((episodes.build_episode, schemas.load(episodes.EpisodeSchema(), episode)))
    for build, payload in loaded:
        for entry in episodes.link(build(payload), "e1"):
            yield entry.resource
    careplan = next(r for r in built_plan())
    cert = {
        "start": "2026-11-20",
        "end": "2026-12-31",
        "visits_per_week": 2,
        "weeks": 6,
        "visits_authorized": 12,
    }
    certified = plan_of_care.certify(careplan, cert, "Condition/c1", "Practitioner/pt1")
    yield certified
    yield plan_of_care.visits_request(cert, certified, "CarePlan/c1", "Practitioner/pt1")
    yield from questionnaires.resources()
    yield from terminology.code_systems()


def built_plan() -> Iterator[dict[str, Any]]:
    _, schema, build, _, payload = next(e for e in ENDPOINTS if e[0] == "plan")
    for entry in build(schemas.load(schema, copy.deepcopy(payload))):
        if entry.resource["resourceType"] == "CarePlan":
            yield entry.resource


def carried(node: Any, path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(url, element path, extension) of every extension with an absolute URL under `node`."""
    if isinstance(node, list):
        for item in node:
            yield from carried(item, path)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("extension", "modifierExtension") and isinstance(value, list):
            for ext in value:
                if "://" in str(ext.get("url")):  # a complex extension's parts have relative urls
                    yield str(ext["url"]), path, ext
        else:
            yield from carried(value, f"{path}.{key}")


FOUND = [(url, path, ext) for r in built() for url, path, ext in carried(r, r["resourceType"])]


def _value_types(sd: dict[str, Any]) -> set[str] | None:
    """The value[x] types a definition allows (None: complex, no value)."""
    elements = (sd.get("snapshot") or sd["differential"])["element"]
    value = next(e for e in elements if e["path"] == "Extension.value[x]")
    if value.get("max") == "0":
        return None
    return {t["code"] for t in value["type"]}


def test_every_extension_a_built_resource_carries_resolves() -> None:
    urls = {url for url, _, _ in FOUND}
    assert urls <= OWN | CORE | set(profiles.ELSEWHERE), urls - OWN - CORE - set(profiles.ELSEWHERE)
    # ... and every definition we serve is one the builders use (none left over).
    assert OWN | CORE <= urls, (OWN | CORE) - urls
    assert set(profiles.ELSEWHERE) <= urls
    assert {url for url in OWN if not url.startswith(codes.EXT)} == set()
    assert CORE == set(profiles.CORE_EXTENSIONS) and not CORE & set(profiles.ELSEWHERE)


@pytest.mark.parametrize("url", sorted(OWN | CORE))
def test_each_use_has_the_value_type_and_context_of_its_definition(url: str) -> None:
    sd = DEFINITIONS[url]
    contexts = {c["expression"] for c in sd["context"]}
    types = _value_types(sd)
    uses = [(path, ext) for found, path, ext in FOUND if found == url]
    for path, ext in uses:
        assert path in contexts, (url, path, contexts)
        values = [k.removeprefix("value") for k in ext if k.startswith("value")]
        if types is None:
            assert not values and ext.get("extension"), ext
        else:
            assert len(values) == 1 and values[0] in {t[0].upper() + t[1:] for t in types}, (url, values)


def test_extensions_of_other_guides_are_named_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for url in profiles.ELSEWHERE:
        assert url in text, url


def test_core_definitions_are_the_official_ones() -> None:
    """As hl7.fhir.r4b.core 4.3.0 holds them (scripts/extract_core_extensions.py), snapshot and all."""
    for sd in profiles.core_extension_definitions():
        assert sd["url"] == f"http://hl7.org/fhir/StructureDefinition/{sd['id']}"
        assert (sd["version"], sd["fhirVersion"], sd["kind"]) == ("4.3.0", "4.3.0", "complex-type")
        assert (
            sd["publisher"].startswith(("HL7", "Health Level Seven"))
            and sd["snapshot"]["element"]
            and sd["differential"]["element"]
        )


def test_own_extension_urls_have_a_definition() -> None:
    ours = {v for k, v in vars(codes).items() if k.startswith("EXT_") and isinstance(v, str)}
    assert ours == OWN
    assert len({sd["id"] for sd in DEFINITIONS.values()}) == len(DEFINITIONS)


@pytest.mark.parametrize("sd", list(DEFINITIONS.values()), ids=list(DEFINITIONS))
def test_definition_is_valid_r4b(sd: dict[str, Any]) -> None:
    stored = prepare_write("StructureDefinition", copy.deepcopy(sd)).resource
    assert stored["url"] == sd["url"] and stored["type"] == "Extension"
    assert stored["differential"]["element"][0]["path"] == "Extension"


def test_value_types_match_what_the_builders_write() -> None:
    assert profiles.value_type(codes.EXT_SETS) == "integer"  # plans.py: valueInteger
    assert profiles.value_type(codes.EXT_LOAD) == "Quantity"  # plans.py: valueQuantity
    assert profiles.value_type(codes.EXT_SESSION_TIMING) == "code"  # sessions.py: valueCode
    assert profiles.value_type(codes.EXT_PARAMETER) is None  # complex: parameter + value
    parts = [e for e in DEFINITIONS[codes.EXT_PARAMETER]["differential"]["element"] if e.get("sliceName")]
    assert [p["sliceName"] for p in parts] == ["parameter", "value"]


def test_home_program_code_system_holds_exactly_the_codes_written() -> None:
    (system,) = [cs for cs in terminology.code_systems() if cs["url"] == adherence.HOME_PROGRAM]
    written = {
        c["code"]
        for r in built()
        if r["resourceType"] == "Observation"
        for comp in r.get("component") or []
        for concept in (comp["code"], comp.get("valueCodeableConcept") or {})
        for c in concept.get("coding") or []
        if c["system"] == adherence.HOME_PROGRAM
    }
    assert {c["code"] for c in system["concept"]} == written
    assert all(c["display"] and c["definition"] for c in system["concept"])
    assert terminology.lookup(adherence.HOME_PROGRAM, "partly")["display"] == "Partly done"  # type: ignore[index]
    prepare_write("CodeSystem", copy.deepcopy(system))
