"""POST /rehab/outcomes: an instrument's item responses -> QuestionnaireResponse + scored Observation.

Scoring rules (reference §2, instruments' published scoring):
  LEFS   20 items 0-4, total = sum (0-80); every item needed.
  ODI    10 sections 0-5, % = sum / (5 x answered) x 100; one unanswered section allowed.
  NDI    10 items 0-5, % = sum / (5 x answered) x 100; one unanswered item allowed.
  QuickDASH 11 items 1-5, score = (sum / n - 1) x 25 (0-100); at most one unanswered.
  ABC    16 items 0-100 %, score = sum / 16 (mean %); every item needed.
  Berg 14 x 0-4 (0-56), FGA 10 x 0-3 (0-30), DGI 8 x 0-3 (0-24), Fugl-Meyer UE motor
  33 x 0-2 (0-66) and LE motor 17 x 0-2 (0-34): sums, every item needed.
Only item identifiers (linkId "1".."n") and scores are stored, never item wording.
https://hl7.org/fhir/R4B/questionnaireresponse.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import codes
from fhir_mapping.catalog import get
from fhir_mapping.observations import build_observation
from fhir_mapping.observations import read_observation
from fhir_mapping.schemas import IdOf
from fhir_mapping.schemas import PatientId
from fhir_mapping.schemas import date_time
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of


@dataclass(frozen=True, slots=True)
class Instrument:
    """A scored instrument: its items, their range, the rule and how many items may be missing."""

    key: str
    measure: str
    items: int
    low: int
    high: int
    rule: str  # sum | percent | dash | mean
    max_missing: int = 0

    def link_ids(self) -> list[str]:
        """Item identifiers "1".."n"."""
        return [str(i) for i in range(1, self.items + 1)]


INSTRUMENTS = {
    i.key: i
    for i in (
        Instrument("lefs", "lefs_total", 20, 0, 4, "sum"),
        Instrument("odi", "odi_score", 10, 0, 5, "percent", max_missing=1),
        Instrument("ndi", "ndi_score", 10, 0, 5, "percent", max_missing=1),
        Instrument("quickdash", "quickdash_score", 11, 1, 5, "dash", max_missing=1),
        Instrument("abc", "abc_scale", 16, 0, 100, "mean"),
        Instrument("berg", "berg_balance_total", 14, 0, 4, "sum"),
        Instrument("fga", "fga_total", 10, 0, 3, "sum"),
        Instrument("dgi", "dgi_total", 8, 0, 3, "sum"),
        Instrument("fugl_meyer_ue", "fugl_meyer_ue_motor", 33, 0, 2, "sum"),
        Instrument("fugl_meyer_le", "fugl_meyer_le_motor", 17, 0, 2, "sum"),
    )
}


def problems(instrument: Instrument, items: dict[str, Any]) -> dict[str, str]:
    """Return {item or "": message} for unknown items, values out of range and too many missing."""
    errors = {}
    for link, value in items.items():
        if link not in instrument.link_ids():
            errors[link] = f"{instrument.key} has items 1-{instrument.items}"
        elif (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not instrument.low <= value <= instrument.high
        ):
            errors[link] = f"{instrument.key} items take a whole number {instrument.low}-{instrument.high}"
    missing = [i for i in instrument.link_ids() if i not in items]
    if len(missing) > instrument.max_missing and not errors:
        errors[""] = (
            f"{instrument.key} allows {instrument.max_missing} unanswered item(s); "
            f"missing: {', '.join(missing)}"
        )
    return errors


def score(instrument: Instrument, items: dict[str, int]) -> float | int:
    """Score complete-enough item responses by the instrument's published rule."""
    values = [items[i] for i in instrument.link_ids() if i in items]
    total, n = sum(values), len(values)
    if instrument.rule == "sum":
        return total
    if instrument.rule == "percent":
        return codes.number(round(total / (instrument.high * n) * 100, 2))
    if instrument.rule == "dash":
        return codes.number(round((total / n - 1) * 25, 2))
    return codes.number(round(total / instrument.items, 2))  # mean


class OutcomeSchema(Schema):
    """POST /rehab/outcomes."""

    patient = PatientId(required=True)
    episode = IdOf("EpisodeOfCare")
    date = date_time()
    instrument = fields.String(required=True, validate=validate.OneOf(sorted(INSTRUMENTS)))
    items = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)

    @validates_schema
    def _items(self, data: dict[str, Any], **_: Any) -> None:
        errors = problems(INSTRUMENTS[data["instrument"]], data["items"])
        if errors:
            raise ValidationError(
                {"items": {k: [v] for k, v in errors.items() if k}}
                if any(errors)
                else {"items": [errors[""]]}
            )


def build_outcome(payload: dict[str, Any]) -> list[Entry]:
    """Return the QuestionnaireResponse and the scored Observation derived from it."""
    instrument = INSTRUMENTS[payload["instrument"]]
    patient, date = payload["patient"], payload["date"]
    items = payload["items"]
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{codes.QUESTIONNAIRE}/{instrument.key}",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": date,
        "item": [
            {"linkId": i, "answer": [{"valueInteger": items[i]}]} for i in instrument.link_ids() if i in items
        ],
    }
    qr_entry = entry("questionnaire_response", qr)
    measure = get(instrument.measure)
    assert measure is not None and measure.unit is not None
    finding = {"measure": measure.key, "value": score(instrument, items), "unit": measure.unit}
    obs = build_observation(finding, patient, date, derived_from=[qr_entry.full_url])
    return [qr_entry, entry("score", obs)]


def read_outcome(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of an outcome's resources (inverse of build_outcome)."""
    qr = of_role(entries, "questionnaire_response")[0]
    return {
        "patient": patient_of(qr),
        "date": qr["authored"],
        "instrument": qr["questionnaire"].rsplit("/", 1)[-1],
        "items": {i["linkId"]: i["answer"][0]["valueInteger"] for i in qr.get("item") or []},
    }


def read_score(entries: list[Entry]) -> dict[str, Any] | None:
    """Return the scored finding of an outcome's resources."""
    return read_observation(of_role(entries, "score")[0])
