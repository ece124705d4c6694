"""Realistic physical-therapy test data: Patients and Observations (LOINC codes, UCUM units).

Plain functions returning JSON-ready dicts; seeded so every run posts the same bodies.
"""

from __future__ import annotations

import random
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN = "https://rehab.example.org/fhir/sid/mrn"

_FAMILIES = ("Nguyen", "Garcia", "Smith", "Okafor", "Kowalski", "Haddad", "Larsen", "Tanaka", "Silva")
_GIVEN = ("Ana", "Ben", "Chloe", "Dmitri", "Esther", "Farid", "Grace", "Hiro", "Ines", "Jonas")
_BODY_SITES = (
    ("72696002", "Knee region structure"),
    ("37822005", "Structure of lumbar spine"),
    ("16982005", "Shoulder region structure"),
    ("344001", "Ankle region structure"),
)
_NOTES = (
    "Reported after 3x10 mini squats and step-ups; no swelling observed.",
    "Measured at start of session, before manual therapy.",
    "Patient tolerated progression of home exercise program well.",
    "Post-op week 6 follow-up; gait with single-point cane.",
)
_EPOCH = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def patient(rng: random.Random, n: int) -> dict[str, Any]:
    """Return a Patient of the clinic with an MRN, name, birth date, phone and address."""
    birth = datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 65))
    return {
        "resourceType": "Patient",
        "identifier": [{"use": "usual", "system": MRN, "value": f"MRN{n:07d}"}],
        "active": True,
        "name": [{"use": "official", "family": rng.choice(_FAMILIES), "given": [rng.choice(_GIVEN)]}],
        "telecom": [{"system": "phone", "value": f"+1-555-{rng.randrange(10**7):07d}", "use": "mobile"}],
        "gender": rng.choice(("female", "male")),
        "birthDate": birth.date().isoformat(),
        "address": [
            {
                "line": [f"{rng.randrange(1, 999)} Elm St"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": f"627{rng.randrange(100):02d}",
                "country": "US",
            }
        ],
    }


def _pain(rng: random.Random) -> dict[str, Any]:
    site = rng.choice(_BODY_SITES)
    return {
        "category": [_coding(CATEGORY, "survey", "Survey")],
        "code": _coding(LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
        "valueQuantity": _quantity(rng.randrange(0, 11), "{score}", "{score}"),
        "bodySite": _coding(SNOMED, *site),
    }


def _vital(code: str, display: str, unit: str, low: float, high: float) -> Any:
    def build(rng: random.Random) -> dict[str, Any]:
        value = round(rng.uniform(low, high), 1)
        return {
            "category": [_coding(CATEGORY, "vital-signs", "Vital Signs")],
            "code": _coding(LOINC, code, display),
            "valueQuantity": _quantity(value, unit, unit),
        }

    return build


def _blood_pressure(rng: random.Random) -> dict[str, Any]:
    systolic, diastolic = rng.randrange(100, 160), rng.randrange(60, 100)
    return {
        "category": [_coding(CATEGORY, "vital-signs", "Vital Signs")],
        "code": _coding(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        "component": [
            {
                "code": _coding(LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": _quantity(systolic, "mm[Hg]", "mm[Hg]"),
            },
            {
                "code": _coding(LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": _quantity(diastolic, "mm[Hg]", "mm[Hg]"),
            },
        ],
    }


# Pain scores dominate a PT clinic's observations; vitals are taken at intake and re-checks.
_KINDS = (
    (_pain, 5),
    (_vital("8867-4", "Heart rate", "/min", 55, 110), 2),
    (_vital("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 92, 100), 1),
    (_vital("29463-7", "Body weight", "kg", 45, 130), 1),
    (_blood_pressure, 1),
)


def observation(rng: random.Random, patient_id: str) -> dict[str, Any]:
    """Return a final Observation about the patient: pain score (mostly) or a vital sign."""
    build = rng.choices([k for k, _ in _KINDS], weights=[w for _, w in _KINDS])[0]
    moment = _EPOCH + timedelta(minutes=rng.randrange(0, 60 * 24 * 300))
    resource: dict[str, Any] = {"resourceType": "Observation", "status": "final"}
    resource.update(build(rng))
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    resource["effectiveDateTime"] = moment.isoformat().replace("+00:00", "Z")
    resource["note"] = [{"text": rng.choice(_NOTES)}]
    return resource


def revised(resource: dict[str, Any], id_: str, rng: random.Random) -> dict[str, Any]:
    """Return an amended copy of an Observation for PUT: id in the body, new value."""
    body = dict(resource, id=id_, status="amended")
    quantity = body.get("valueQuantity")
    if quantity is not None:
        if quantity["code"] == "{score}":
            value: float = rng.randrange(0, 11)
        else:
            value = round(quantity["value"] * rng.uniform(0.95, 1.05), 1)
        body["valueQuantity"] = dict(quantity, value=value)
    return body
