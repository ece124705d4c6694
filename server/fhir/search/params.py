"""Parse search request parameters into a SearchQuery: modifiers, prefixes, chains, _has.

https://hl7.org/fhir/R4B/search.html

Unknown parameters are ignored unless the client sent ``Prefer: handling=strict``, which
makes them a 400 naming the parameter; malformed values and unsupported modifiers are
always a 400.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

import orjson

from server.errors import InvalidRequestError
from server.fhir.http import FhirRequest
from server.fhir.search.definitions import SearchParam
from server.fhir.search.definitions import is_resource_type
from server.fhir.search.definitions import params_for
from server.fhir.search.definitions import resource_types
from server.fhir.search.paging import INT64_MAX
from server.fhir.search.paging import nonnegative
from server.fhir.search.paging import page_size
from server.fhir.search.query import ChainTest
from server.fhir.search.query import Compartment
from server.fhir.search.query import CompositeValue
from server.fhir.search.query import Cursor
from server.fhir.search.query import HasTest
from server.fhir.search.query import IdTest
from server.fhir.search.query import Include
from server.fhir.search.query import LastUpdatedTest
from server.fhir.search.query import MissingTest
from server.fhir.search.query import ParamTest
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SortKey
from server.fhir.search.query import Test
from server.fhir.search.query import TokenValue
from server.fhir.search.query import Value
from server.fhir.search.types import TYPES
from server.fhir.search.types.date import parse_date
from server.fhir.search.types.token import parse_token
from server.fhir.search.values import bad as _bad
from server.fhir.search.values import split_escaped
from server.fhir.search.values import unescape as _unescape

# Result and control parameters this server understands (besides search parameters).
RESULT_PARAMS = frozenset(
    {
        "_sort",
        "_count",
        "_offset",
        "_cursor",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_totalMethod",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
    }
)
# Parameters that only steer paging: left out of the self link's search part.
PAGING_PARAMS = frozenset({"_offset", "_cursor"})
# The modifiers each type takes, and the types _sort may use (server.fhir.search.types.<type>).
_MODIFIERS = {name: t.modifiers for name, t in TYPES.items()}
_SORTABLE = frozenset(name for name, t in TYPES.items() if t.sortable)
_SUMMARY = frozenset({"true", "false", "text", "data", "count"})
_TOTAL = frozenset({"none", "estimate", "accurate"})
_MAX_DEPTH = 4


class _Parser:
    """Parses one request's parameters against the searched types."""

    def __init__(self, req: FhirRequest | None, strict: bool) -> None:
        self.base_url = (req.base_url.rstrip("/") + "/") if req is not None else None
        self.strict = strict
        self.ignored: list[str] = []

    def unknown(self, name: str, why: str = "") -> None:
        self.ignored.append(name)
        if self.strict:
            raise InvalidRequestError(
                f"Unknown search parameter {name!r}{why}",
                expression=(name,),
                message_id="MSG_PARAM_UNKNOWN",
            )

    # -- values ---------------------------------------------------------------------------

    def value(self, type_: str, raw: str, sp: SearchParam, modifier: str | None) -> Value:
        parse = TYPES[type_].parse if type_ in TYPES else None
        if parse is None:
            raise _bad(f"Parameter {sp.name} of type {type_} cannot be searched", sp.name)
        return parse(raw, sp, modifier, self.base_url)

    def composite(self, raw: str, sp: SearchParam) -> CompositeValue:
        pieces = split_escaped(raw, "$")
        if len(pieces) != len(sp.components):
            raise _bad(
                f"Composite parameter {sp.name} needs {len(sp.components)} values separated by $",
                sp.name,
            )
        parts = []
        for (ctype, _expr, code), piece in zip(sp.components, pieces, strict=False):
            parts.append((ctype, code, self.value(ctype, piece, sp, None)))
        return CompositeValue(tuple(parts))

    # -- one parameter --------------------------------------------------------------------

    def test(self, types: tuple[str, ...], key: str, raw: str, depth: int = 0) -> Test | None:
        """Parse `key=raw` for the types; None when the parameter is unknown (lenient)."""
        if depth > _MAX_DEPTH:
            raise _bad(f"Search parameter {key!r} nests too deep", key)
        if key.startswith("_has:"):
            return self.has(types, key, raw, depth)
        if "." in key:
            return self.chain(types, key, raw, depth)
        name, _, modifier = key.partition(":")
        if name == "_id":
            if modifier not in ("", "not"):
                raise _bad(f"Unsupported modifier :{modifier} on _id", key)
            return IdTest(tuple(_unescape(v) for v in split_escaped(raw, ",") if v), modifier == "not")
        if name == "_lastUpdated":
            if modifier:
                raise _bad(f"Unsupported modifier :{modifier} on _lastUpdated", key)
            return LastUpdatedTest(tuple(parse_date(v, name) for v in split_escaped(raw, ",")))
        sp = lookup(types, name)
        if sp is None or sp.type not in _MODIFIERS:
            self.unknown(name, f" for {','.join(types) or 'all types'}")
            return None
        return self.param_test(sp, key, modifier or None, raw)

    def param_test(self, sp: SearchParam, key: str, modifier: str | None, raw: str) -> Test:
        if modifier is not None and modifier not in _MODIFIERS[sp.type]:
            if not (sp.type == "reference" and is_resource_type(modifier)):
                raise _bad(f"Unsupported modifier :{modifier} on {sp.type} parameter {sp.name}", key)
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise _bad(f":missing takes true or false, not {raw!r}", key)
            if sp.type == "composite":  # rows of the last component (the value) stand for it
                last = len(sp.components) - 1
                return MissingTest(f"{sp.name}${last}", sp.components[last][0], raw == "true")
            return MissingTest(sp.name, sp.type, raw == "true")
        raws = [v for v in split_escaped(raw, ",")]
        if not any(raws):
            raise _bad(f"Empty value for search parameter {key}", key)
        if sp.type == "token" and modifier == "of-type":
            return ParamTest(f"{sp.name}:of-type", "token", tuple(self.of_type(v, key) for v in raws))
        if sp.type == "reference" and modifier == "identifier":
            return ParamTest(f"{sp.name}:identifier", "token", tuple(parse_token(v) for v in raws))
        if sp.type == "composite":
            return ParamTest(sp.name, "composite", tuple(self.composite(v, sp) for v in raws))
        values = tuple(self.value(sp.type, v, sp, modifier) for v in raws if v)
        return ParamTest(sp.name, sp.type, values, modifier)

    def of_type(self, raw: str, key: str) -> TokenValue:
        parts = [_unescape(p) for p in split_escaped(raw, "|")]
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise _bad(f":of-type needs system|code|value, not {raw!r}", key)
        return TokenValue(parts[0] or None, f"{parts[1]}|{parts[2]}")

    def chain(self, types: tuple[str, ...], key: str, raw: str, depth: int) -> Test | None:
        head, _, rest = key.partition(".")
        name, _, modifier = head.partition(":")
        sp = lookup(types, name)
        if sp is None or sp.type != "reference":
            self.unknown(name, " (chaining needs a reference parameter)")
            return None
        if modifier:
            if not is_resource_type(modifier):
                raise _bad(f"Unknown resource type :{modifier} in chain {key}", key)
            targets: tuple[str, ...] = (modifier,)
        else:
            targets = sp.targets or resource_types()
        rest_name = rest.partition(".")[0].partition(":")[0]
        if not rest.startswith("_has:") and rest_name not in ("_id", "_lastUpdated"):
            targets = tuple(t for t in targets if rest_name in params_for(t))
            if not targets:
                self.unknown(rest_name, f" on the targets of {name}")
                return None
        inner = self.test(targets, rest, raw, depth + 1)
        return None if inner is None else ChainTest(name, targets, inner)

    def has(self, types: tuple[str, ...], key: str, raw: str, depth: int) -> Test | None:
        parts = key.split(":", 3)
        if len(parts) < 4 or not parts[3]:
            raise _bad(f"_has needs _has:Type:reference:parameter, not {key!r}", key)
        _, source, ref_name, rest = parts
        if not is_resource_type(source):
            raise _bad(f"Unknown resource type {source!r} in {key}", key)
        sp = params_for(source).get(ref_name)
        if sp is None or sp.type != "reference":
            self.unknown(f"{source}:{ref_name}", " (not a reference parameter)")
            return None
        inner = self.test((source,), rest, raw, depth + 1)
        return None if inner is None else HasTest(source, ref_name, inner)


@cache
def _common_params(types: tuple[str, ...]) -> Mapping[str, SearchParam]:
    names = None
    for t in types:
        mine = {n: sp for n, sp in params_for(t).items()}
        if names is None:
            names = mine
        else:
            names = {n: sp for n, sp in names.items() if n in mine and mine[n].type == sp.type}
    return names or {}


def lookup(types: tuple[str, ...], name: str) -> SearchParam | None:
    """Return the definition of a parameter shared by all the types (any type if none given)."""
    if len(types) == 1:
        return params_for(types[0]).get(name)
    return _common_params(types or resource_types()).get(name)


# -- result parameters --------------------------------------------------------------------


def _sort(types: tuple[str, ...], raw: str, parser: _Parser) -> tuple[SortKey, ...]:
    keys = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        name = item.lstrip("-")
        if name in ("_id", "_lastUpdated"):
            keys.append(SortKey(name, "special", descending))
            continue
        sp = lookup(types, name)
        if sp is None or sp.type not in _SORTABLE:
            parser.unknown(name, " for _sort")
            continue
        keys.append(SortKey(name, sp.type, descending))
    return tuple(keys)


def _include(raw: str, reverse: bool, iterate: bool, key: str) -> Include:
    if raw == "*":
        return Include("*", "*", None, iterate, reverse)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
        raise _bad(f"{key} needs Type:parameter[:TargetType], not {raw!r}", key)
    source, name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not is_resource_type(target):
        raise _bad(f"Unknown target type {target!r} in {key}", key)
    if name != "*":
        sp = params_for(source).get(name)
        if sp is None or sp.type != "reference":
            raise _bad(f"{source}:{name} is not a reference parameter ({key})", key)
    return Include(source, name, target, iterate, reverse)


def encode_cursor(cursor: Cursor) -> str:
    """Encode a keyset position as an opaque URL-safe token."""
    data = orjson.dumps({"v": list(cursor.values), "p": cursor.pk, "b": cursor.before}, default=str)
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """Decode a token made by encode_cursor; 400 if it is not one (or was altered out of range)."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values, pk = data["v"], data["p"]
        # The server writes string sort values (ids, instants) and a 64-bit row key: anything else
        # was not made here and must not reach the database.
        if not isinstance(values, list) or not all(isinstance(v, str) and "\x00" not in v for v in values):
            raise ValueError("sort values")
        if not isinstance(pk, int) or isinstance(pk, bool) or not 0 <= pk <= INT64_MAX:
            raise ValueError("row key")
        return Cursor(tuple(values), pk, bool(data.get("b")))
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise _bad(f"Invalid paging cursor {token!r}", "_cursor") from None


def _check_cursor(cursor: Cursor, sort: tuple[SortKey, ...]) -> None:
    """A keyset cursor's _lastUpdated values must be the instants encode_cursor wrote."""
    for key, value in zip(sort, cursor.values, strict=False):
        if key.param == "_lastUpdated":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise _bad(f"Invalid paging cursor: {value!r} is not an instant", "_cursor") from None


def check_text(name: str, value: str) -> None:
    """Refuse a parameter whose name or value holds NUL (U+0000): no FHIR string may, and PostgreSQL
    text cannot store or compare one."""
    if "\x00" in name or "\x00" in value:
        raise InvalidRequestError(
            f"Parameter {name!r} contains a NUL character (U+0000), which no FHIR value may hold",
            expression=(name.replace("\x00", "\ufffd"),),
            message_id="MSG_PARAM_INVALID",
        )


def parse_search(
    req: FhirRequest,
    types: Iterable[str],
    *,
    params: Iterable[tuple[str, str]] | None = None,
    compartment: Compartment | None = None,
    strict: bool | None = None,
    skip: Iterable[str] = (),
) -> SearchQuery:
    """Parse the request's parameters (or `params`) into a SearchQuery over `types`."""
    types = tuple(types)
    if strict is None:
        strict = req.prefer.get("handling") == "strict"
    parser = _Parser(req, strict)
    skipped = frozenset(skip)
    tests: list[Test] = []
    applied: list[tuple[str, str]] = []
    result: dict[str, Any] = {"sort": (), "includes": [], "elements": ()}
    count = req.default_count
    for key, raw in req.params if params is None else params:
        check_text(key, raw)
        name = key.partition(":")[0]
        if key in skipped:
            continue
        if name in RESULT_PARAMS:
            if _result_param(types, key, raw, req, parser, result):
                if name == "_count":
                    count = page_size(raw, default=req.default_count, maximum=req.max_count)
                if name not in PAGING_PARAMS:
                    applied.append((key, raw))
            continue
        test = parser.test(types, key, raw)
        if test is not None:
            tests.append(test)
            applied.append((key, raw))
    if result.get("cursor") is not None:
        _check_cursor(result["cursor"], result["sort"])
    return SearchQuery(
        types=types,
        tests=tuple(tests),
        compartment=compartment,
        sort=result["sort"],
        count=count,
        offset=result.get("offset", 0),
        cursor=result.get("cursor"),
        includes=tuple(result["includes"]),
        total=result.get("total"),
        summary=result.get("summary"),
        elements=result["elements"],
        applied=tuple(applied),
        ignored=tuple(parser.ignored),
        max_includes=req.max_count,
    )


def _result_param(
    types: tuple[str, ...], key: str, raw: str, req: FhirRequest, parser: _Parser, out: dict[str, Any]
) -> bool:
    """Record one result parameter in `out`; return whether it shapes the result."""
    name, _, modifier = key.partition(":")
    if name == "_sort":
        out["sort"] = _sort(types, raw, parser)
    elif name == "_count":
        page_size(raw, default=req.default_count, maximum=req.max_count)
    elif name == "_offset":
        out["offset"] = nonnegative(raw, "_offset")
    elif name == "_cursor":
        out["cursor"] = decode_cursor(raw)
    elif name in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise _bad(f"Unsupported modifier :{modifier} on {name}", key)
        for item in raw.split(","):
            if item:
                out["includes"].append(_include(item, name == "_revinclude", bool(modifier), key))
    elif name == "_summary":
        if raw not in _SUMMARY:
            raise _bad(f"_summary must be one of true, false, text, data, count; not {raw!r}", key)
        out["summary"] = None if raw == "false" else raw
    elif name == "_elements":
        out["elements"] = tuple(e.strip() for e in raw.split(",") if e.strip())
    elif name == "_total":
        if raw not in _TOTAL:
            raise _bad(f"_total must be none, estimate or accurate; not {raw!r}", key)
        out["total"] = raw
    elif name == "_totalMethod":
        out.setdefault("total", "accurate")
    else:
        return False  # _format, _pretty, _contained...: known, no effect on the search
    return True


def parse_criteria(req: FhirRequest, type_: str, criteria: str | Iterable[tuple[str, str]]) -> SearchQuery:
    """Parse conditional-interaction criteria strictly: an unknown parameter is a 400."""
    from urllib.parse import parse_qsl

    pairs = (
        parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if isinstance(criteria, str)
        else list(criteria)
    )
    tests = [(k, v) for k, v in pairs if k.partition(":")[0] not in RESULT_PARAMS]
    if not tests:
        raise InvalidRequestError(
            f"Conditional {type_} interaction needs search criteria", message_id="MSG_PARAM_INVALID"
        )
    return parse_search(req, (type_,), params=tests, strict=True)
