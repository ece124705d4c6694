"""UCUM codes whose factor is beyond a double convert to nothing instead of raising.

`10*999` or `km300` overflowed and an exponent of thousands of digits broke int(): the
exception reached the client as a 500, on a search by such a unit and on a create of a resource
holding one (the indexer converts its quantities).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from server.fhir.http import FhirRequest
from server.fhir.search.indexer import index_resource
from server.fhir.search.params import parse_search
from server.fhir.search.query import QuantityValue
from server.fhir.search.ucum import canonical

UCUM = "http://unitsofmeasure.org"
OUT_OF_RANGE = ["10*999", "km300", "10*200.10*200", "10*-999", "10*" + "9" * 5000, "g" + "9" * 5000]


@pytest.mark.parametrize("code", OUT_OF_RANGE)
def test_a_factor_beyond_a_double_converts_nothing(code: str) -> None:
    assert canonical(Decimal(1), code) is None
    assert canonical(Decimal(5), "mg") == (0.005, "g")  # and the codes next to them still convert


@pytest.mark.parametrize("code", OUT_OF_RANGE)
def test_such_a_unit_is_indexed_and_searched_as_written(code: str) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": 2, "system": UCUM, "code": code},
    }
    (row,) = [q for q in index_resource(observation).quantities if q.param == "value-quantity"]
    assert (row.value, row.system, row.code, row.canon_value, row.canon_code) == (
        Decimal(2),
        UCUM,
        code,
        None,
        None,
    )
    request = FhirRequest(
        "GET", "http://example.com/fhir", params=(("value-quantity", f"2|{UCUM}|{code}"),), headers={}
    )
    (test,) = parse_search(request, ("Observation",)).tests
    (value,) = test.values
    assert isinstance(value, QuantityValue)
    assert (value.value, value.system, value.code, value.canon_code) == (Decimal(2), UCUM, code, None)
