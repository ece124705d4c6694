"""Instrument Questionnaires (issue 17, item 6, first part): seeded with the terminology, each
QuestionnaireResponse /rehab/outcomes writes points to one that resolves, with its linkIds and
the scores as ordinalValue. Runs on SQLite and PostgreSQL (the database_url fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mapping import outcomes
from fhir_mapping import questionnaires
from server.api.rehab_routes import seed_terminology
from tests.conftest import FhirClient
from tests.functional.test_episode import patient
from tests.functional.test_episode import post
from tests.functional.test_rehab import OUTCOME

pytestmark = pytest.mark.pg


def test_each_response_resolves_to_its_questionnaire(app: Any, fhir: FhirClient) -> None:
    written = seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    assert {f"Questionnaire/{q['id']}" for q in questionnaires.resources()} <= set(written)
    assert seed_terminology(app, app.config["REHABFHIR_SETTINGS"]) == []  # unchanged: not rewritten
    r = post(fhir, "/rehab/outcomes", {"patient": patient(fhir), **OUTCOME})
    assert r.status_code == 201, r.get_data(as_text=True)
    qr = fhir.call("GET", "/" + r.get_json()["references"]["questionnaire_response"][0]).get_json()
    found = fhir.call("GET", f"/Questionnaire?url={qr['questionnaire']}").get_json()
    (entry,) = found["entry"]
    lefs = entry["resource"]
    assert lefs["url"] == qr["questionnaire"] and lefs["status"] == "active" and lefs["copyright"]
    assert {i["linkId"] for i in qr["item"]} <= {i["linkId"] for i in lefs["item"]}
    first = lefs["item"][0]
    assert first["type"] == "choice" and first["text"] == "Item 1"
    assert [o["valueInteger"] for o in first["answerOption"]] == [0, 1, 2, 3, 4]
    assert first["answerOption"][4]["extension"] == [{"url": questionnaires.ORDINAL, "valueDecimal": 4}]


def test_every_instrument_has_one_and_wide_scales_are_bounded_integers(app: Any, fhir: FhirClient) -> None:
    seed_terminology(app, app.config["REHABFHIR_SETTINGS"])
    for key, instrument in outcomes.INSTRUMENTS.items():
        stored = fhir.call("GET", f"/Questionnaire/{key.replace('_', '-')}").get_json()
        assert stored["url"].endswith(f"/Questionnaire/{key}") and len(stored["item"]) == instrument.items
    abc = fhir.call("GET", "/Questionnaire/abc").get_json()["item"][0]
    assert abc["type"] == "integer" and "answerOption" not in abc
    assert abc["extension"] == [
        {"url": questionnaires.MIN_VALUE, "valueInteger": 0},
        {"url": questionnaires.MAX_VALUE, "valueInteger": 100},
    ]
