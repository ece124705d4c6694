"""Element types, bindings, reference targets and invariants of FHIR R4B, from the committed data file.

https://hl7.org/fhir/R4B/elementdefinition.html

server/fhir/data/validation.json is written by scripts/extract_validation.py from the official
core package and read once, on first use. Only the elements below which something is checked
are in it; everything else is walked without type information (ele-1 and ext-1 need none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class Invariant:
    """One FHIRPath constraint of an element definition."""

    key: str
    severity: str
    human: str
    expression: str


@dataclass(frozen=True, slots=True)
class ValueSet:
    """An expanded value set: codes by system, and every code whatever its system."""

    url: str
    by_system: dict[str, frozenset[str]]
    codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Child:
    """One JSON property of a complex element: its definition path and the type it carries."""

    path: str
    type: str
    strength: str | None
    value_set: ValueSet | None
    targets: frozenset[str]
    choice: bool


@cache
def _document() -> dict[str, Any]:
    text = resources.files("server.fhir").joinpath("data", "validation.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


@cache
def _value_sets() -> tuple[ValueSet | None, ...]:
    out: list[ValueSet | None] = []
    for url, systems in _document()["valueSets"]:
        if systems is None:
            out.append(None)
            continue
        by_system = {s: frozenset(codes) for s, codes in systems.items()}
        out.append(ValueSet(url, by_system, frozenset().union(*by_system.values())))
    return tuple(out)


@cache
def _value_sets_by_url() -> dict[str, ValueSet]:
    return {vs.url: vs for vs in _value_sets() if vs is not None}


def core_value_set(url: str) -> ValueSet | None:
    """An expanded value set of the core package by its URL, if validation.json holds it."""
    return _value_sets_by_url().get(url)


@cache
def _children() -> dict[str, dict[str, Child]]:
    doc = _document()
    value_sets = _value_sets()
    targets = [frozenset(t) for t in doc["targets"]]
    strengths = {"r": "required", "e": "extensible", "p": "preferred"}
    out: dict[str, dict[str, Child]] = {}
    for path, (kind, binding, tix) in doc["elements"].items():
        parent, name = path.rsplit(".", 1)
        strength = strengths[binding[0]] if binding else None
        value_set = value_sets[binding[1]] if binding else None
        allowed = targets[tix] if tix >= 0 else frozenset()
        kids = out.setdefault(parent, {})
        if isinstance(kind, list):
            for t in kind:
                kids[name + t[0].upper() + t[1:]] = Child(path, t, strength, value_set, allowed, True)
        else:
            type_ = kind[1:] if kind.startswith("#") else (kind or path)
            kids[name] = Child(path, type_, strength, value_set, allowed, False)
    return out


def children(path: str) -> dict[str, Child]:
    """Return the checked JSON properties of the element (or type) at `path`."""
    return _children().get(path, {})


@cache
def _invariants() -> dict[str, tuple[Invariant, ...]]:
    doc = _document()
    defs = [Invariant(*row) for row in doc["invariants"]]
    return {path: tuple(defs[i] for i in ix) for path, ix in doc["constraints"].items()}


def invariants(path: str) -> tuple[Invariant, ...]:
    """Return the constraints introduced on the element (or type) at `path`."""
    return _invariants().get(path, ())


def all_invariants() -> dict[str, tuple[Invariant, ...]]:
    """Return every element path with its constraints."""
    return dict(_invariants())
