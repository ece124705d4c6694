"""POST /rehab/sessions: a session -> Encounter + one Procedure per intervention + pain before/after.

Procedure.code carries the CPT code (system http://www.ama-assn.org/go/cpt; 97112 VERIFIED
(secondary), 97110/97116/97140/97530 short names PARTIAL in the reference: the codes and their
short meaning were seen, the AMA long descriptors are copyrighted and not reproduced) and/or
our modality code; Procedure.category is SNOMED 91251008 Physical therapy procedure (VERIFIED).
Modality parameters use one complex extension (codes.EXT_PARAMETER) on the Procedure:
  {"url": ".../procedure-parameter", "extension": [
     {"url": "parameter", "valueCoding": {system: pt-measures, code: "param-frequency"}},
     {"url": "value", "valueQuantity": {value: 35, system: UCUM, code: "Hz"}}]}
because Procedure has no element for device settings. Minutes become performedPeriod, laid
end to end from the session start; pain before/after are pain_nrs Observations timed at the
session's start and end.
https://hl7.org/fhir/R4B/procedure.html
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import codes
from fhir_mapping.assessments import ENCOUNTER_SESSION
from fhir_mapping.assessments import encounter
from fhir_mapping.catalog import BODY_SITES
from fhir_mapping.observations import body_site
from fhir_mapping.observations import build_observation
from fhir_mapping.observations import ext
from fhir_mapping.observations import read_observation
from fhir_mapping.observations import side_of
from fhir_mapping.observations import site_of
from fhir_mapping.schemas import SIDES
from fhir_mapping.schemas import PatientId
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of
from fhir_mapping.units import accepted
from fhir_mapping.units import convert

PT_PROCEDURE = codes.coding(codes.SNOMED, "91251008", "Physical therapy procedure (regime/therapy)")
CPT_CODES = {
    "97112": "Neuromuscular reeducation",
    "97110": "Therapeutic exercise",
    "97116": "Gait training",
    "97140": "Manual therapy techniques",
    "97530": "Therapeutic activities",
}
PARAMETERS = {  # our code suffix -> display
    "frequency": "Frequency",
    "pulse_width": "Pulse width",
    "current": "Current amplitude",
    "duty_cycle": "Duty cycle",
    "duration": "Duration",
    "intensity": "Intensity",
    "temperature": "Temperature",
    "wavelength": "Wavelength",
    "energy_density": "Energy density",
    "power": "Power",
    "threshold": "Threshold",
}
MODALITIES: dict[str, tuple[str, dict[str, str]]] = {  # modality -> (display, parameter -> UCUM unit)
    "electrical_stimulation": (
        "Electrical stimulation",
        {"frequency": "Hz", "pulse_width": "us", "current": "mA", "duty_cycle": "%", "duration": "min"},
    ),
    "ultrasound": (
        "Therapeutic ultrasound",
        {"frequency": "MHz", "intensity": "W/cm2", "duty_cycle": "%", "duration": "min"},
    ),
    "cryotherapy": ("Cryotherapy", {"temperature": "Cel", "duration": "min"}),
    "laser": (
        "Low-level laser therapy",
        {"wavelength": "nm", "energy_density": "J/cm2", "power": "mW", "duration": "min"},
    ),
    "biofeedback": ("EMG biofeedback", {"threshold": "uV", "duration": "min"}),
}


class ParameterSchema(Schema):
    """One treatment parameter: 35 Hz, 250 us, 1.5 W/cm2."""

    parameter = fields.String(required=True, validate=validate.OneOf(sorted(PARAMETERS)))
    value = fields.Float(required=True, validate=validate.Range(min=0))
    unit = fields.String(required=True)


class InterventionSchema(Schema):
    """One billed intervention (CPT) and/or modality with its parameters."""

    cpt = fields.String(validate=validate.OneOf(sorted(CPT_CODES)))
    modality = fields.String(validate=validate.OneOf(sorted(MODALITIES)))
    minutes = fields.Integer(required=True, validate=validate.Range(min=1, max=240))
    description = fields.String(validate=validate.Length(min=1, max=1000))
    body_site = fields.String(validate=validate.OneOf(sorted(BODY_SITES)))
    side = fields.String(validate=validate.OneOf(SIDES))
    parameters = fields.List(fields.Nested(ParameterSchema), validate=validate.Length(max=20))

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("cpt") and not data.get("modality"):
            raise ValidationError("An intervention needs cpt or modality (or both)", field_name="cpt")
        params = data.get("parameters") or []
        if params and not data.get("modality"):
            raise ValidationError("Parameters belong to a modality", field_name="parameters")
        units = MODALITIES[data["modality"]][1] if params else {}
        errors: dict[int, Any] = {}
        for i, p in enumerate(params):
            canonical = units.get(p["parameter"])
            if canonical is None:
                errors[i] = {"parameter": [f"{data['modality']} takes {sorted(units)}"]}
            elif convert(p["value"], p["unit"], canonical) is None:
                errors[i] = {
                    "unit": [
                        f"{p['unit']!r} does not convert to {canonical!r}; accepted: "
                        f"{', '.join(accepted(canonical))}"
                    ]
                }
        if errors:
            raise ValidationError({"parameters": errors})

    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        for p in data.get("parameters") or []:
            canonical = MODALITIES[data["modality"]][1][p["parameter"]]
            p["value"] = codes.number(convert(p["value"], p["unit"], canonical) or 0.0)
            p["unit"] = canonical
        return data


class SessionSchema(Schema):
    """POST /rehab/sessions."""

    patient = PatientId(required=True)
    date = fields.AwareDateTime(required=True, format="iso")
    interventions = fields.List(
        fields.Nested(InterventionSchema), required=True, validate=validate.Length(min=1, max=50)
    )
    pain_before = fields.Integer(validate=validate.Range(min=0, max=10))
    pain_after = fields.Integer(validate=validate.Range(min=0, max=10))
    note = fields.String(validate=validate.Length(min=1, max=2000))

    @post_load
    def _date(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["date"] = stamp(data["date"])
        return data


def stamp(moment: datetime) -> str:
    """Return a FHIR dateTime with seconds and the offset (Z for UTC)."""
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_instant(text: str) -> datetime:
    """Parse a FHIR dateTime with an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _parameter(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": codes.EXT_PARAMETER,
        "extension": [
            {
                "url": "parameter",
                "valueCoding": codes.coding(codes.PT, f"param-{p['parameter']}", PARAMETERS[p["parameter"]]),
            },
            {"url": "value", "valueQuantity": codes.quantity(p["value"], p["unit"])},
        ],
    }


def build_procedure(item: dict[str, Any], patient: str, start: datetime, enc_url: str) -> dict[str, Any]:
    """Return the Procedure for one intervention performed from `start`."""
    coding = []
    if item.get("cpt"):
        coding.append(codes.coding(codes.CPT, item["cpt"], CPT_CODES[item["cpt"]]))
    if item.get("modality"):
        coding.append(codes.coding(codes.PT, f"modality-{item['modality']}", MODALITIES[item["modality"]][0]))
    text = item.get("description") or (
        CPT_CODES.get(item.get("cpt") or "") or MODALITIES[item["modality"]][0]
    )
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "status": "completed",
        "category": {"coding": [PT_PROCEDURE]},
        "code": {"coding": coding, "text": text},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": enc_url},
        "performedPeriod": {"start": stamp(start), "end": stamp(start + timedelta(minutes=item["minutes"]))},
    }
    if item.get("parameters"):
        proc["extension"] = [_parameter(p) for p in item["parameters"]]
    site = body_site(item.get("body_site"), item.get("side"))
    if site is not None:
        proc["bodySite"] = [site]
    return proc


def build_session(payload: dict[str, Any]) -> list[Entry]:
    """Return the Encounter, its Procedures and the pain Observations of a session."""
    patient, start = payload["patient"], parse_instant(payload["date"])
    end = start + timedelta(minutes=sum(i["minutes"] for i in payload["interventions"]))
    enc = encounter(patient, ENCOUNTER_SESSION, payload["date"], stamp(end))
    if payload.get("note"):
        enc["reasonCode"] = [{"text": payload["note"]}]
    enc_entry = entry("encounter", enc)
    entries = [enc_entry]
    cursor = start
    for item in payload["interventions"]:
        entries.append(entry("procedure", build_procedure(item, patient, cursor, enc_entry.full_url)))
        cursor += timedelta(minutes=item["minutes"])
    for role, when in (("pain_before", payload["date"]), ("pain_after", stamp(end))):
        if role in payload:
            finding = {"measure": "pain_nrs", "value": payload[role], "unit": "{score}"}
            entries.append(
                entry(role, build_observation(finding, patient, when, encounter=enc_entry.full_url))
            )
    return entries


def read_procedure(proc: dict[str, Any]) -> dict[str, Any]:
    """Return the clinic intervention of a Procedure (inverse of build_procedure)."""
    out: dict[str, Any] = {}
    for c in (proc.get("code") or {}).get("coding") or []:
        if c.get("system") == codes.CPT:
            out["cpt"] = c["code"]
        elif c.get("system") == codes.PT and str(c.get("code", "")).startswith("modality-"):
            out["modality"] = c["code"].removeprefix("modality-")
    period = proc.get("performedPeriod") or {}
    out["minutes"] = int(
        (parse_instant(period["end"]) - parse_instant(period["start"])).total_seconds() // 60
    )
    text = (proc.get("code") or {}).get("text")
    if text and text != (
        CPT_CODES.get(out.get("cpt") or "") or MODALITIES.get(out.get("modality", ""), ("",))[0]
    ):
        out["description"] = text
    site = (proc.get("bodySite") or [None])[0]
    if site_of(site):
        out["body_site"] = site_of(site)
    if side_of(site):
        out["side"] = side_of(site)
    params = []
    for e in proc.get("extension") or []:
        if e.get("url") == codes.EXT_PARAMETER:
            code = ext(e, "parameter")["valueCoding"]["code"]  # type: ignore[index]
            q = ext(e, "value")["valueQuantity"]  # type: ignore[index]
            params.append(
                {
                    "parameter": code.removeprefix("param-"),
                    "value": codes.number(q["value"]),
                    "unit": q["code"],
                }
            )
    if params:
        out["parameters"] = params
    return out


def read_session(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of a session's resources (inverse of build_session)."""
    enc = of_role(entries, "encounter")[0]
    out: dict[str, Any] = {
        "patient": patient_of(enc),
        "date": enc["period"]["start"],
        "interventions": [read_procedure(p) for p in of_role(entries, "procedure")],
    }
    for role in ("pain_before", "pain_after"):
        for obs in of_role(entries, role):
            finding = read_observation(obs)
            if finding is not None:
                out[role] = finding["value"]
    if enc.get("reasonCode"):
        out["note"] = enc["reasonCode"][0]["text"]
    return out
