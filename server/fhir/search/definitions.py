"""Search parameter and compartment definitions of FHIR R4B, loaded from the committed data files.

https://hl7.org/fhir/R4B/searchparameter-registry.html

The data files are written by scripts/extract_definitions.py from the official core
package; they are read once, on first use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    name: str
    type: str
    expression: str
    targets: tuple[str, ...]
    url: str
    # (component type, expression relative to the composite's element, component code)
    components: tuple[tuple[str, str, str], ...] = ()


def _load(name: str) -> Any:
    text = resources.files("server.fhir").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _search_document() -> dict[str, Any]:
    return dict(_load("search_parameters.json"))


@cache
def _compartments() -> dict[str, dict[str, tuple[str, ...]]]:
    doc = _load("compartments.json")
    return {kind: {rt: tuple(ps) for rt, ps in members.items()} for kind, members in doc.items()}


@cache
def element_types() -> Mapping[str, Any]:
    """Return the static element type map ("Context.element" -> type) used by the extractor."""
    return MappingProxyType(_load("elements.json"))


@cache
def _params(resource_type: str) -> Mapping[str, SearchParam]:
    doc = _search_document()
    base, targets = doc["urlBase"], doc["targets"]
    out: dict[str, SearchParam] = {}
    for scope in ("Resource", "DomainResource", resource_type):
        for row in doc["params"].get(scope, ()):
            name, type_, expression, tix, url = row[:5]
            components = tuple((c[0], c[1], c[2]) for c in row[5]) if len(row) > 5 else ()
            out[name] = SearchParam(
                name=name,
                type=type_,
                expression=expression,
                targets=tuple(targets[tix]) if tix >= 0 else (),
                url=url if url.startswith(("http:", "https:", "urn:")) else base + url,
                components=components,
            )
    return MappingProxyType(out)


def resource_types() -> tuple[str, ...]:
    """Return every R4B resource type (each has at least the common Resource parameters)."""
    return tuple(_search_document()["resourceTypes"])


def is_resource_type(name: str) -> bool:
    """Tell whether a name is an R4B resource type."""
    return name in _resource_type_set()


@cache
def _resource_type_set() -> frozenset[str]:
    return frozenset(resource_types())


def params_for(resource_type: str) -> Mapping[str, SearchParam]:
    """Return the search parameters of a resource type by name, common ones included."""
    if not is_resource_type(resource_type):
        return MappingProxyType({})
    return _params(resource_type)


def compartment_params(kind: str, resource_type: str) -> tuple[str, ...]:
    """Return the params linking a resource type to a compartment kind (e.g. Patient)."""
    return _compartments().get(kind, {}).get(resource_type, ())


def compartment_members(kind: str) -> tuple[str, ...]:
    """Return the resource types that can belong to a compartment kind (the kind itself included)."""
    members = tuple(_compartments().get(kind, {}))
    if not members or kind in members:
        return members
    return (*members, kind)


def compartment_kinds() -> tuple[str, ...]:
    """Return the compartment kinds (Patient, Encounter, Practitioner, RelatedPerson, Device)."""
    return tuple(_compartments())
