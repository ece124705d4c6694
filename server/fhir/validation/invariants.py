"""FHIRPath invariants of the R4B StructureDefinitions, compiled once and evaluated per node.

https://hl7.org/fhir/R4B/conformance-rules.html#constraints

ele-1 (every element has a value or children), ext-1 (an extension has a value or extensions,
not both) and ref-1 (a local reference has its contained resource) hold on nearly every node,
and fhirpathpy gets per-1 (start <= end) wrong when the two differ only in having
milliseconds, so these run natively; so do invariants of the form `a.empty() or b.exists() or …`
(qty-3 on every Quantity, cpt-2 on every ContactPoint, tim-*, obs-3, obs-6…) when each name is a
plain key of the node (else fhirpathpy decides); tests check that the native and FHIRPath versions
agree over the official examples. An `or` operand (or `implies` antecedent) that only starts from the node's
own elements (no function on the node itself, $this or %variables outside function arguments)
evaluates on a node lacking those elements as it does on an empty node; when that settles the
invariant, it is not evaluated (fhirpathpy costs ~50-400 us a call). A test checks the
shortcut against full evaluation over the official examples.
Expressions fhirpathpy cannot compile or evaluate (htmlChecks(), conformsTo()...) are not
enforced.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from server.fhir.validation.definitions import Invariant

log = logging.getLogger(__name__)

NATIVE = frozenset({"ele-1", "ext-1", "ref-1", "per-1", "dom-3"})
_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
# A dateTime without a time zone could be anywhere from UTC-12 to UTC+14.
_NO_ZONE = datetime.timedelta(hours=14)
_TICK = datetime.timedelta(microseconds=1)
_TOKEN = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`|[A-Za-z_][A-Za-z0-9_]*|\s+|.")
_KEYWORDS = frozenset(
    {"and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod", "true", "false"}
)


def ele_1(node: Any) -> bool:
    """ele-1 natively: hasValue() or (children().count() > id.count())."""
    return not isinstance(node, dict) or any(k != "id" for k in node)


def ext_1(node: Any) -> bool:
    """ext-1 natively: extension.exists() != value.exists()."""
    if not isinstance(node, dict):
        return True
    has_value = any(k.startswith("value") and v is not None for k, v in node.items())
    return bool(node.get("extension")) != has_value


def _has_value(inputs: list[Any]) -> bool:
    """FHIRPath hasValue(), which fhirpathpy lacks: one primitive with a value."""
    return len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict)


_OPTIONS = {
    "userInvocationTable": {"hasValue": {"fn": _has_value, "arity": {0: []}}},
    "traceFn": lambda *_: None,  # ref-1 calls trace(): keep it off stdout
}


def ref_1(node: Any, resource: Any, root: Any, contained: dict[str, str]) -> bool:
    """ref-1 natively: a "#id" reference names a contained resource ("#" alone: the container)."""
    ref = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#"):
        return True
    return ref[1:] in contained or (ref == "#" and root is not resource)


def _hashes(value: Any, out: set[str]) -> None:
    if isinstance(value, str):
        if value.startswith("#"):
            out.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _hashes(item, out)
    elif isinstance(value, list):
        for item in value:
            _hashes(item, out)


def dom_3(node: Any) -> bool:
    """dom-3 natively: every contained resource is referred to ("#id") from the resource, or refers to
    its container ("#").

    R4B writes `%resource.descendants().as(canonical)`, which fhirpathpy refuses on a collection
    (as() wants one item), so it raised and dom-3 went unchecked at ~16 ms a resource. Here a "#…"
    string anywhere counts (FHIRPath: a Reference.reference, canonical, uri or url); a test checks
    this against FHIRPath with `ofType(…)` for `as(…)` over the official examples.
    """
    contained = node.get("contained") if isinstance(node, dict) else None
    if not isinstance(contained, list) or not contained:
        return True
    refs: set[str] = set()
    _hashes(node, refs)
    for item in contained:
        if not isinstance(item, dict):
            continue
        cid = item.get("id")
        if isinstance(cid, str) and "#" + cid in refs:
            continue
        inner: set[str] = set()
        _hashes(item, inner)
        if "#" not in inner:
            return False
    return True


def _tokens(expression: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(expression) if not m.group().isspace()]


def _top_level(tokens: list[tuple[str, int, int]]) -> list[bool]:
    """For each token: is it outside every pair of parentheses?"""
    depth, out = 0, []
    for token, _, _ in tokens:
        if token == ")":
            depth -= 1
        out.append(depth == 0)
        if token == "(":
            depth += 1
    return out


def root_names(expression: str) -> tuple[str, ...] | None:
    """The element names the expression's top-level paths start from, or None if it also
    reads the node itself (a function on it, $this, %resource...) outside function arguments."""
    names: set[str] = set()
    stack: list[bool] = []  # per open parenthesis: True when it holds function arguments
    previous, named = "", False
    for token, _, _ in _tokens(expression):
        top = not any(stack)
        if token == "(":
            if top and named:
                return None  # a function called on the node itself
            stack.append(previous[:1].isalpha() or previous[:1] == "_")
        elif token == ")":
            if not stack:
                return None
            stack.pop()
        elif top and token[:1] in ("%", "$"):
            return None
        named = False
        if top and (token[:1].isalpha() or token[:1] in "_`") and previous != ".":
            name = token.strip("`")
            if name not in _KEYWORDS:
                names.add(name)
                named = True
        previous = "" if token.startswith(("'", "`")) else token
    return None if stack else tuple(sorted(names))


def operands(expression: str) -> tuple[str, tuple[str, ...]]:
    """Split at the top-level `implies` ("implies", (a, b)) or `or`s ("or", (a, b, ...))."""
    tokens = _tokens(expression)
    top = _top_level(tokens)
    ops = {t for (t, _, _), at_top in zip(tokens, top, strict=True) if at_top}
    if "xor" in ops:
        return "or", (expression,)
    split = "implies" if "implies" in ops else "or"
    cuts = [(a, b) for (t, a, b), at_top in zip(tokens, top, strict=True) if at_top and t == split]
    if split == "implies" and len(cuts) != 1:
        return "or", (expression,)
    parts, begin = [], 0
    for a, b in cuts:
        parts.append(expression[begin:a].strip())
        begin = b
    parts.append(expression[begin:].strip())
    return split, tuple(parts)


def _bounds(value: str) -> tuple[datetime.datetime, datetime.datetime] | None:
    """The earliest and latest UTC instants a (partial) FHIR dateTime can denote.

    At the ends of the calendar (0001-01-01, 9999-12-31) the bounds stop at datetime.min and .max:
    widening by a time zone or reaching the next year there raised OverflowError / ValueError (a 500
    on any Period starting 0001-01-01). None for what is no calendar date (2026-02-30).
    """
    m = _DATETIME.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        low = datetime.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
        )
    except ValueError:
        return None
    if month is None:
        high = _plus(_next(low, year=True), -_TICK)
    elif day is None:
        high = _plus(_next(low, year=False), -_TICK)
    elif hour is None:
        high = _plus(_plus(low, datetime.timedelta(days=1)), -_TICK)
    elif second is None:
        high = _plus(_plus(low, datetime.timedelta(minutes=1)), -_TICK)
    else:
        high = low
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        low, high = _plus(low, -offset), _plus(high, -offset)
    elif not zone:
        low, high = _plus(low, -_NO_ZONE), _plus(high, _NO_ZONE)
    return low, high


def _plus(moment: datetime.datetime, delta: datetime.timedelta) -> datetime.datetime:
    """moment + delta, held at datetime.min / datetime.max where the calendar ends."""
    if moment == datetime.datetime.max and delta == -_TICK:
        return moment  # "the end of time" stays the end
    try:
        return moment + delta
    except OverflowError:
        return datetime.datetime.max if delta > datetime.timedelta(0) else datetime.datetime.min


def _next(start: datetime.datetime, *, year: bool) -> datetime.datetime:
    """The first instant of the year (or month) after the one `start` is in; datetime.max past 9999."""
    if year:
        return start.replace(year=start.year + 1) if start.year < 9999 else datetime.datetime.max
    if start.month < 12:
        return start.replace(month=start.month + 1, day=1)
    return start.replace(year=start.year + 1, month=1, day=1) if start.year < 9999 else datetime.datetime.max


def per_1(node: Any) -> bool:
    """per-1 natively: start <= end; false only when start certainly comes after end."""
    if not isinstance(node, dict):
        return True
    start, end = node.get("start"), node.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    a, b = _bounds(start), _bounds(end)
    return a is None or b is None or a[0] <= b[1]


@functools.cache
def _on_empty(expression: str, base: str) -> tuple[tuple[str, ...], list[Any]] | None:
    """The starting names of an expression and its value on an empty node, if it has both."""
    names = root_names(expression)
    fn = compiled(expression) if names is not None else None
    if names is None or fn is None:
        return None
    try:
        return names, fn(ResourceNode.create_node({}, base), {})
    except Exception:  # noqa: BLE001 - cannot tell: always evaluate
        return None


def _absent(names: tuple[str, ...], node: dict[str, Any]) -> bool:
    return not any(key.startswith(names) for key in node)


@functools.cache
def _shortcuts(expression: str, base: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """Name sets whose absence makes the expression hold: (holds-if-absent, false-if-absent antecedents)."""
    kind, parts = operands(expression)
    holds_if, antecedents = [], []
    for i, part in enumerate(parts):
        found = _on_empty(part, base)
        if found is None:
            continue
        names, value = found
        if kind == "implies" and i == 0:
            if value in ([False], []):
                antecedents.append(names)
        elif value != [False]:
            holds_if.append(names)
    return tuple(holds_if), tuple(antecedents)


def vacuous(inv: Invariant, node: dict[str, Any], base: str) -> bool:
    """True when the invariant certainly holds because the node lacks the elements it needs."""
    holds_if, antecedents = _shortcuts(inv.expression, base)
    return any(_absent(n, node) for n in holds_if) or any(_absent(n, node) for n in antecedents)


@functools.cache
def compiled(expression: str) -> Callable[..., list[Any]] | None:
    """Return the compiled FHIRPath expression, or None if fhirpathpy cannot parse it."""
    try:
        return fhirpathpy.compile(expression, model=models["r4"], options=_OPTIONS)
    except Exception:  # noqa: BLE001 - any parser failure means "not enforceable here"
        log.info("FHIRPath invariant not compiled: %s", expression)
        return None


_EXISTENCE = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\.(empty|exists)\(\)")


@functools.cache
def existence_terms(expression: str) -> tuple[tuple[str, bool], ...] | None:
    """`a.empty() or b.exists()` as ((a, False), (b, True)); None for any other form."""
    kind, parts = operands(expression)
    terms = []
    for part in parts:
        match = _EXISTENCE.fullmatch(part)
        if kind != "or" or match is None:
            return None
        terms.append((match.group(1), match.group(2) == "exists"))
    return tuple(terms)


def existence_holds(terms: tuple[tuple[str, bool], ...], node: dict[str, Any]) -> bool | None:
    """Decide `a.empty() or b.exists() …` from the node's keys; None unless every name is a plain
    key (a choice type valueX, a primitive's _name extensions, a longer name sharing the prefix,
    a null or an empty array are left to fhirpathpy)."""
    for name, wanted in terms:
        for key in node:
            if key != name and key.lstrip("_").startswith(name):
                return None
        value = node.get(name, None)
        if (value is None and name in node) or value == []:
            return None
        if (value is not None) == wanted:
            return True
    return False


def holds(inv: Invariant, node: Any, base: str, resource: Any, root: Any) -> bool | None:
    """Evaluate the invariant on one node: True, False, or None when it cannot be evaluated."""
    terms = existence_terms(inv.expression)
    if terms is not None and isinstance(node, dict):
        decided = existence_holds(terms, node)
        if decided is not None:
            return decided
    fn = compiled(inv.expression)
    if fn is None:
        return None
    try:
        result = fn(ResourceNode.create_node(node, base), {"resource": resource, "rootResource": root})
    except Exception:  # noqa: BLE001 - unsupported functions (htmlChecks, conformsTo...) are skipped
        return None
    return result != [False]
