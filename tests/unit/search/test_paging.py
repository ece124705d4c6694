"""Paging parameters and the guards that keep request values inside what the database binds."""

from __future__ import annotations

import base64
import json

import pytest

from server.errors import InvalidRequestError
from server.fhir.http import FhirRequest
from server.fhir.search.paging import INT64_MAX
from server.fhir.search.paging import nonnegative
from server.fhir.search.paging import page_size
from server.fhir.search.params import check_text
from server.fhir.search.params import decode_cursor
from server.fhir.search.params import encode_cursor
from server.fhir.search.params import parse_search
from server.fhir.search.query import Cursor
from server.fhir.search.values import parse_number


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("007", 7), (str(INT64_MAX), INT64_MAX), ("0" * 30 + "5", 5)]
)
def test_nonnegative_accepts_64_bit_values(text: str, value: int) -> None:
    assert nonnegative(text, "_offset") == value


@pytest.mark.parametrize(
    "text",
    [str(INT64_MAX + 1), "9" * 5000, "-1", "", "1.0", "\u00b2", "\uff11", "\u0661", " 1"],
    ids=[
        "2^63",
        "5000-digits",
        "negative",
        "empty",
        "decimal",
        "superscript",
        "fullwidth",
        "arabic-indic",
        "space",
    ],
)
def test_nonnegative_refuses_with_expression(text: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        nonnegative(text, "_offset")
    assert info.value.expression == ("_offset",)


@pytest.mark.parametrize(
    ("text", "size"), [(None, 20), ("", 20), ("5", 5), ("5000", 1000), ("9" * 30, 1000), ("9" * 5000, 1000)]
)
def test_page_size_caps_at_the_maximum(text: str | None, size: int) -> None:
    assert page_size(text, default=20, maximum=1000) == size


@pytest.mark.parametrize("text", ["\u00b2", "-1", "x"])
def test_page_size_refuses_what_is_not_ascii_digits(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        page_size(text, default=20, maximum=1000)


def test_cursor_round_trip() -> None:
    cursor = Cursor(("2024-01-01T00:00:00",), 42, True)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    "doc",
    [
        {"v": [], "p": 2**63},
        {"v": [], "p": -1},
        {"v": [], "p": "1"},
        {"v": [], "p": True},
        {"v": [1], "p": 1},
        {"v": ["a\x00"], "p": 1},
        {"v": "abc", "p": 1},
    ],
    ids=["pk-2^63", "pk-negative", "pk-text", "pk-bool", "value-number", "value-nul", "values-not-list"],
)
def test_decode_cursor_refuses_what_the_server_never_writes(doc: object) -> None:
    token = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    with pytest.raises(InvalidRequestError) as info:
        decode_cursor(token)
    assert info.value.expression == ("_cursor",)


def test_lastupdated_cursor_value_must_be_an_instant() -> None:
    token = encode_cursor(Cursor(("yesterday",), 1))
    req = FhirRequest("GET", "http://x", params=(("_sort", "_lastUpdated"), ("_cursor", token)))
    with pytest.raises(InvalidRequestError) as info:
        parse_search(req, ("Patient",))
    assert info.value.expression == ("_cursor",)


@pytest.mark.parametrize("text", ["1e1001", "1e-1001", "1" * 1001, "1e99999999999"])
def test_parse_number_refuses_numbers_no_database_binds(text: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_number(text, "probability")
    assert info.value.expression == ("probability",)


@pytest.mark.parametrize("text", ["1e400", "1e-400", "0.5", "1" * 1000])
def test_parse_number_keeps_numbers_beyond_doubles(text: str) -> None:
    number, low, high = parse_number(text, "probability")
    assert low < number < high


@pytest.mark.parametrize(("name", "value"), [("name", "a\x00"), ("na\x00me", "a")], ids=["value", "name"])
def test_check_text_refuses_nul(name: str, value: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_text(name, value)
    assert info.value.expression == (name.replace("\x00", "\ufffd"),)
    check_text("name", "tab\tand newline\n are fine")
