"""Parsing search parameters into a SearchQuery: values, modifiers, prefixes, chains, errors."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from server.errors import InvalidRequestError
from server.fhir.http import FhirRequest
from server.fhir.search.params import decode_cursor
from server.fhir.search.params import encode_cursor
from server.fhir.search.params import parse_criteria
from server.fhir.search.params import parse_search
from server.fhir.search.params import split_escaped
from server.fhir.search.query import ChainTest
from server.fhir.search.query import CompositeValue
from server.fhir.search.query import Cursor
from server.fhir.search.query import HasTest
from server.fhir.search.query import IdTest
from server.fhir.search.query import Include
from server.fhir.search.query import LastUpdatedTest
from server.fhir.search.query import MissingTest
from server.fhir.search.query import ParamTest
from server.fhir.search.query import QuantityValue
from server.fhir.search.query import RangeValue
from server.fhir.search.query import ReferenceValue
from server.fhir.search.query import SortKey
from server.fhir.search.query import TextValue
from server.fhir.search.query import TokenValue
from server.fhir.search.query import UriValue

BASE = "http://example.com/fhir"


def _req(*params: tuple[str, str], strict: bool = False) -> FhirRequest:
    headers = {"prefer": "handling=strict"} if strict else {}
    return FhirRequest("GET", BASE, params=params, headers=headers, default_count=20, max_count=100)


def _test(type_: str, key: str, value: str):  # type: ignore[no-untyped-def]
    (test,) = parse_search(_req((key, value)), (type_,)).tests
    return test


TOKENS = [
    ("http://loinc.org|1234", TokenValue("http://loinc.org", "1234")),
    ("1234", TokenValue(None, "1234")),
    ("http://loinc.org|", TokenValue("http://loinc.org", None)),
    ("|1234", TokenValue("", "1234")),
    (r"a\|b|c", TokenValue("a|b", "c")),
]


@pytest.mark.parametrize(("raw", "value"), TOKENS, ids=[r for r, _ in TOKENS])
def test_token_forms(raw: str, value: TokenValue) -> None:
    assert _test("Observation", "code", raw) == ParamTest("code", "token", (value,))


def test_comma_is_or_and_escaped_comma_is_not() -> None:
    assert _test("Patient", "family", "a,b").values == (TextValue("a"), TextValue("b"))
    assert _test("Patient", "family", r"a\,b").values == (TextValue("a,b"),)
    assert split_escaped(r"x\$y$z", "$") == [r"x\$y", "z"]


def test_string_modifiers_normalise_except_exact() -> None:
    assert _test("Patient", "family", "MÜLLER").values == (TextValue("muller"),)
    assert _test("Patient", "family:exact", "Müller") == ParamTest(
        "family", "string", (TextValue("Müller"),), "exact"
    )
    assert _test("Patient", "family:contains", "Ül").modifier == "contains"


def test_token_modifiers() -> None:
    assert _test("Patient", "gender:not", "male").modifier == "not"
    assert _test("Observation", "code:text", "Body").values == (TextValue("body"),)
    of_type = _test("Patient", "identifier:of-type", "http://sys|MR|123")
    assert of_type == ParamTest("identifier:of-type", "token", (TokenValue("http://sys", "MR|123"),))
    ident = _test("Observation", "subject:identifier", "urn:mrn|1")
    assert ident == ParamTest("subject:identifier", "token", (TokenValue("urn:mrn", "1"),))


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_date_prefixes_and_precision(prefix: str) -> None:
    (value,) = _test("Patient", "birthdate", f"{prefix}2020-02").values
    assert value == RangeValue(prefix, datetime(2020, 2, 1), datetime(2020, 3, 1))


def test_number_precision() -> None:
    (value,) = _test("RiskAssessment", "probability", "gt0.25").values
    assert value == RangeValue("gt", Decimal("0.245"), Decimal("0.255"), Decimal("0.25"))
    (value,) = _test("RiskAssessment", "probability", "100").values
    assert (value.low, value.high) == (Decimal("99.5"), Decimal("100.5"))


def test_quantity_with_ucum_canonical() -> None:
    (value,) = _test("Observation", "value-quantity", "le5.4|http://unitsofmeasure.org|mg").values
    assert isinstance(value, QuantityValue)
    assert (value.prefix, value.value, value.system, value.code) == (
        "le",
        Decimal("5.4"),
        "http://unitsofmeasure.org",
        "mg",
    )
    assert value.canon_code == "g" and value.canon_value == pytest.approx(0.0054)
    (plain,) = _test("Observation", "value-quantity", "5||[arb'U]").values
    assert plain.canon_code is None and plain.system is None and plain.code == "[arb'U]"


REFERENCES = [
    ("subject", "Patient/1", ReferenceValue("Patient", "1")),
    ("subject", f"{BASE}/Patient/1", ReferenceValue("Patient", "1")),
    ("subject", f"{BASE}/Patient/1/_history/2", ReferenceValue("Patient", "1")),
    ("subject", "http://other.org/Patient/1", ReferenceValue(None, None, "http://other.org/Patient/1")),
    ("subject", "1", ReferenceValue(None, "1", "1")),
    ("subject:Patient", "1", ReferenceValue("Patient", "1")),
    ("patient", "1", ReferenceValue("Patient", "1", "1")),
]


@pytest.mark.parametrize(("key", "raw", "value"), REFERENCES, ids=[f"{k}={r}" for k, r, _ in REFERENCES])
def test_reference_forms(key: str, raw: str, value: ReferenceValue) -> None:
    assert _test("Observation", key, raw).values == (value,)


def test_uri_composite_missing_id_lastupdated() -> None:
    assert _test("ValueSet", "url:below", "http://x").values == (UriValue("http://x"),)
    comp = _test("Observation", "code-value-quantity", "http://loinc.org|8480-6$gt100")
    assert comp.type == "composite" and isinstance(comp.values[0], CompositeValue)
    assert [p[0] for p in comp.values[0].parts] == ["token", "quantity"]
    assert _test("Observation", "code-value-quantity:missing", "true") == MissingTest(
        "code-value-quantity$1", "quantity", True
    )
    assert _test("Patient", "gender:missing", "false") == MissingTest("gender", "token", False)
    assert _test("Patient", "_id", "a,b") == IdTest(("a", "b"))
    assert isinstance(_test("Patient", "_lastUpdated", "gt2020"), LastUpdatedTest)


def test_chains_and_has() -> None:
    chain = _test("Observation", "subject:Patient.name", "x")
    assert chain == ChainTest("subject", ("Patient",), ParamTest("name", "string", (TextValue("x"),)))
    deep = _test("Observation", "subject.general-practitioner.name", "x")
    assert isinstance(deep, ChainTest) and isinstance(deep.inner, ChainTest)
    assert "Patient" in deep.targets and "Group" not in deep.targets  # narrowed to types having the param
    has = _test("Patient", "_has:Observation:patient:_has:Provenance:target:agent", "Practitioner/1")
    assert isinstance(has, HasTest) and isinstance(has.inner, HasTest) and has.inner.source == "Provenance"


def test_result_parameters() -> None:
    q = parse_search(
        _req(
            ("_sort", "-birthdate,_id"),
            ("_count", "500"),
            ("_include", "Patient:organization"),
            ("_revinclude:iterate", "Observation:subject"),
            ("_summary", "true"),
            ("_total", "accurate"),
            ("_elements", "name,gender"),
            ("_format", "json"),
        ),
        ("Patient",),
    )
    assert q.sort == (SortKey("birthdate", "date", True), SortKey("_id", "special"))
    assert q.count == 100  # capped at the maximum
    assert q.includes == (
        Include("Patient", "organization"),
        Include("Observation", "subject", None, True, True),
    )
    assert (q.summary, q.total, q.elements) == ("true", "accurate", ("name", "gender"))
    assert ("_format", "json") not in q.applied


def test_lenient_ignores_unknown_and_strict_names_it() -> None:
    q = parse_search(_req(("foo", "1"), ("family", "x")), ("Patient",))
    assert q.applied == (("family", "x"),) and q.ignored == ("foo",)
    with pytest.raises(InvalidRequestError, match="'foo'"):
        parse_search(_req(("foo", "1"), strict=True), ("Patient",))


BAD = [
    ("birthdate", "garbage"),
    ("birthdate", "gt"),
    ("value-quantity", "gtx"),
    ("value-quantity", "1|a|b|c"),
    ("probability", "NaN"),
    ("family:nope", "x"),
    ("gender:missing", "yes"),
    ("code-value-quantity", "a"),
    ("_count", "-1"),
    ("_offset", "x"),
    ("_summary", "all"),
    ("_total", "some"),
    ("_include", "Patient"),
    ("_include", "Patient:name"),
    ("_include:deep", "Patient:organization"),
    ("_cursor", "%%%"),
    ("identifier:of-type", "a|b"),
    ("_has:Nope:x:y", "1"),
    ("_has:Observation", "1"),
    ("subject:Nope.name", "x"),
]


@pytest.mark.parametrize(("key", "raw"), BAD, ids=[f"{k}={r}" for k, r in BAD])
def test_malformed_values_are_400_even_when_lenient(key: str, raw: str) -> None:
    type_ = (
        "RiskAssessment"
        if key == "probability"
        else "Observation"
        if "quantity" in key or key.startswith("subject")
        else "Patient"
    )
    with pytest.raises(InvalidRequestError):
        parse_search(_req((key, raw)), (type_,))


def test_cursor_round_trip_and_criteria() -> None:
    cursor = Cursor(("abc", "2020-01-01T00:00:00"), 42, True)
    assert decode_cursor(encode_cursor(cursor)) == cursor
    q = parse_criteria(_req(), "Patient", "identifier=urn:mrn|1&_count=5")
    assert [type(t) for t in q.tests] == [ParamTest]
    with pytest.raises(InvalidRequestError):
        parse_criteria(_req(), "Patient", "foo=bar")
    with pytest.raises(InvalidRequestError):
        parse_criteria(_req(), "Patient", "")
