"""Write the compact validation definitions the server loads at runtime from the R4B core package.

https://hl7.org/fhir/R4B/validation.html

Reads the official core package (hl7.fhir.r4b.core 4.3.0, CC0), a .tgz or an unpacked
directory, and writes server/fhir/data/validation.json:

- elements: "Path.element" -> [type, binding, targets] for every element of the base
  resources and data types that has something to check below it (a binding, a reference,
  a constraint, or a complex type that has one). `type` is a type code, a list of codes for a
  choice element, "" for a backbone element (its children follow under its own path) or
  "#Path" for a content reference; `binding` is [strength, value set index] or 0; `targets`
  is an index into `targets` (allowed reference target types) or -1.
- invariants: [[key, severity, human, FHIRPath], ...] and constraints: "Path" -> [invariant
  index, ...], each constraint kept only on the definition that introduces it (Element's ele-1
  once, DomainResource's dom-* once).
- valueSets: [url, {system: [code, ...]}] for every bound value set the package can expand
  (explicit concepts, whole complete code systems, is-a filters, includes of other value
  sets); value sets the package cannot expand (SNOMED CT, LOINC, BCP 47, MIME types...) are
  [url, null] and not checked.

    python scripts/extract_validation.py [path/to/hl7.fhir.r4b.core-4.3.0.tgz | dir]
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

from extract_definitions import read_package  # the one package reader (scripts/ is on sys.path)
from extract_definitions import type_code

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "server" / "fhir" / "data" / "validation.json"
DEFAULT_PACKAGE = str(pathlib.Path.home() / ".cache" / "rehabfhir" / "hl7.fhir.r4b.core-4.3.0.tgz")
SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
PREFIXES = ("StructureDefinition-", "ValueSet-", "CodeSystem-")
STRENGTHS = {"required": "r", "extensible": "e", "preferred": "p"}
# Bigger expansions are not shipped (and so not checked): keeps the data file compact.
MAX_CODES = 2000


class Terminology:
    """Expand value sets from the package's ValueSets and CodeSystems."""

    def __init__(self, value_sets: dict[str, Any], code_systems: dict[str, Any]) -> None:
        self.value_sets = value_sets
        self.code_systems = code_systems
        self.cache: dict[str, dict[str, list[str]] | None] = {}

    def expand(self, url: str) -> dict[str, list[str]] | None:
        """Return {system: sorted codes} or None when the package cannot expand the value set."""
        url = url.split("|", 1)[0]
        if url not in self.cache:
            self.cache[url] = None  # a cycle expands to nothing checkable
            found = self._expand(url)
            if found is not None and sum(len(c) for c in found.values()) > MAX_CODES:
                found = None
            self.cache[url] = {s: sorted(c) for s, c in found.items()} if found is not None else None
        return self.cache[url]

    def _expand(self, url: str) -> dict[str, set[str]] | None:
        vs = self.value_sets.get(url)
        if vs is None:
            return None
        compose = vs.get("compose") or {}
        if not compose.get("include"):
            return None
        out: dict[str, set[str]] = {}
        for inc in compose["include"]:
            part = self._include(inc)
            if part is None:
                return None
            for system, codes in part.items():
                out.setdefault(system, set()).update(codes)
        for exc in compose.get("exclude", ()):
            part = self._include(exc)
            if part is None:
                return None
            for system, codes in part.items():
                out.get(system, set()).difference_update(codes)
        return out

    def _include(self, inc: dict[str, Any]) -> dict[str, set[str]] | None:
        result: dict[str, set[str]] | None = None
        for ref in inc.get("valueSet", ()):
            other = self.expand(ref)
            if other is None:
                return None
            result = {s: set(c) for s, c in other.items()} if result is None else _intersect(result, other)
        system = inc.get("system")
        if system is None:
            return result
        if inc.get("concept"):
            own = {system: {c["code"] for c in inc["concept"]}}
        else:
            own = self._system_codes(system, inc.get("filter", ()))
            if own is None:
                return None
        return own if result is None else _intersect(own, result)

    def _system_codes(self, system: str, filters: list[dict[str, Any]]) -> dict[str, set[str]] | None:
        cs = self.code_systems.get(system)
        if cs is None or cs.get("content") != "complete":
            return None
        concepts = cs.get("concept", ())
        if not filters:
            return {system: set(_codes(concepts))}
        codes: set[str] | None = None
        for flt in filters:
            if flt.get("property") != "concept" or flt.get("op") not in ("is-a", "descendent-of"):
                return None
            node = _find(concepts, flt["value"])
            if node is None:
                return None
            below = set(_codes(node.get("concept", ())))
            if flt["op"] == "is-a":
                below.add(node["code"])
            codes = below if codes is None else codes & below
        return {system: codes or set()}


def _intersect(a: dict[str, set[str]], b: dict[str, Any]) -> dict[str, set[str]]:
    return {s: a[s] & set(b[s]) for s in a if s in b}


def _codes(concepts: Any) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _codes(concept.get("concept", ()))


def _find(concepts: Any, code: str) -> dict[str, Any] | None:
    for concept in concepts:
        if concept["code"] == code:
            return dict(concept)
        found = _find(concept.get("concept", ()), code)
        if found is not None:
            return found
    return None


def _element_row(
    el: dict[str, Any], terms: Terminology, vs_index: dict[str, int], targets: list[list[str]]
) -> list[Any]:
    path = el["path"]
    if "contentReference" in el:
        kind: Any = "#" + el["contentReference"].split("#", 1)[1]
    else:
        types = [type_code(t) for t in el.get("type", ())]
        if path.endswith("[x]"):
            kind = types
        elif types and types[0] in ("BackboneElement", "Element") and "." in path:
            kind = ""
        else:
            kind = types[0] if types else ""
    binding: Any = 0
    b = el.get("binding")
    if b and b.get("strength") in STRENGTHS and b.get("valueSet"):
        url = b["valueSet"].split("|", 1)[0]
        if url not in vs_index:
            vs_index[url] = len(vs_index)
            terms.expand(url)
        binding = [STRENGTHS[b["strength"]], vs_index[url]]
    allowed = sorted(
        {
            p.removeprefix(SD_BASE)
            for t in el.get("type", ())
            if t.get("code") == "Reference"
            for p in t.get("targetProfile", ())
        }
    )
    tix = -1
    if allowed and allowed != ["Resource"]:
        if allowed not in targets:
            targets.append(allowed)
        tix = targets.index(allowed)
    return [kind, binding, tix]


def build(package: str) -> dict[str, Any]:
    """Return the validation document."""
    sds: list[dict[str, Any]] = []
    value_sets: dict[str, Any] = {}
    code_systems: dict[str, Any] = {}
    for doc in read_package(package, PREFIXES):
        rt = doc.get("resourceType")
        if rt == "StructureDefinition":
            if doc.get("derivation", "specialization") == "specialization" and doc.get("kind") in (
                "resource",
                "complex-type",
            ):
                sds.append(doc)
        elif rt == "ValueSet":
            value_sets[doc["url"]] = doc
        elif rt == "CodeSystem":
            code_systems[doc["url"]] = doc
    terms = Terminology(value_sets, code_systems)
    vs_index: dict[str, int] = {}
    targets: list[list[str]] = []
    rows: dict[str, list[Any]] = {}
    constraints: dict[str, list[int]] = {}
    defs: list[list[str]] = []
    for sd in sorted(sds, key=lambda s: s["id"]):
        own = SD_BASE + sd["id"]
        for el in sd["snapshot"]["element"]:
            path = el["path"].removesuffix("[x]")
            for c in el.get("constraint", ()):
                if c.get("source", own) == own and c.get("expression"):
                    entry = [c["key"], c["severity"], c.get("human", ""), c["expression"]]
                    if entry not in defs:
                        defs.append(entry)
                    constraints.setdefault(path, []).append(defs.index(entry))
            if "." in el["path"] and path.rsplit(".", 1)[1] not in ("extension", "modifierExtension"):
                rows[path] = _element_row(el, terms, vs_index, targets)
    rows = _prune(rows, {p: [defs[i] for i in ix] for p, ix in constraints.items()})
    used = sorted({r[1][1] for r in rows.values() if r[1]})
    renumber = {old: new for new, old in enumerate(used)}
    urls = {i: u for u, i in vs_index.items()}
    for row in rows.values():
        if row[1]:
            row[1][1] = renumber[row[1][1]]
    return {
        "elements": rows,
        "constraints": constraints,
        "invariants": defs,
        "targets": targets,
        "valueSets": [[urls[i], terms.expand(urls[i])] for i in used],
    }


def _prune(rows: dict[str, list[Any]], constraints: dict[str, Any]) -> dict[str, list[Any]]:
    """Keep only the elements below which something is checked (ele-1 needs no types)."""
    interesting: set[str] = {p for p, cs in constraints.items() if any(c[0] != "ele-1" for c in cs)}
    interesting |= {p for p, r in rows.items() if r[1] or r[2] >= 0}
    changed = True
    while changed:
        changed = False
        roots = {p.split(".", 1)[0] for p in interesting} | {"Resource"}
        for path, (kind, _, _) in rows.items():
            if path in interesting:
                continue
            kinds = kind if isinstance(kind, list) else [kind]
            if any(
                (k == "" and any(p.startswith(path + ".") for p in interesting))
                or (k.startswith("#") and any(p.startswith(k[1:] + ".") for p in interesting))
                or (k in roots)
                for k in kinds
            ):
                interesting.add(path)
                changed = True
    return {p: r for p, r in sorted(rows.items()) if p in interesting}


def main(package: str) -> None:
    """Extract the definitions and write the data file."""
    doc = build(package)
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    OUT.write_text(text + "\n", encoding="utf-8")
    expanded = sum(1 for _, codes in doc["valueSets"] if codes is not None)
    print(
        f"validation.json: {len(text) // 1024} KiB, {len(doc['elements'])} elements, "
        f"{len(doc['invariants'])} invariants, "
        f"{expanded}/{len(doc['valueSets'])} value sets expanded"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PACKAGE)
