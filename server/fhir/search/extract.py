"""Compile FHIRPath search expressions once into fast extractors of typed values.

https://hl7.org/fhir/R4B/searchparameter.html#expression

An extractor maps a resource (plain JSON dict) to ``[(fhir_type, value), ...]``: the value
is the JSON of the element reached and the type its FHIR datatype (``Quantity``,
``CodeableConcept``, ``dateTime`` ...), taken from the choice suffix (``valueQuantity``) or
from the static element types of the StructureDefinitions. Expressions outside the
compiled subset fall back to fhirpathpy; ``FALLBACKS`` records which ones did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

from server.fhir.search.definitions import element_types
from server.fhir.search.definitions import is_resource_type
from server.fhir.search.fhirpath import FhirPathSyntaxError
from server.fhir.search.fhirpath import Node
from server.fhir.search.fhirpath import parse

log = logging.getLogger(__name__)

Item = tuple[Any, Any]  # (fhir type or None when unknown, JSON value)
Step = Callable[[list[Item], dict[str, Any]], list[Item]]
Extractor = Callable[[dict[str, Any]], list[tuple[str, Any]]]

PRIMITIVES = frozenset(
    {
        "base64Binary",
        "boolean",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "integer64",
        "markdown",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
        "xhtml",
    }
)
_SUPERTYPES: dict[str, frozenset[str]] = {
    **{
        t: frozenset({"Quantity"})
        for t in ("Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity")
    },
    **{t: frozenset({"string"}) for t in ("code", "id", "markdown")},
    **{t: frozenset({"uri"}) for t in ("url", "canonical", "oid", "uuid")},
}
_RESOURCE_BASES = ("Resource", "DomainResource")
FALLBACKS: set[str] = set()


class UnsupportedExpressionError(ValueError):
    """The expression uses FHIRPath this compiler does not handle (fhirpathpy takes over)."""


def normalize_type(name: str) -> str:
    """Return the FHIR spelling of a type name (``FHIR.DateTime`` -> ``dateTime``)."""
    name = name.rsplit(".", 1)[-1]
    lower = name[:1].lower() + name[1:]
    return lower if lower in PRIMITIVES else name


def is_a(actual: str | None, wanted: str) -> bool:
    """Tell whether a value of type ``actual`` is a ``wanted`` (Age is a Quantity ...)."""
    if actual == wanted:
        return True
    if actual is None:
        return False
    if wanted in _RESOURCE_BASES:
        return is_resource_type(actual) or actual in _RESOURCE_BASES
    return wanted in _SUPERTYPES.get(actual, ())


def guess_type(value: Any) -> str | None:
    """Infer the FHIR type of a JSON value by its shape, for elements without static type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if not isinstance(value, dict):
        return "decimal" if value.__class__.__name__ == "Decimal" else None
    if "resourceType" in value:
        return str(value["resourceType"])
    for keys, type_ in _SHAPES:
        if any(k in value for k in keys):
            return type_
    return None


_SHAPES = (
    (("coding",), "CodeableConcept"),
    (("reference",), "Reference"),
    (("family", "given"), "HumanName"),
    (("line", "city", "postalCode", "country"), "Address"),
    (("start", "end"), "Period"),
    (("low", "high"), "Range"),
    (("event", "repeat"), "Timing"),
    (("currency",), "Money"),
    (("value", "unit"), "Quantity"),
    (("system", "code"), "Coding"),
    (("text",), "CodeableConcept"),
)


# -- static element types ------------------------------------------------------------------


@cache
def element_keys(ctx: str | None, name: str) -> tuple[tuple[str, str | None], ...]:
    """Return the JSON keys (and their types) an element name reaches from a type context."""
    if ctx is None:
        return ((name, None),)
    types = element_types()
    candidates: tuple[str, ...] = (f"{ctx}.{name}", f"Element.{name}")
    if ctx in _RESOURCE_BASES or is_resource_type(ctx):
        candidates = (f"{ctx}.{name}", f"DomainResource.{name}", f"Resource.{name}")
    for key in candidates:
        entry = types.get(key)
        if entry is None:
            continue
        if isinstance(entry, list):
            return tuple((name + t[:1].upper() + t[1:], t) for t in entry)
        if entry == "":
            return ((name, key),)
        if entry.startswith("#"):
            return ((name, entry[1:]),)
        return ((name, entry),)
    return ((name, None),)


def _guess_choice(value: dict[str, Any], name: str) -> list[Item]:
    out: list[Item] = []
    for key, x in value.items():
        if key.startswith(name) and key[len(name) :][:1].isupper():
            type_ = normalize_type(key[len(name) :])
            out.extend((type_, e) for e in x) if isinstance(x, list) else out.append((type_, x))
    return out


# -- steps -----------------------------------------------------------------------------


def _member(name: str, only: str | None = None) -> Step:
    tables: dict[Any, tuple[tuple[str, str | None], ...]] = {}

    def table(ctx: Any) -> tuple[tuple[str, str | None], ...]:
        keys = element_keys(ctx, name)
        if only is not None:
            keys = tuple(k for k in keys if k[1] is None or is_a(k[1], only))
            if ctx is None or keys == ((name, None),):
                keys = ((name + only[:1].upper() + only[1:], only),)
        tables[ctx] = keys
        return keys

    def step(items: list[Item], env: dict[str, Any]) -> list[Item]:
        out: list[Item] = []
        for ctx, value in items:
            if value.__class__ is not dict:
                continue
            keys = tables.get(ctx)
            if keys is None:
                keys = table(ctx)
            for key, type_ in keys:
                x = value.get(key)
                if x is None:
                    if type_ is None and only is None:
                        out.extend(_guess_choice(value, name))
                    continue
                if type_ == "Resource":
                    xs = x if x.__class__ is list else [x]
                    out.extend((e.get("resourceType"), e) for e in xs if isinstance(e, dict))
                elif x.__class__ is list:
                    for e in x:
                        out.append((type_, e))
                else:
                    out.append((type_, x))
        return out

    return step


def _root(name: str) -> Step:
    if name in _RESOURCE_BASES:

        def step(items: list[Item], env: dict[str, Any]) -> list[Item]:
            return [("Resource", v) for _, v in items if isinstance(v, dict) and "resourceType" in v]
    else:

        def step(items: list[Item], env: dict[str, Any]) -> list[Item]:
            return [(t, v) for t, v in items if t == name]

    return step


def reference_type(value: Any, env: dict[str, Any]) -> tuple[str | None, Any]:
    """Return the resource type a Reference points at (and a stand-in target), or (None, None)."""
    if not isinstance(value, dict):
        return None, None
    ref = value.get("reference")
    if isinstance(ref, str):
        if ref.startswith("#"):
            for res in env.get("contained", ()):
                if isinstance(res, dict) and res.get("id") == ref[1:]:
                    return res.get("resourceType"), res
            return None, None
        parts = ref.split("/_history/", 1)[0].split("/")
        if len(parts) >= 2 and is_resource_type(parts[-2]):
            return parts[-2], {"resourceType": parts[-2], "id": parts[-1]}
        return None, None
    type_ = value.get("type")
    if isinstance(type_, str) and is_resource_type(type_):
        return type_, {"resourceType": type_}
    return None, None


def _resolve(items: list[Item], env: dict[str, Any]) -> list[Item]:
    out: list[Item] = []
    for _, value in items:
        type_, target = reference_type(value, env)
        if type_ is not None:
            out.append((type_, target))
    return out


def _ref_is(wanted: str) -> Callable[[Item, dict[str, Any]], bool]:
    def test(item: Item, env: dict[str, Any]) -> bool:
        type_, _ = reference_type(item[1], env)
        return type_ is not None and is_a(type_, wanted)

    return test


def _filter(test: Callable[[Item, dict[str, Any]], bool]) -> Step:
    def step(items: list[Item], env: dict[str, Any]) -> list[Item]:
        return [it for it in items if test(it, env)]

    return step


def _truthy(result: list[Item]) -> bool:
    return len(result) == 1 and result[0][1] is True


def _boolean(value: bool) -> list[Item]:
    return [("boolean", value)]


def _singleton_bool(items: list[Item]) -> bool | None:
    if len(items) == 1 and isinstance(items[0][1], bool):
        return bool(items[0][1])
    return None if not items else True


# -- compiler ----------------------------------------------------------------------------


def _on_empty(step: Step) -> Step:
    step.on_empty = True  # type: ignore[attr-defined]  # yields a value for empty input too
    return step


def _chain(steps: list[Step]) -> Step:
    if len(steps) == 1:
        return steps[0]
    if any(getattr(s, "on_empty", False) for s in steps):

        def run_all(items: list[Item], env: dict[str, Any]) -> list[Item]:
            for step in steps:
                items = step(items, env)
            return items

        return run_all

    def run(items: list[Item], env: dict[str, Any]) -> list[Item]:
        for step in steps:
            if not items:
                return items
            items = step(items, env)
        return items

    return run


def _steps(node: Node) -> list[Step]:
    """Compile a node into a list of steps applied in sequence to the input collection."""
    kind = node[0]
    if kind == "dot":
        return _peephole(_steps(node[1]), _steps(node[2]), node[2])
    if kind == "member":
        name = node[1]
        return [_root(name)] if name[:1].isupper() else [_named(_member(name), name)]
    if kind == "index":
        n = node[2]
        return [*_steps(node[1]), lambda items, env: items[n : n + 1]]
    if kind == "as":
        return _peephole(_steps(node[1]), [_type_filter(node[2])], ("call", "as", (("member", node[2]),)))
    if kind == "is":
        inner = node[1]
        if inner == ("call", "resolve", ()):
            test = _ref_is(normalize_type(node[2]))
            return [lambda items, env: _boolean(test(items[0], env)) if len(items) == 1 else []]
        wanted = normalize_type(node[2])
        return [
            *_steps(inner),
            lambda items, env: _boolean(is_a(items[0][0], wanted)) if len(items) == 1 else [],
        ]
    if kind == "call":
        return [_function(node[1], node[2])]
    return [_on_empty(_operator(node))]


def _peephole(left: list[Step], right: list[Step], right_node: Node) -> list[Step]:
    # member(name).as(T): read only the T key of a choice element (valueQuantity) directly.
    name = getattr(left[-1], "member_name", None) if left else None
    if (
        name is not None
        and right_node[0] == "call"
        and right_node[1] in ("as", "ofType")
        and len(right_node[2]) == 1
    ):
        return [*left[:-1], _member(name, normalize_type(_type_arg(right_node[2][0])))]
    return [*left, *right]


def _named(step: Step, name: str) -> Step:
    step.member_name = name  # type: ignore[attr-defined]
    return step


def _type_arg(node: Node) -> str:
    if node[0] == "member":
        return str(node[1])
    if node[0] == "dot":
        return _type_arg(node[2])
    raise UnsupportedExpressionError(f"type argument {node!r}")


def _type_filter(type_name: str) -> Step:
    wanted = normalize_type(type_name)
    return lambda items, env: [it for it in items if is_a(it[0], wanted)]


def _function(name: str, args: tuple[Node, ...]) -> Step:
    if name in ("as", "ofType") and len(args) == 1:
        return _type_filter(_type_arg(args[0]))
    if name == "where" and len(args) == 1:
        crit = args[0]
        if crit[0] == "is" and crit[1] == ("call", "resolve", ()):
            return _filter(_ref_is(normalize_type(crit[2])))
        run = _compile(crit)
        return _filter(lambda item, env: _truthy(run([item], env)))
    if name == "exists" and len(args) <= 1:
        if not args:
            return _on_empty(lambda items, env: _boolean(bool(items)))
        run = _compile(args[0])
        return _on_empty(lambda items, env: _boolean(any(_truthy(run([it], env)) for it in items)))
    if name == "empty" and not args:
        return _on_empty(lambda items, env: _boolean(not items))
    if name == "not" and not args:
        return lambda items, env: (
            [] if _singleton_bool(items) is None else _boolean(not _singleton_bool(items))
        )
    if name == "first" and not args:
        return lambda items, env: items[:1]
    if name == "last" and not args:
        return lambda items, env: items[-1:]
    if name == "resolve" and not args:
        return _resolve
    if name == "is" and len(args) == 1:
        wanted = normalize_type(_type_arg(args[0]))
        return lambda items, env: _boolean(is_a(items[0][0], wanted)) if len(items) == 1 else []
    if name == "extension" and len(args) == 1 and args[0][0] == "lit":
        url = args[0][1]

        def extension(items: list[Item], env: dict[str, Any]) -> list[Item]:
            return [
                ("Extension", e)
                for _, v in items
                if isinstance(v, dict)
                for e in v.get("extension", ())
                if isinstance(e, dict) and e.get("url") == url
            ]

        return extension
    raise UnsupportedExpressionError(f"function {name}() with {len(args)} argument(s)")


def _operator(node: Node) -> Step:
    kind = node[0]
    if kind == "union":
        a, b = _compile(node[1]), _compile(node[2])
        return lambda items, env: a(items, env) + b(items, env)
    if kind == "lit":
        value = node[1]
        lit: list[Item] = [(guess_type(value), value)]
        return lambda items, env: lit
    if kind == "var":
        if node[1] in ("%resource", "%rootResource", "%context"):
            return lambda items, env: [(env.get("resourceType"), env)]
        if node[1] == "$this":
            return lambda items, env: items
    if kind == "cmp":
        left, right, negate = _compile(node[2]), _compile(node[3]), node[1] == "!="

        def compare(items: list[Item], env: dict[str, Any]) -> list[Item]:
            a, b = left(items, env), right(items, env)
            if not a or not b:
                return []
            pairs = zip(a, b, strict=False)
            equal = len(a) == len(b) and all(x[1] == y[1] and type(x[1]) is type(y[1]) for x, y in pairs)
            return _boolean(equal != negate)

        return compare
    if kind in ("and", "or"):
        left, right = _compile(node[1]), _compile(node[2])

        def logic(items: list[Item], env: dict[str, Any]) -> list[Item]:
            a, b = _singleton_bool(left(items, env)), _singleton_bool(right(items, env))
            stop: bool = kind == "or"  # the value that decides the result on its own
            if a is stop or b is stop:
                return _boolean(stop)
            return [] if a is None or b is None else _boolean(not stop)

        return logic
    raise UnsupportedExpressionError(f"operator {kind}")


def _compile(node: Node) -> Step:
    return _chain(_steps(node))


def _unwrap(items: list[Item]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for type_, value in items:
        if type_ == "Extension":
            for key, x in value.items():
                if key.startswith("value") and key != "value":
                    out.append((normalize_type(key[5:]), x))
                    break
        elif type_ is None:
            guessed = guess_type(value)
            if guessed is not None:
                out.append((guessed, value))
        else:
            out.append((type_, value))
    return out


@cache
def compile_path(expr: str) -> Step:
    """Compile an expression to a step over a typed collection (context items, root resource)."""
    try:
        return _compile(parse(expr))
    except (FhirPathSyntaxError, UnsupportedExpressionError) as err:
        FALLBACKS.add(expr)
        log.info("search expression %r falls back to fhirpathpy: %s", expr, err)
        return _fallback(expr)


def _fallback(expr: str) -> Step:
    import fhirpathpy

    compiled = fhirpathpy.compile(expr)

    def step(items: list[Item], env: dict[str, Any]) -> list[Item]:
        out: list[Item] = []
        for _, value in items:
            out.extend((guess_type(v), v) for v in compiled(value, {"resource": env}))
        return out

    return step


@cache
def compile_expression(expr: str) -> Extractor:
    """Compile a search expression once into a function from a resource to typed values."""
    run = compile_path(expr)

    def extract(resource: dict[str, Any]) -> list[tuple[str, Any]]:
        items = run([(resource.get("resourceType"), resource)], resource)
        for type_, _ in items:
            if type_ is None or type_ == "Extension":
                return _unwrap(items)
        return items

    return extract
