"""Generate a profile's snapshot from its differential and the base R4B definitions.

https://hl7.org/fhir/R4B/profiling.html#snapshot

The base elements are the official core package's snapshots (hl7.fhir.r4b.core 4.3.0), kept in
fhir_mapping/data/r4b_base_elements.json by scripts/extract_profile_bases.py. Every base element
is copied in order with the differential's element of the same id laid over it; an element the
differential reaches below (e.g. Observation.code.coding) is expanded with its data type's
children; each slice (`id:sliceName`) follows its sliced element's children, as a copy of the
sliced element with its own children.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

Element = dict[str, Any]


@cache
def _bases() -> dict[str, Any]:
    text = resources.files("fhir_mapping").joinpath("data", "r4b_base_elements.json").read_text("utf-8")
    return dict(json.loads(text))


def base_elements(type_: str) -> list[Element]:
    """The base snapshot elements of a resource or data type (a copy)."""
    return copy.deepcopy(_bases()[type_]["element"])


def _children(elements: list[Element], parent: str) -> list[Element]:
    """Direct children of `parent` among elements whose ids are relative to the type's root."""
    depth = parent.count(".") + 1
    return [e for e in elements if e["id"].startswith(parent + ".") and e["id"].count(".") == depth]


def _path(id_: str) -> str:
    return ".".join(part.split(":", 1)[0] for part in id_.split("."))


class _Generator:
    def __init__(self, differential: list[Element]) -> None:
        self.diff = {e["id"]: e for e in differential}
        self.used: set[str] = set()

    def emit(self, base: Element, id_: str, kids: list[tuple[Element, list[Any]]]) -> list[Element]:
        merged = {k: v for k, v in base.items() if k not in ("id", "path")}
        merged = {"id": id_, "path": _path(id_), **merged}
        own = self.diff.get(id_)
        if own is not None:
            self.used.add(id_)
            merged.update({k: v for k, v in own.items() if k not in ("id", "path")})
        out = [merged]
        if not kids and any(d.startswith(id_ + ".") for d in self.diff):
            kids = _type_tree(merged)
        for child, grandchildren in kids:
            name = child["id"].rsplit(".", 1)[1]
            out += self.emit(child, f"{id_}.{name}", grandchildren)
        if ":" not in id_.rsplit(".", 1)[-1]:
            for slice_id in self.diff:
                if slice_id.startswith(id_ + ":") and "." not in slice_id[len(id_) + 1 :]:
                    out += self.emit(base, slice_id, kids)
        return out


def _tree(elements: list[Element], parent: str) -> list[tuple[Element, list[Any]]]:
    return [(e, _tree(elements, e["id"])) for e in _children(elements, parent)]


def _type_tree(element: Element) -> list[tuple[Element, list[Any]]]:
    types = element.get("type") or ()
    codes = {t.get("code") for t in types}
    if len(codes) != 1:
        return []
    (code,) = codes
    if code not in _bases():
        raise ValueError(f"{element['id']}: no base definition of {code} to expand")
    elements = base_elements(str(code))
    return _tree(elements, elements[0]["id"])


def snapshot(type_: str, differential: list[Element]) -> list[Element]:
    """The snapshot of a profile on `type_` with this differential (every differential id must land)."""
    elements = base_elements(type_)
    root = elements[0]
    gen = _Generator(differential)
    out = gen.emit(root, root["id"], _tree(elements, root["id"]))
    missing = set(gen.diff) - gen.used
    if missing:
        raise ValueError(f"differential elements not in {type_}: {sorted(missing)}")
    return out
