"""POST /rehab/sessions: a session -> Encounter + one Procedure per intervention + pain before/after.

One meaning per CodeableConcept: Procedure.code is the billed code (CPT or HCPCS, from
billing.PROCEDURE_CODES, each checked against a cited public source) or, for a modality given
without one, our modality code; the modality itself goes in its own extension
(codes.EXT_MODALITY), never as a second coding beside the CPT code. Attended and unattended
electrical stimulation are told apart by the code (97032 attended; 97014 / G0283 unattended),
and a modality takes only the codes that bill it. Procedure.category is SNOMED 91251008
Physical therapy procedure (VERIFIED). Modality parameters use one complex extension
(codes.EXT_PARAMETER) on the Procedure:
  {"url": ".../procedure-parameter", "extension": [
     {"url": "parameter", "valueCoding": {system: pt-measures, code: "param-frequency"}},
     {"url": "value", "valueQuantity": {value: 35, system: UCUM, code: "Hz"}}]}
because Procedure has no element for device settings; values keep the unit entered. Minutes
become performedPeriod, laid end to end from the session start; billing units follow the CMS
8-minute rule (billing.units). The session note is Procedure.note (Encounter has no note
element in R4B; reasonCode is why the visit happened). The performer, when the token names a
Practitioner, is Encounter.participant, Procedure.performer and Observation.performer. Pain
before/after are pain_nrs Observations at the session's start and end, marked pre-/post-
treatment (codes.EXT_SESSION_TIMING) so progress reports them as a within-session change.
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

from fhir_mapping import billing
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
from fhir_mapping.schemas import SITE_SIDES
from fhir_mapping.schemas import IdOf
from fhir_mapping.schemas import PatientId
from fhir_mapping.schemas import not_future
from fhir_mapping.schemas import quantity_in
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of
from fhir_mapping.units import accepted
from fhir_mapping.units import resolve

PT_PROCEDURE = codes.coding(codes.SNOMED, "91251008", "Physical therapy procedure (regime/therapy)")
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
    "hot_pack": ("Hot pack", {"temperature": "Cel", "duration": "min"}),
    "iontophoresis": ("Iontophoresis", {"current": "mA", "duration": "min"}),
    "traction": ("Mechanical traction", {"duration": "min"}),
}


class ParameterSchema(Schema):
    """One treatment parameter: 35 Hz, 250 us, 1.5 W/cm2."""

    parameter = fields.String(required=True, validate=validate.OneOf(sorted(PARAMETERS)))
    value = fields.Float(required=True, validate=validate.Range(min=0))
    unit = fields.String(required=True)


class InterventionSchema(Schema):
    """One intervention: a billed code (CPT/HCPCS) and/or a modality with its parameters."""

    cpt = fields.String(
        validate=validate.OneOf(sorted(billing.BY_CODE), error="Not a code we bill: one of {choices}")
    )
    modality = fields.String(validate=validate.OneOf(sorted(MODALITIES)))
    minutes = fields.Integer(required=True, validate=validate.Range(min=1, max=240))
    description = fields.String(validate=validate.Length(min=1, max=1000))
    body_site = fields.String(validate=validate.OneOf(sorted(BODY_SITES)))
    side = fields.String(validate=validate.OneOf(SITE_SIDES))
    parameters = fields.List(fields.Nested(ParameterSchema), validate=validate.Length(max=20))

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("cpt") and not data.get("modality"):
            raise ValidationError("An intervention needs cpt or modality (or both)", field_name="cpt")
        modality = data.get("modality")
        if modality and data.get("cpt") and data["cpt"] not in billing.codes_for(modality):
            billed = billing.codes_for(modality)
            raise ValidationError(
                f"{data['cpt']} does not bill {modality}: "
                + (f"use one of {billed}" if billed else "no verified code bills it; send it without cpt"),
                field_name="cpt",
            )
        params = data.get("parameters") or []
        if params and not modality:
            raise ValidationError("Parameters belong to a modality", field_name="parameters")
        units = MODALITIES[modality][1] if params else {}
        errors: dict[int, Any] = {}
        for i, p in enumerate(params):
            canonical = units.get(p["parameter"])
            if canonical is None:
                errors[i] = {"parameter": [f"{modality} takes {sorted(units)}"]}
            elif resolve(p["unit"], canonical) is None:
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
            p.update(quantity_in(p, canonical))
        return data


class SessionSchema(Schema):
    """POST /rehab/sessions."""

    patient = PatientId(required=True)
    episode = IdOf("EpisodeOfCare")
    date = fields.AwareDateTime(required=True, format="iso", validate=not_future)
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


def _code(item: dict[str, Any]) -> dict[str, Any]:
    """Procedure.code: the billed code, else our modality code; one meaning either way."""
    if item.get("cpt"):
        billed = billing.BY_CODE[item["cpt"]]
        coding = codes.coding(billed.system, billed.code, billed.display)
        default = billed.display
    else:
        default = MODALITIES[item["modality"]][0]
        coding = codes.coding(codes.PT, f"modality-{item['modality']}", default)
    return {"coding": [coding], "text": item.get("description") or default}


def _reference(performer: str | None) -> dict[str, Any] | None:
    return {"reference": performer} if performer else None


def build_procedure(
    item: dict[str, Any],
    patient: str,
    start: datetime,
    enc_url: str,
    note: str | None = None,
    performer: str | None = None,
) -> dict[str, Any]:
    """Return the Procedure for one intervention performed from `start`."""
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "status": "completed",
        "category": {"coding": [PT_PROCEDURE]},
        "code": _code(item),
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": enc_url},
        "performedPeriod": {"start": stamp(start), "end": stamp(start + timedelta(minutes=item["minutes"]))},
    }
    extensions = []
    if item.get("modality"):
        display = MODALITIES[item["modality"]][0]
        extensions.append(
            {
                "url": codes.EXT_MODALITY,
                "valueCodeableConcept": {
                    "coding": [codes.coding(codes.PT, f"modality-{item['modality']}", display)],
                    "text": display,
                },
            }
        )
    extensions += [_parameter(p) for p in item.get("parameters") or []]
    if extensions:
        proc["extension"] = extensions
    if performer:
        proc["performer"] = [{"actor": _reference(performer)}]
    site = body_site(item.get("body_site"), item.get("side"))
    if site is not None:
        proc["bodySite"] = [site]
    if note:
        proc["note"] = [{"text": note}]
    return proc


def performer_of(fhir_user: str | None) -> str | None:
    """Return the Practitioner reference a token's fhirUser names, or None (patients do not perform)."""
    if fhir_user and fhir_user.split("/")[-2:-1] in (["Practitioner"], ["PractitionerRole"]):
        return "/".join(fhir_user.split("/")[-2:])
    return None


def build_session(payload: dict[str, Any], performer: str | None = None) -> list[Entry]:
    """Return the Encounter, its Procedures and the pain Observations of a session."""
    patient, start = payload["patient"], parse_instant(payload["date"])
    end = start + timedelta(minutes=sum(i["minutes"] for i in payload["interventions"]))
    enc = encounter(patient, ENCOUNTER_SESSION, payload["date"], stamp(end))
    if performer:
        enc["participant"] = [{"individual": _reference(performer)}]
    enc_entry = entry("encounter", enc)
    entries = [enc_entry]
    cursor = start
    for item in payload["interventions"]:
        proc = build_procedure(item, patient, cursor, enc_entry.full_url, payload.get("note"), performer)
        entries.append(entry("procedure", proc))
        cursor += timedelta(minutes=item["minutes"])
    for role, when, timing in (
        ("pain_before", payload["date"], "pre-treatment"),
        ("pain_after", stamp(end), "post-treatment"),
    ):
        if role in payload:
            finding = {"measure": "pain_nrs", "value": payload[role], "unit": "{score}"}
            obs = build_observation(finding, patient, when, encounter=enc_entry.full_url, timing=timing)
            if performer:
                obs["performer"] = [_reference(performer)]
            entries.append(entry(role, obs))
    return entries


def read_procedure(proc: dict[str, Any]) -> dict[str, Any]:
    """Return the clinic intervention of a Procedure (inverse of build_procedure)."""
    out: dict[str, Any] = {}
    for c in (proc.get("code") or {}).get("coding") or []:
        if c.get("system") in (codes.CPT, codes.HCPCS):
            out["cpt"] = c["code"]
        elif c.get("system") == codes.PT and str(c.get("code", "")).startswith("modality-"):
            out["modality"] = c["code"].removeprefix("modality-")  # a modality given without a code
    modality = (ext(proc, codes.EXT_MODALITY) or {}).get("valueCodeableConcept") or {}
    for c in modality.get("coding") or []:
        if c.get("system") == codes.PT and str(c.get("code", "")).startswith("modality-"):
            out["modality"] = c["code"].removeprefix("modality-")
    period = proc.get("performedPeriod") or {}
    out["minutes"] = int(
        (parse_instant(period["end"]) - parse_instant(period["start"])).total_seconds() // 60
    )
    text = (proc.get("code") or {}).get("text")
    billed = billing.BY_CODE.get(out.get("cpt") or "")
    if text and text != (billed.display if billed else MODALITIES.get(out.get("modality", ""), ("",))[0]):
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
    notes = [n["text"] for p in of_role(entries, "procedure") for n in p.get("note") or [] if n.get("text")]
    if notes:
        out["note"] = notes[0]
    return out


def read_billing(entries: list[Entry]) -> dict[str, Any]:
    """Return the session's billing units (CMS 8-minute rule) from its Procedures."""
    performed = []
    for proc in of_role(entries, "procedure"):
        item = read_procedure(proc)
        if item.get("cpt"):
            performed.append((item["cpt"], item["minutes"]))
    return billing.units(performed)
