"""POST /rehab/episodes: an episode of care -> EpisodeOfCare + the Condition treated (+ the referral).

How the pieces of an episode point to it (FHIR R4B):
- Encounters (assessments, sessions) use the core element `Encounter.episodeOfCare`
  (https://hl7.org/fhir/R4B/encounter-definitions.html#Encounter.episodeOfCare), searchable
  with the core parameter Encounter `episode-of-care` (SearchParameter-Encounter-episode-of-care
  in hl7.fhir.r4b.core 4.3.0), so the episode's visits are one indexed search.
- CarePlan, QuestionnaireResponse and Observation have no episode element in R4B. The core
  package defines the extension http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare
  (StructureDefinition-workflow-episodeOfCare.json in hl7.fhir.r4b.core 4.3.0: valueReference
  to EpisodeOfCare, context CarePlan, QuestionnaireResponse, Observation, ServiceRequest,
  Procedure, Condition among others), so we write that standard extension rather than
  `CarePlan.supportingInfo`:
  supportingInfo means "information considered as part of the plan"
  (https://hl7.org/fhir/R4B/careplan-definitions.html#CarePlan.supportingInfo), not "the
  episode this plan belongs to", and a reader could not tell the two uses apart.
- The condition treated is a Condition in `EpisodeOfCare.diagnosis.condition`; the referring
  practitioner is the `requester` of a ServiceRequest in `EpisodeOfCare.referralRequest`
  ("the original referral request(s)"; EpisodeOfCare has no referrer element); the care manager
  is `EpisodeOfCare.careManager`. https://hl7.org/fhir/R4B/episodeofcare.html

Codes: the condition's code is sent as given, under the system the clinic names: ICD-10-CM
http://hl7.org/fhir/sid/icd-10-cm (HL7 Terminology CodeSystem icd10CM) or SNOMED CT.
Condition.clinicalStatus/verificationStatus and EpisodeOfCare.status use the core code systems
condition-clinical, condition-ver-status and episode-of-care-status (hl7.fhir.r4b.core 4.3.0).
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import codes
from fhir_mapping import plan_of_care
from fhir_mapping.assessments import ENCOUNTER_ASSESSMENT
from fhir_mapping.assessments import ENCOUNTER_SESSION
from fhir_mapping.schemas import IdOf
from fhir_mapping.schemas import PatientId
from fhir_mapping.schemas import date_only
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
EXT_EPISODE = "http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare"
SYSTEMS = {"icd-10-cm": ICD10CM, "snomed": codes.SNOMED}
# Open statuses a clinic may start an episode in; finished/cancelled close it.
OPEN = ("planned", "waitlist", "active", "onhold")
CLOSED = ("finished", "cancelled", "entered-in-error")
# The code's shape only (no terminology server here): ICD-10-CM "M17.11", SNOMED CT an SCTID.
_SHAPES = {
    "icd-10-cm": re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"),
    "snomed": re.compile(r"^[1-9][0-9]{5,17}$"),
}


class ConditionInput(Schema):
    """The condition treated, coded as the referral gives it."""

    system = fields.String(required=True, validate=validate.OneOf(sorted(SYSTEMS)))
    code = fields.String(required=True, validate=validate.Length(min=1, max=20))
    display = fields.String(validate=validate.Length(min=1, max=300))

    @validates_schema(skip_on_field_errors=True)
    def _shape(self, data: dict[str, Any], **_: Any) -> None:
        if not _SHAPES[data["system"]].match(data["code"]):
            raise ValidationError(f"{data['code']!r} is not a {data['system']} code", field_name="code")


class EpisodeSchema(Schema):
    """POST /rehab/episodes."""

    patient = PatientId(required=True)
    start = date_only(required=True, future=True)
    status = fields.String(load_default="active", validate=validate.OneOf(OPEN))
    condition = fields.Nested(ConditionInput, required=True)
    referring = IdOf("Practitioner")
    care_manager = IdOf("Practitioner")


def build_episode(payload: dict[str, Any]) -> list[Entry]:
    """Return the Condition, the referral ServiceRequest (when a referrer is named) and the EpisodeOfCare."""
    patient = {"reference": f"Patient/{payload['patient']}"}
    given = payload["condition"]
    code = codes.coding(SYSTEMS[given["system"]], given["code"], given.get("display"))
    condition = entry(
        "condition",
        {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [codes.coding(CONDITION_CLINICAL, "active")]},
            "verificationStatus": {"coding": [codes.coding(CONDITION_VERIFICATION, "confirmed")]},
            "code": {"coding": [code]},
            "subject": patient,
            "recordedDate": payload["start"],
        },
    )
    entries = [condition]
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "status": payload["status"],
        "diagnosis": [{"condition": {"reference": condition.full_url}}],
        "patient": patient,
        "period": {"start": payload["start"]},
    }
    if payload.get("referring"):
        referral = entry(
            "referral",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": patient,
                "requester": {"reference": f"Practitioner/{payload['referring']}"},
                "reasonReference": [{"reference": condition.full_url}],
            },
        )
        entries.append(referral)
        episode["referralRequest"] = [{"reference": referral.full_url}]
    if payload.get("care_manager"):
        episode["careManager"] = {"reference": f"Practitioner/{payload['care_manager']}"}
    return [*entries, entry("episode", episode)]


def read_condition(condition: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the clinic condition of a Condition (first coding of a system we name), or None."""
    for c in ((condition or {}).get("code") or {}).get("coding") or []:
        for key, system in SYSTEMS.items():
            if c.get("system") == system and c.get("code"):
                out = {"system": key, "code": c["code"]}
                if c.get("display"):
                    out["display"] = c["display"]
                return out
    return None


def practitioner_id(reference: dict[str, Any] | None) -> str | None:
    """Return the id of a Practitioner reference, or None."""
    ref = str((reference or {}).get("reference") or "")
    return ref.removeprefix("Practitioner/") if ref.startswith("Practitioner/") else None


def read_episode(
    episode: dict[str, Any], condition: dict[str, Any] | None, referral: dict[str, Any] | None
) -> dict[str, Any]:
    """Return the clinic episode of its resources (inverse of build_episode)."""
    out: dict[str, Any] = {
        "patient": str(episode["patient"]["reference"]).removeprefix("Patient/"),
        "start": (episode.get("period") or {}).get("start"),
        "status": episode["status"],
    }
    found = read_condition(condition)
    if found is not None:
        out["condition"] = found
    referring = practitioner_id((referral or {}).get("requester"))
    if referring:
        out["referring"] = referring
    manager = practitioner_id(episode.get("careManager"))
    if manager:
        out["care_manager"] = manager
    return out


def read_built(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic episode of the entries build_episode wrote."""
    referral = of_role(entries, "referral")
    return read_episode(
        of_role(entries, "episode")[0], of_role(entries, "condition")[0], (referral or [None])[0]
    )


def link(entries: list[Entry], episode: str | None) -> list[Entry]:
    """Point an episode's Encounters, CarePlans, QuestionnaireResponses, ServiceRequests, Observations at it.

    Resources hanging off a linked Encounter (findings, Procedures) belong to the episode through it.
    """
    if not episode:
        return entries
    ref = {"reference": f"EpisodeOfCare/{episode}"}
    for e in entries:
        r = e.resource
        if r["resourceType"] == "Encounter":
            r["episodeOfCare"] = [ref]
        elif r["resourceType"] in ("CarePlan", "QuestionnaireResponse", "ServiceRequest") or (
            r["resourceType"] == "Observation" and "encounter" not in r
        ):
            r.setdefault("extension", []).append({"url": EXT_EPISODE, "valueReference": ref})
    return entries


def episode_of(resource: dict[str, Any]) -> str | None:
    """Return the EpisodeOfCare id a resource is linked to (element or extension), or None."""
    refs = [*(resource.get("episodeOfCare") or [])]
    refs += [
        e.get("valueReference") or {} for e in resource.get("extension") or [] if e.get("url") == EXT_EPISODE
    ]
    for ref in refs:
        text = str(ref.get("reference") or "")
        if text.startswith("EpisodeOfCare/"):
            return text.removeprefix("EpisodeOfCare/")
    return None


def _kind(encounter: dict[str, Any]) -> str | None:
    for concept in encounter.get("type") or []:
        for c in concept.get("coding") or []:
            if c.get("system") == codes.PT and c.get("code") in (ENCOUNTER_ASSESSMENT, ENCOUNTER_SESSION):
                return "assessments" if c["code"] == ENCOUNTER_ASSESSMENT else "sessions"
    return None


def clinic_view(
    episode: tuple[str, dict[str, Any]],
    condition: dict[str, Any] | None,
    referral: dict[str, Any] | None,
    linked: list[tuple[str, dict[str, Any]]],
    plan: tuple[tuple[str, str], int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Return the clinic view of an episode: what it treats, who referred, its visits, plans and outcomes.

    `linked` is every Encounter, CarePlan and QuestionnaireResponse of the episode ("Type/id", resource);
    `plan` the plan of care (("CarePlan/id", "ServiceRequest/id"), version, each version's certification).
    """
    ref, resource = episode
    out: dict[str, Any] = {"id": ref.split("/", 1)[1], **read_episode(resource, condition, referral)}
    end = (resource.get("period") or {}).get("end")
    if end:
        out["end"] = end
    out |= {"assessments": [], "sessions": [], "plans": [], "outcomes": []}
    for key, found in sorted(linked, key=lambda kv: _when(kv[1])):
        kind = found["resourceType"]
        if kind == "Encounter" and _kind(found):
            out[_kind(found)].append({"encounter": key, "date": _when(found)})
        elif kind == "CarePlan":
            out["plans"].append({"careplan": key, "date": _when(found), "status": found["status"]})
        elif kind == "QuestionnaireResponse":
            instrument = str(found.get("questionnaire") or "").rsplit("/", 1)[-1]
            out["outcomes"].append(
                {"questionnaire_response": key, "date": _when(found), "instrument": instrument}
            )
    out["visits_used"] = len(out["sessions"])
    out["warnings"] = []
    if plan is not None:
        refs, version, certs = plan
        dates = [v["date"] for v in out["sessions"]]
        out["plan_of_care"] = plan_of_care.summary(refs, version, certs, dates)
        for visit, warned in zip(out["sessions"], plan_of_care.visit_warnings(certs, dates), strict=True):
            visit["warnings"] = warned
            out["warnings"] += [{"encounter": visit["encounter"], "warning": w} for w in warned]
    return out


def _when(resource: dict[str, Any]) -> str:
    return str((resource.get("period") or {}).get("start") or resource.get("authored") or "")
