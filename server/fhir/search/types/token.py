"""token search parameters: parse, index rows, match in memory.

https://hl7.org/fhir/R4B/search.html#token
"""

from __future__ import annotations

from typing import Any

from server.fhir.search.definitions import SearchParam
from server.fhir.search.query import TextValue
from server.fhir.search.query import TokenValue
from server.fhir.search.query import Value
from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import TokenRow
from server.fhir.search.rows import display_text
from server.fhir.search.rows import normalize_string
from server.fhir.search.types.base import FhirType
from server.fhir.search.types.base import register
from server.fhir.search.values import split_escaped
from server.fhir.search.values import unescape


def parse_token(raw: str) -> TokenValue:
    """system|code, code, system| or |code."""
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    return TokenValue(system, code or None)


def parse(raw: str, sp: SearchParam, modifier: str | None, base_url: str | None) -> Value:
    """A token value, or (:text) the normalised text to find in displays."""
    if modifier == "text":
        return TextValue(normalize_string(unescape(raw)))
    return parse_token(raw)


def index(rows: IndexRows, param: str, type_: str, value: Any, group: int | None) -> None:
    """Add the rows of one value (an element of FHIR type `type_`) of the parameter `param`."""
    out = rows.tokens
    if type_ == "CodeableConcept":
        text = value.get("text")
        displays = set()
        for coding in value.get("coding", ()):
            display = coding.get("display") or text
            displays.add(display)
            out.append(
                TokenRow(param, coding.get("system"), coding.get("code"), display_text(display), group)
            )
        if isinstance(text, str) and text and text not in displays:
            out.append(TokenRow(param, None, None, display_text(text), group))
    elif type_ == "Coding":
        out.append(
            TokenRow(param, value.get("system"), value.get("code"), display_text(value.get("display")), group)
        )
    elif type_ == "Identifier":
        _add_identifier(out, param, value, group)
    elif type_ == "ContactPoint":
        if value.get("value"):
            out.append(TokenRow(param, None, value["value"], None, group))
    elif type_ == "boolean":
        if isinstance(value, bool):
            out.append(TokenRow(param, None, "true" if value else "false", None, group))
    elif isinstance(value, str):
        out.append(TokenRow(param, None, value, None, group))
    elif type_ == "Reference" and isinstance(value.get("identifier"), dict):
        _add_identifier(out, param, value["identifier"], group)


def _add_identifier(out: list[TokenRow], param: str, value: dict[str, Any], group: int | None) -> None:
    ident = value.get("value")
    if not isinstance(ident, str):
        return
    type_ = value.get("type") or {}
    out.append(TokenRow(param, value.get("system"), ident, display_text(type_.get("text")), group))
    for coding in type_.get("coding", ()):
        if coding.get("code"):
            code = f"{coding['code']}|{ident}"
            out.append(TokenRow(f"{param}:of-type", coding.get("system"), code, None, group))


def match(row: Any, v: Value, modifier: str | None) -> bool:
    """Whether one index row matches one search value, as the SQL condition decides."""
    if isinstance(v, TextValue):
        text = row.text or ""
        return text.startswith(v.text) or (" " + v.text) in text
    if not isinstance(v, TokenValue):
        return False
    if v.system is not None and (row.system is not None if v.system == "" else row.system != v.system):
        return False
    return v.code is None or row.code == v.code


TOKEN = register(
    FhirType(
        "token",
        frozenset({"not", "text", "of-type", "missing"}),
        parse=parse,
        index=index,
        rows="tokens",
        match=match,
    )
)
