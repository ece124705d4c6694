"""POST /rehab/assessments: findings -> coded Observations under one panel Observation and an Encounter.

https://hl7.org/fhir/R4B/observation.html#obsgrouping
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping.observations import build_observation
from fhir_mapping.observations import read_observation
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import by_url
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of
from fhir_mapping.transaction import urn

PANEL = "pt-assessment-panel"
PANEL_DISPLAY = "Physical therapy assessment panel"
ENCOUNTER_ASSESSMENT = "pt-assessment"
ENCOUNTER_SESSION = "pt-session"
ENCOUNTER_TYPES = {
    ENCOUNTER_ASSESSMENT: "Physical therapy assessment",
    ENCOUNTER_SESSION: "Physical therapy session",
}


def encounter(patient: str, kind: str, start: str, end: str | None = None) -> dict[str, Any]:
    """Return a finished ambulatory Encounter of our kind (assessment or session)."""
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": codes.coding(codes.ACT_CODE, "AMB", "ambulatory"),
        "type": [{"coding": [codes.coding(codes.PT, kind, ENCOUNTER_TYPES[kind])]}],
        "subject": {"reference": f"Patient/{patient}"},
        "period": period,
    }


def build_assessment(payload: dict[str, Any]) -> list[Entry]:
    """Return the Encounter, one Observation per finding and the panel grouping them."""
    patient, date = payload["patient"], payload["date"]
    enc_url = urn()
    entries = [entry("encounter", encounter(patient, ENCOUNTER_ASSESSMENT, date), enc_url)]
    for finding in payload["findings"]:
        entries.append(entry("finding", build_observation(finding, patient, date, encounter=enc_url)))
    panel: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [codes.category("exam")],
        "code": {"coding": [codes.coding(codes.PT, PANEL, PANEL_DISPLAY)]},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": enc_url},
        "effectiveDateTime": date,
        "hasMember": [{"reference": e.full_url} for e in entries if e.role == "finding"],
    }
    if payload.get("title"):
        panel["code"]["text"] = payload["title"]
    entries.append(entry("panel", panel))
    return entries


def read_assessment(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of an assessment's resources (inverse of build_assessment)."""
    panel = of_role(entries, "panel")[0]
    resources = by_url(entries)
    findings = []
    for member in panel.get("hasMember") or []:
        finding = read_observation(resources[member["reference"]])
        if finding is not None:
            findings.append(finding)
    out: dict[str, Any] = {"patient": patient_of(panel), "date": panel["effectiveDateTime"]}
    if (panel.get("code") or {}).get("text"):
        out["title"] = panel["code"]["text"]
    out["findings"] = findings
    return out
