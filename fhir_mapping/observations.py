"""One clinic finding <-> one coded Observation (code, value, bodySite with laterality, method).

https://hl7.org/fhir/R4B/observation.html
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping.catalog import BODY_SITES
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get
from fhir_mapping.catalog import recognise

GRADE_PREFIX = {"mmt_grade": "mmt", "modified_ashworth": "mas"}
# Core extension for the body position during an observation (R4B StructureDefinition
# observation-bodyPosition, valueCodeableConcept, no binding): the position as text.
BODY_POSITION_EXT = "http://hl7.org/fhir/StructureDefinition/observation-bodyPosition"


def code_concept(measure: Measure, side: str | None = None, protocol: str | None = None) -> dict[str, Any]:
    """Return Observation.code: the verified standard codings, then ours, and the text."""
    coding = [codes.coding(c.system, c.code, c.display) for c in measure.sent_codes(side, protocol)]
    coding.append(codes.coding(codes.PT, measure.key, measure.display))
    return {"coding": coding, "text": measure.display}


def grade_code(measure: Measure, grade: str) -> str:
    """Return our CodeSystem code of a grade (e.g. mmt-4+)."""
    return f"{GRADE_PREFIX[measure.key]}-{grade}"


def body_site(site: str | None, side: str | None) -> dict[str, Any] | None:
    """Return Observation.bodySite: our site code (+ SNOMED when verified) and the laterality extension."""
    if site is None and side is None:
        return None
    out: dict[str, Any] = {}
    words = []
    if side is not None:
        code, display = codes.LATERALITY[side]
        out["extension"] = [
            {
                "url": codes.LATERALITY_EXT,
                "valueCodeableConcept": {"coding": [codes.coding(codes.SNOMED, code, display)]},
            }
        ]
        words.append(side)
    if site is not None:
        display, std = BODY_SITES[site]
        out["coding"] = [codes.coding(codes.PT_BODY_SITE, site, display)]
        if std is not None:
            out["coding"].append(codes.coding(std.system, std.code, std.display))
        words.append(display.lower())
    out["text"] = " ".join(words)
    return out


def value_element(measure: Measure, value: Any, unit: str | None = None) -> dict[str, Any]:
    """Return the value[x] element: a grade, or the value in the UCUM unit it was entered in."""
    if measure.grades:
        grade = next(g for g in measure.grades if g.code == value)
        return {
            "valueCodeableConcept": {
                "coding": [codes.coding(codes.PT, grade_code(measure, grade.code), grade.display)],
                "text": grade.code,
            }
        }
    assert measure.unit is not None
    return {"valueQuantity": codes.quantity(value, unit or measure.unit)}


def build_observation(
    finding: dict[str, Any],
    patient: str,
    date: str,
    *,
    encounter: str | None = None,
    derived_from: list[str] | None = None,
    timing: str | None = None,
) -> dict[str, Any]:
    """Return the Observation for one finding in canonical form (see schemas.FindingSchema).

    `timing` (pre-treatment | post-treatment) marks a value taken around a treatment session,
    which progress keeps out of the longitudinal series' post-treatment points.
    """
    measure = get(finding["measure"])
    assert measure is not None
    side, protocol = finding.get("side"), finding.get("protocol")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [codes.category(measure.category)],
        "code": code_concept(measure, side, protocol),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": date,
    }
    extensions = []
    if finding.get("assistive_device"):
        extensions.append({"url": codes.EXT_ASSISTIVE, "valueString": finding["assistive_device"]})
    if protocol:
        extensions.append({"url": codes.EXT_PROTOCOL, "valueCode": protocol})
    if finding.get("position"):
        extensions.append({"url": BODY_POSITION_EXT, "valueCodeableConcept": {"text": finding["position"]}})
    if timing:
        extensions.append({"url": codes.EXT_SESSION_TIMING, "valueCode": timing})
    if extensions:
        obs["extension"] = extensions
    if encounter:
        obs["encounter"] = {"reference": encounter}
    obs.update(value_element(measure, finding["value"], finding.get("unit")))
    site = finding.get("body_site") or measure.fixed_site
    bs = body_site(site, side)
    if bs is not None:
        obs["bodySite"] = bs
    if finding.get("method"):
        obs["method"] = {"text": finding["method"]}
    if finding.get("device"):
        obs["device"] = {"display": finding["device"]}
    if finding.get("note"):
        obs["note"] = [{"text": finding["note"]}]
    if derived_from:
        obs["derivedFrom"] = [{"reference": r} for r in derived_from]
    return obs


def coded_qualifiers(measure: Measure, codings: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """Return the (side, protocol) the standard codes present imply (e.g. LOINC 83173-5 = left)."""
    present = {(c.get("system"), c.get("code")) for c in codings}
    side = protocol = None
    for std in measure.codes:
        if std.sent and (std.system, std.code) in present:
            side, protocol = side or std.side, protocol or std.protocol
    return side, protocol


def ext(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    """Return the extension with this url, or None."""
    return next((e for e in resource.get("extension") or [] if e.get("url") == url), None)


def side_of(concept: dict[str, Any] | None) -> str | None:
    """Return left/right/bilateral from a bodySite's laterality extension (either SNOMED set)."""
    if not concept:
        return None
    found = ext(concept, codes.LATERALITY_EXT)
    for c in ((found or {}).get("valueCodeableConcept") or {}).get("coding") or []:
        side = codes.SIDE_OF_CODE.get(str(c.get("code"))) or {"419161000": "left", "419465000": "right"}.get(
            str(c.get("code"))
        )
        if side:
            return side
    return None


def site_of(concept: dict[str, Any] | None) -> str | None:
    """Return our body-site key from a bodySite, or None."""
    for c in (concept or {}).get("coding") or []:
        if c.get("system") == codes.PT_BODY_SITE and c.get("code") in BODY_SITES:
            return str(c["code"])
    return None


def read_value(measure: Measure, obs: dict[str, Any]) -> tuple[Any, str | None]:
    """Return (value, UCUM unit) as stored for this measure (grade code, no unit, when graded).

    The value is None when there is none of the measure's kind; the unit is None when the
    Quantity has none (valueInteger scores have the measure's unit).
    """
    if measure.grades:
        concept = obs.get("valueCodeableConcept") or {}
        wanted = {grade_code(measure, g.code): g.code for g in measure.grades}
        for c in concept.get("coding") or []:
            if c.get("system") == codes.PT and c.get("code") in wanted:
                return wanted[c["code"]], None
        text = concept.get("text")
        return (text if text in {g.code for g in measure.grades} else None), None
    if "valueInteger" in obs and measure.unit in ("{score}",):
        return codes.number(obs["valueInteger"]), measure.unit
    q = obs.get("valueQuantity")
    if not isinstance(q, dict) or not isinstance(q.get("value"), (int, float)):
        return None, None
    return codes.number(q["value"]), q.get("code") or q.get("unit")


def finding_of(obs: dict[str, Any]) -> dict[str, Any] | None:
    """Return the clinic finding of a coded Observation, its value possibly None, or None if not a measure."""
    found = recognise((obs.get("code") or {}).get("coding") or [])
    if found is None:
        return None
    measure = found[0]
    value, unit = read_value(measure, obs)
    finding: dict[str, Any] = {"measure": measure.key, "value": value}
    if unit:
        finding["unit"] = unit
    code_side, code_protocol = coded_qualifiers(measure, (obs.get("code") or {}).get("coding") or [])
    side = side_of(obs.get("bodySite")) or code_side
    if side:
        finding["side"] = side
    site = site_of(obs.get("bodySite"))
    if site and site != measure.fixed_site:
        finding["body_site"] = site
    if (obs.get("method") or {}).get("text"):
        finding["method"] = obs["method"]["text"]
    if (obs.get("device") or {}).get("display"):
        finding["device"] = obs["device"]["display"]
    protocol = (ext(obs, codes.EXT_PROTOCOL) or {}).get("valueCode") or code_protocol
    if protocol:
        finding["protocol"] = protocol
    assistive = (ext(obs, codes.EXT_ASSISTIVE) or {}).get("valueString")
    if assistive:
        finding["assistive_device"] = assistive
    position = ((ext(obs, BODY_POSITION_EXT) or {}).get("valueCodeableConcept") or {}).get("text")
    if position:
        finding["position"] = position
    notes = [n.get("text") for n in obs.get("note") or [] if n.get("text")]
    if notes:
        finding["note"] = notes[0]
    return finding


def read_observation(obs: dict[str, Any]) -> dict[str, Any] | None:
    """Return the clinic finding of a coded Observation (inverse of build_observation), or None.

    Value and unit are returned as stored; None when the Observation is not a catalog
    measure or has no value of the measure's kind.
    """
    finding = finding_of(obs)
    return None if finding is None or finding["value"] is None else finding
