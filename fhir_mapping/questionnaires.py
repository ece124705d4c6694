"""The Questionnaire each scored instrument's QuestionnaireResponse points to (issue 17, item 6, first part).

POST /rehab/outcomes writes QuestionnaireResponse.questionnaire = {BASE}/Questionnaire/{instrument};
these resources carry that canonical `url`, so it resolves (GET /Questionnaire?url=...). Items are
"1".."n" as the responses' linkIds. Item wording is not reproduced: several instruments (e.g. ODI,
NDI, QuickDASH, LEFS) are copyrighted by their authors or publishers, so each item says only its
number and `copyright` says where the licensed text comes from. Answers are the scores the
instrument allows, as `answerOption.valueInteger` with the core extension
http://hl7.org/fhir/StructureDefinition/ordinalValue (context Questionnaire.item.answerOption,
valueDecimal; StructureDefinition-ordinalValue.json in hl7.fhir.r4b.core 4.3.0); an item scored
0..100 (ABC) is an integer item bounded by the core minValue / maxValue extensions (context
Questionnaire.item, same package) instead of 101 options.
https://hl7.org/fhir/R4B/questionnaire.html
"""

from __future__ import annotations

from typing import Any

from fhir_mapping import codes
from fhir_mapping.catalog import get
from fhir_mapping.outcomes import INSTRUMENTS
from fhir_mapping.outcomes import Instrument

ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
MAX_OPTIONS = 11  # more possible scores than this: an integer item with bounds
RULES = {
    "sum": "the sum of the item scores",
    "percent": "the sum of the answered items as a percentage of their maximum",
    "dash": "(mean of the answered items - 1) x 25",
    "mean": "the mean of the item scores",
}
COPYRIGHT = (
    "Item wording is not reproduced here: use the instrument as licensed by its authors or publisher. "
    "This Questionnaire gives the item numbers (linkIds) and the scores each item allows, as "
    "rehabfhir scores them."
)


def _item(instrument: Instrument, link_id: str) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": link_id, "text": f"Item {link_id}"}
    if instrument.high - instrument.low + 1 > MAX_OPTIONS:
        item["type"] = "integer"
        item["extension"] = [
            {"url": MIN_VALUE, "valueInteger": instrument.low},
            {"url": MAX_VALUE, "valueInteger": instrument.high},
        ]
        return item
    item["type"] = "choice"
    item["answerOption"] = [
        {"extension": [{"url": ORDINAL, "valueDecimal": score}], "valueInteger": score}
        for score in range(instrument.low, instrument.high + 1)
    ]
    return item


def questionnaire(instrument: Instrument) -> dict[str, Any]:
    """Return the Questionnaire of one instrument."""
    measure = get(instrument.measure)
    title = measure.display if measure is not None else instrument.key
    missing = f"; up to {instrument.max_missing} item(s) may be left out" if instrument.max_missing else ""
    return {
        "resourceType": "Questionnaire",
        "id": instrument.key.replace("_", "-"),
        "url": f"{codes.QUESTIONNAIRE}/{instrument.key}",
        "name": "".join(part.capitalize() for part in instrument.key.split("_")),
        "title": title,
        "status": "active",
        "subjectType": ["Patient"],
        "description": f"{instrument.items} items scored {instrument.low} to {instrument.high}; "
        f"the score is {RULES[instrument.rule]}{missing}.",
        "copyright": COPYRIGHT,
        "item": [_item(instrument, link_id) for link_id in instrument.link_ids()],
    }


def resources() -> list[dict[str, Any]]:
    """Every instrument's Questionnaire."""
    return [questionnaire(i) for i in INSTRUMENTS.values()]
