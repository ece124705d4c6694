"""Validation against the profiles this server holds (a resource's meta.profile, or $validate?profile=).

https://hl7.org/fhir/R4B/profiling.html and https://hl7.org/fhir/R4B/validation.html#profile

A held profile is a StructureDefinition with derivation = constraint on a resource type, handed
in by the app's composition (`hold`: ours from fhir_mapping, and those `rehabfhir ig install`
stored). Its differential (and that of a held base profile) is compiled once into rules, one per
element: cardinality (min/max, per occurrence of the parent), fixed[x] (equal) and pattern[x]
(contained), the types a choice element keeps, reference targets, required bindings (expanded
from held ValueSets/CodeSystems, else the core ones in validation.json), and slices whose
discriminators are `value` or `pattern` (a url discriminator also reads the slice's extension
profile); a closed slicing refuses what matches no slice. Issue expressions are FHIRPath, as
in the rest of the validation. Elements a profile only narrows by other means (invariants,
type/profile/exists discriminators) are not checked here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from server.fhir.outcomes import issue
from server.fhir.validation.definitions import ValueSet
from server.fhir.validation.definitions import core_value_set

_SUPPORTED_DISCRIMINATORS = frozenset({"value", "pattern"})
Node = tuple[Any, str]  # a JSON value and its FHIRPath


@dataclass(frozen=True, slots=True)
class Rule:
    """What one element definition of a profile asks of the resource."""

    id: str
    steps: tuple[tuple[str, str | None], ...]  # (element name, slice name) below the root
    min: int | None
    max: int | None  # None: unbounded or not constrained
    fixed: Any
    pattern: Any
    types: frozenset[str]
    targets: frozenset[str]
    binding: str | None  # required value set URL
    slicing: tuple[tuple[tuple[str, str], ...], bool] | None  # (discriminators, closed)
    sliced_by: tuple[tuple[str, str, Any, bool], ...] = ()  # (kind, path, value, is_pattern)


@dataclass(slots=True)
class Profile:
    """A compiled profile: its URL, the resource type it constrains and its rules."""

    url: str
    type: str
    rules: list[Rule] = field(default_factory=list)
    slices: dict[str, list[Rule]] = field(default_factory=dict)  # sliced element id -> its slices


_NO_VALUE = object()
_lock = threading.Lock()
_definitions: dict[str, dict[str, Any]] = {}
_value_sets: dict[str, dict[str, Any]] = {}
_code_systems: dict[str, dict[str, Any]] = {}
_compiled: dict[str, Profile | None] = {}
_expanded: dict[str, ValueSet | None] = {}


def hold(resources: Iterable[dict[str, Any]]) -> list[str]:
    """Hold the constraint StructureDefinitions, ValueSets and CodeSystems among `resources`.

    Return the URLs of the profiles now held from them; later calls add to (or replace by URL)
    what is held.
    """
    added = []
    with _lock:
        for r in resources:
            url = r.get("url") if isinstance(r, dict) else None
            if not isinstance(url, str):
                continue
            kind = r.get("resourceType")
            if kind == "StructureDefinition" and is_profile(r):
                _definitions[url] = r
                added.append(url)
            elif kind == "ValueSet":
                _value_sets[url] = r
            elif kind == "CodeSystem":
                _code_systems[url] = r
        _compiled.clear()
        _expanded.clear()
    return added


def is_profile(sd: dict[str, Any]) -> bool:
    """Is this StructureDefinition a profile of a resource type (what this server can hold)?"""
    return sd.get("derivation") == "constraint" and sd.get("kind") == "resource"


def held() -> list[tuple[str, str]]:
    """(URL, resource type) of every held profile."""
    return sorted((url, str(sd.get("type"))) for url, sd in _definitions.items())


def forget(urls: Iterable[str]) -> None:
    """Stop holding these profiles (tests)."""
    with _lock:
        for url in urls:
            _definitions.pop(url, None)
        _compiled.clear()


def profile(url: str) -> Profile | None:
    """The compiled held profile at this canonical URL (a `|version` suffix is ignored), or None."""
    url = url.split("|", 1)[0]
    if url in _compiled:
        return _compiled[url]
    sd = _definitions.get(url)
    compiled = None if sd is None else _compile(sd, set())
    _compiled[url] = compiled
    return compiled


def _compile(sd: dict[str, Any], seen: set[str]) -> Profile:
    out = Profile(str(sd["url"]), str(sd.get("type")))
    base = sd.get("baseDefinition")
    if isinstance(base, str) and base in _definitions and base not in seen:
        inherited = _compile(_definitions[base], {*seen, str(sd["url"])})
        out.rules += inherited.rules
        out.slices.update(inherited.slices)
    elements = [e for e in (sd.get("differential") or {}).get("element") or () if isinstance(e, dict)]
    by_id = {str(e.get("id") or e.get("path")): e for e in elements}
    for id_, el in by_id.items():
        rule = _rule(id_, el, by_id, out.type)
        if rule is None:
            continue
        out.rules.append(rule)
        if rule.steps and rule.steps[-1][1] is not None:
            sliced = id_.rsplit(":", 1)[0]
            out.slices.setdefault(sliced, []).append(rule)
    return out


def _steps(id_: str) -> tuple[tuple[str, str | None], ...]:
    parts = id_.split(".")[1:]
    out = []
    for part in parts:
        name, _, slice_ = part.partition(":")
        out.append((name, slice_ or None))
    return tuple(out)


def _prefixed(el: dict[str, Any], prefix: str) -> Any:
    for key, value in el.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            return value
    return _NO_VALUE


def _rule(id_: str, el: dict[str, Any], by_id: dict[str, dict[str, Any]], type_: str) -> Rule | None:
    if not id_.startswith(type_ + ".") and id_ != type_:
        return None
    steps = _steps(id_)
    if not steps:
        return None
    max_ = el.get("max")
    types = [t for t in el.get("type") or () if isinstance(t, dict)]
    targets = frozenset(
        str(p).rsplit("/", 1)[-1]
        for t in types
        if t.get("code") == "Reference"
        for p in t.get("targetProfile") or ()
        if str(p).startswith("http://hl7.org/fhir/StructureDefinition/")
    )
    binding = el.get("binding") or {}
    slicing = el.get("slicing")
    sliced_by: tuple[tuple[str, str, Any, bool], ...] = ()
    if steps[-1][1] is not None:
        sliced_by = _discriminators(id_, el, by_id)
    return Rule(
        id=id_,
        steps=steps,
        min=el.get("min") if isinstance(el.get("min"), int) else None,
        max=int(max_) if isinstance(max_, str) and max_.isdigit() else None,
        fixed=_prefixed(el, "fixed"),
        pattern=_prefixed(el, "pattern"),
        types=frozenset(str(t.get("code")) for t in types) if steps[-1][0].endswith("[x]") else frozenset(),
        targets=targets,
        binding=str(binding["valueSet"]).split("|", 1)[0]
        if binding.get("strength") == "required" and binding.get("valueSet")
        else None,
        slicing=(
            tuple(
                (str(d.get("type")), str(d.get("path")))
                for d in slicing.get("discriminator") or ()
                if isinstance(d, dict)
            ),
            slicing.get("rules") == "closed",
        )
        if isinstance(slicing, dict)
        else None,
        sliced_by=sliced_by,
    )


def _discriminators(
    id_: str, el: dict[str, Any], by_id: dict[str, dict[str, Any]]
) -> tuple[tuple[str, str, Any, bool], ...]:
    """(kind, path, value, is_pattern) per discriminator of the slicing this slice belongs to."""
    sliced = by_id.get(id_.rsplit(":", 1)[0]) or {}
    out = []
    for d in (sliced.get("slicing") or {}).get("discriminator") or ():
        kind, path = str(d.get("type")), str(d.get("path"))
        if kind not in _SUPPORTED_DISCRIMINATORS:
            return (("unsupported", path, None, False),)
        holder = el if path == "$this" else by_id.get(f"{id_}.{path}", {})
        value, is_pattern = _prefixed(holder, "fixed"), False
        if value is _NO_VALUE:
            value, is_pattern = _prefixed(holder, "pattern"), True
        if value is _NO_VALUE and path == "url":
            profiles = [p for t in el.get("type") or () for p in t.get("profile") or ()]
            value, is_pattern = (profiles[0], False) if profiles else (_NO_VALUE, False)
        if value is _NO_VALUE:
            return (("unsupported", path, None, False),)
        out.append((kind, path, value, is_pattern))
    return tuple(out)


# --- checking -------------------------------------------------------------------------------


def _contains(pattern: Any, value: Any) -> bool:
    """Does `value` carry everything `pattern` has (lists: each pattern item matched by one)?"""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(v, value[k]) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_contains(p, v) for v in items) for p in pattern)
    return bool(pattern == value)


def _children(node: Any, expr: str, name: str) -> list[Node]:
    """The values of element `name` of a JSON object, with their FHIRPath."""
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        return [
            (v, f"{expr}.{stem}.ofType({k[len(stem) :]})")
            for k, v in node.items()
            if k.startswith(stem) and len(k) > len(stem) and k[len(stem)].isupper()
        ]
    value = node.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return [(v, f"{expr}.{name}[{i}]") for i, v in enumerate(value) if v is not None]
    return [(value, f"{expr}.{name}")]


def _path_values(node: Any, path: str) -> list[Any]:
    values = [node]
    if path == "$this":
        return values
    for name in path.split("."):
        values = [v for n in values for v, _ in _children(n, "", name)]
    return values


def _matches(slice_rule: Rule, item: Any) -> bool | None:
    """Does the item belong to the slice (None: the slice cannot be told by its discriminators)?"""
    if not slice_rule.sliced_by or slice_rule.sliced_by[0][0] == "unsupported":
        return None
    for _kind, path, value, is_pattern in slice_rule.sliced_by:
        found = _path_values(item, path)
        if is_pattern:
            if not any(_contains(value, v) for v in found):
                return False
        elif value not in found:
            return False
    return True


class _Check:
    def __init__(self, prof: Profile, resource: dict[str, Any]) -> None:
        self.prof = prof
        self.resource = resource
        self.issues: list[dict[str, Any]] = []

    def select(self, steps: tuple[tuple[str, str | None], ...], upto: int) -> list[Node] | None:
        """Nodes at the first `upto` steps (None: a slice on the way cannot be told)."""
        nodes: list[Node] = [(self.resource, self.prof.type)]
        id_ = self.prof.type
        for name, slice_name in steps[:upto]:
            id_ = f"{id_}.{name}"
            nodes = [c for node, expr in nodes for c in _children(node, expr, name)]
            if slice_name is not None:
                rule = next(
                    (r for r in self.prof.slices.get(id_, ()) if r.steps[-1][1] == slice_name),
                    None,
                )
                if rule is None:
                    return None
                kept = []
                for node in nodes:
                    matched = _matches(rule, node[0])
                    if matched is None:
                        return None
                    if matched:
                        kept.append(node)
                nodes = kept
                id_ = f"{id_}:{slice_name}"
        return nodes

    def error(self, code: str, text: str, at: str, message_id: str) -> None:
        self.issues.append(
            issue("error", code, f"{text} (profile {self.prof.url})", [at], message_id=message_id)
        )

    def run(self) -> list[dict[str, Any]]:
        for rule in self.prof.rules:
            self.rule(rule)
        return self.issues

    def rule(self, rule: Rule) -> None:
        parents = self.select(rule.steps, len(rule.steps) - 1)
        if parents is None:
            return
        name, slice_name = rule.steps[-1]
        if slice_name is not None and (not rule.sliced_by or rule.sliced_by[0][0] == "unsupported"):
            return
        shown = name[:-3] if name.endswith("[x]") else name
        label = f"{shown}:{slice_name}" if slice_name else shown
        for parent, expr in parents:
            if not isinstance(parent, dict):
                continue
            kids = _children(parent, expr, name)
            if slice_name is not None:
                kids = [k for k in kids if _matches(rule, k[0])]
            if rule.min is not None and len(kids) < rule.min:
                self.error(
                    "required",
                    f"{rule.id}: minimum required = {rule.min}, but only found {len(kids)}",
                    f"{expr}.{shown}",
                    "MSG_PROFILE_CARDINALITY",
                )
            if rule.max is not None and len(kids) > rule.max:
                where = kids[rule.max][1] if rule.max < len(kids) else f"{expr}.{shown}"
                self.error(
                    "structure",
                    f"{rule.id}: maximum allowed = {rule.max}, but found {len(kids)} ({label})",
                    where,
                    "MSG_PROFILE_CARDINALITY",
                )
            for value, at in kids:
                self.value(rule, value, at)

    def value(self, rule: Rule, value: Any, at: str) -> None:
        if rule.types:
            actual = at.rsplit("ofType(", 1)[-1].rstrip(")") if "ofType(" in at else None
            allowed = {t[0].upper() + t[1:] for t in rule.types}
            if actual is not None and actual not in allowed:
                self.error(
                    "structure",
                    f"{rule.id}: type {actual} is not allowed; expected {' | '.join(sorted(allowed))}",
                    at,
                    "MSG_PROFILE_TYPE",
                )
        if rule.fixed is not _NO_VALUE and value != rule.fixed:
            text = f"{rule.id}: value must be exactly {_shown(rule.fixed)}"
            self.error("value", text, at, "MSG_PROFILE_FIXED")
        if rule.pattern is not _NO_VALUE and not _contains(rule.pattern, value):
            text = f"{rule.id}: value must match the pattern {_shown(rule.pattern)}"
            self.error("value", text, at, "MSG_PROFILE_PATTERN")
        if rule.targets and isinstance(value, dict):
            self.target(rule, value, at)
        if rule.binding is not None:
            self.bound(rule, value, at)
        if rule.slicing is not None and rule.slicing[1]:
            self.closed(rule, value, at)

    def target(self, rule: Rule, value: dict[str, Any], at: str) -> None:
        ref = value.get("reference")
        if not isinstance(ref, str) or ref.startswith(("#", "urn:")):
            return
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and "Resource" not in rule.targets and parts[-2] not in rule.targets:
            self.error(
                "structure",
                f"{rule.id}: a reference to {parts[-2]} is not allowed; "
                f"expected {' | '.join(sorted(rule.targets))}",
                f"{at}.reference",
                "MSG_PROFILE_REFERENCE",
            )

    def bound(self, rule: Rule, value: Any, at: str) -> None:
        assert rule.binding is not None
        vs = expansion(rule.binding)
        if vs is None:
            return
        if isinstance(value, dict) and "coding" in value:
            ok = any(_coding_in(vs, c) for c in value.get("coding") or ())
        elif isinstance(value, dict):
            ok = _coding_in(vs, value)
        elif isinstance(value, str):
            ok = value in vs.codes
        else:
            return
        if not ok:
            self.error(
                "code-invalid",
                f"{rule.id}: {_shown(value)} is not in the required value set {rule.binding}",
                at,
                "MSG_CODE_INVALID",
            )

    def closed(self, rule: Rule, value: Any, at: str) -> None:
        """`value` is one item of a sliced element: under closed rules it must fit a slice."""
        slices = self.prof.slices.get(rule.id, ())
        verdicts = [_matches(s, value) for s in slices]
        if None in verdicts or any(verdicts):
            return
        self.error(
            "structure",
            f"{rule.id}: the slicing is closed and this item matches none of its slices",
            at,
            "MSG_PROFILE_SLICE",
        )


def _shown(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)[:200]


def _coding_in(vs: ValueSet, coding: Any) -> bool:
    if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
        return False
    system = coding.get("system")
    if isinstance(system, str):
        return coding["code"] in vs.by_system.get(system, ())
    return coding["code"] in vs.codes


def _concepts(concepts: Any) -> Iterable[str]:
    for c in concepts or ():
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            yield c["code"]
            yield from _concepts(c.get("concept"))


def expansion(url: str) -> ValueSet | None:
    """The codes of a held ValueSet (else a core one), None when it cannot be expanded here."""
    if url in _expanded:
        return _expanded[url]
    found: ValueSet | None = None
    vs = _value_sets.get(url)
    if vs is None:
        found = core_value_set(url)
    else:
        found = _expand(url, vs)
    _expanded[url] = found
    return found


def _expand(url: str, vs: dict[str, Any]) -> ValueSet | None:
    by_system: dict[str, set[str]] = {}
    contains = (vs.get("expansion") or {}).get("contains")
    if contains:
        for c in contains:
            if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str):
                by_system.setdefault(c["system"], set()).add(c["code"])
    else:
        compose = vs.get("compose") or {}
        if compose.get("exclude"):
            return None
        for inc in compose.get("include") or ():
            system = inc.get("system") if isinstance(inc, dict) else None
            if not isinstance(system, str) or inc.get("filter") or inc.get("valueSet"):
                return None
            if inc.get("concept"):
                codes = set(_concepts(inc["concept"]))
            else:
                cs = _code_systems.get(system)
                if cs is None or cs.get("content") not in (None, "complete"):
                    return None
                codes = set(_concepts(cs.get("concept")))
            by_system.setdefault(system, set()).update(codes)
    frozen = {s: frozenset(c) for s, c in by_system.items()}
    return ValueSet(url, frozen, frozenset().union(*frozen.values()) if frozen else frozenset())


def claimed_issues(
    type_: str, resource: dict[str, Any], *, extra: Iterable[str] = (), warnings: bool = False
) -> list[dict[str, Any]]:
    """Check the resource against every held profile it claims (and `extra`); warn of unknown ones."""
    meta = resource.get("meta")
    claims = list((meta or {}).get("profile") or ()) if isinstance(meta, dict) else []
    urls = [u for u in (*claims, *extra) if isinstance(u, str) and u]
    if not urls:
        return []
    out: list[dict[str, Any]] = []
    for url in dict.fromkeys(urls):
        prof = profile(url)
        if prof is None:
            if warnings:
                out.append(
                    issue(
                        "warning",
                        "not-supported",
                        f"Profile {url} is not held by this server; not checked against it",
                        [f"{type_}.meta.profile"],
                        message_id="MSG_PROFILE_UNKNOWN",
                    )
                )
            continue
        if prof.type != type_:
            out.append(
                issue(
                    "error",
                    "invalid",
                    f"Profile {url} constrains {prof.type}, not {type_}",
                    [f"{type_}.meta.profile"],
                    message_id="MSG_PROFILE_WRONG_TYPE",
                )
            )
            continue
        out += _Check(prof, resource).run()
    return out
