"""Write the compact search definitions the server loads at runtime from the R4B core package.

https://hl7.org/fhir/R4B/searchparameter.html

Reads the official core package (hl7.fhir.r4b.core 4.3.0, CC0), a .tgz or an unpacked
directory, and writes into server/fhir/data/:

- search_parameters.json: per resource type, every search parameter with its expression
  restricted to that type, reference targets, composite components and official url;
- compartments.json: compartment kind -> {resource type -> [param names]};
- elements.json: "Context.element" -> FHIR type, only for the elements that search
  expressions reach (the extractor's static type information).

    python scripts/extract_definitions.py [path/to/hl7.fhir.r4b.core-4.3.0.tgz | dir]
"""

from __future__ import annotations

import json
import pathlib
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.fhir.search.fhirpath import Node  # noqa: E402
from server.fhir.search.fhirpath import parse  # noqa: E402
from server.fhir.search.fhirpath import root_type  # noqa: E402
from server.fhir.search.fhirpath import split_union  # noqa: E402
from server.fhir.search.fhirpath import unparse  # noqa: E402

DATA = ROOT / "server" / "fhir" / "data"
DEFAULT_PACKAGE = "/work/pkgs/hl7.fhir.r4b.core-4.3.0.tgz"
URL_BASE = "http://hl7.org/fhir/SearchParameter/"
COMPARTMENTS = ("patient", "encounter", "practitioner", "relatedPerson", "device")
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
PREFIXES = ("SearchParameter-", "CompartmentDefinition-", "StructureDefinition-")


def read_package(path: str, prefixes: tuple[str, ...] = PREFIXES) -> Iterator[dict[str, Any]]:
    """Yield the JSON resources of the package whose file names start with one of `prefixes`."""
    src = pathlib.Path(path)
    if src.is_dir():
        folder = src / "package" if (src / "package").is_dir() else src
        for file in sorted(folder.glob("*.json")):
            if file.name.startswith(prefixes):
                yield json.loads(file.read_text(encoding="utf-8"))
        return
    with tarfile.open(src) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name.startswith(prefixes) and name.endswith(".json") and member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    yield json.load(handle)


def type_code(type_: dict[str, Any]) -> str:
    for ext in type_.get("extension", ()):
        if ext.get("url") == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    code = str(type_["code"])
    return code.rsplit(".", 1)[-1].lower() if code.startswith("http://hl7.org/fhirpath/") else code


def element_map(sds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the full element map of base resources and data types, and profile aliases."""
    elements: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    for sd in sds:
        if sd.get("derivation") == "constraint":
            if sd.get("kind") == "complex-type" and sd["id"] != sd["type"]:
                aliases[sd["id"]] = sd["type"]  # Age, Duration, SimpleQuantity -> Quantity
            continue
        if sd.get("kind") not in ("resource", "complex-type"):
            continue
        for el in sd.get("snapshot", {}).get("element", ()):
            path = el["path"]
            if "." not in path:
                continue
            key = path[:-3] if path.endswith("[x]") else path
            if "contentReference" in el:
                elements[key] = "#" + el["contentReference"].split("#", 1)[1]
                continue
            types = [type_code(t) for t in el.get("type", ())]
            if path.endswith("[x]"):
                elements[key] = types
            elif types and types[0] in ("BackboneElement", "Element") and _has_children(sd, path):
                elements[key] = ""
            elif types:
                elements[key] = types[0]
    return elements, aliases


def _has_children(sd: dict[str, Any], path: str) -> bool:
    prefix = path + "."
    return any(e["path"].startswith(prefix) for e in sd["snapshot"]["element"])


class TypeWalker:
    """Walk an expression with static types, recording every element lookup it needs."""

    def __init__(self, elements: dict[str, Any], aliases: dict[str, str], resources: set[str]):
        self.elements = elements
        self.aliases = aliases
        self.resources = resources
        self.reached: dict[str, Any] = {}

    def lookup(self, ctx: str, name: str) -> set[str]:
        ctx = self.aliases.get(ctx, ctx)
        if ctx in ("Resource", "DomainResource") or ctx in self.resources:
            candidates = [f"{ctx}.{name}", f"DomainResource.{name}", f"Resource.{name}"]
        else:
            candidates = [f"{ctx}.{name}", f"Element.{name}"]
        for key in candidates:
            if key in self.elements:
                entry = self.elements[key]
                self.reached[key] = entry
                if isinstance(entry, list):
                    return set(entry)
                if entry == "":
                    return {key}
                if entry.startswith("#"):
                    return {entry[1:]}
                return {entry}
        return set()

    def walk(self, node: Node, types: set[str], root: str) -> set[str]:
        kind = node[0]
        if kind == "member":
            name = node[1]
            if name[:1].isupper():
                return {name}
            return set().union(*(self.lookup(t, name) for t in types)) if types else set()
        if kind == "dot":
            return self.walk(node[2], self.walk(node[1], types, root), root)
        if kind == "index":
            return self.walk(node[1], types, root)
        if kind == "as":
            self.walk(node[1], types, root)
            return {node[2]}
        if kind == "union":
            return self.walk(node[1], types, root) | self.walk(node[2], types, root)
        if kind in ("is", "cmp", "and", "or"):
            for child in node[1:]:
                if isinstance(child, tuple):
                    self.walk(child, types, root)
            return {"boolean"}
        if kind == "var":
            return {root}
        if kind == "lit":
            return set()
        return self.call(node, types, root)

    def call(self, node: Node, types: set[str], root: str) -> set[str]:
        name, args = node[1], node[2]
        if name in ("as", "ofType"):
            return {unparse(args[0])}
        if name == "where":
            for t in types:
                self.walk(args[0], {t}, root)
            return types
        if name == "extension":
            return {"Extension"}
        if name == "resolve":
            return {"Resource"}
        if name in ("first", "last"):
            return types
        return {"boolean"}


def restrict(expr: str, rtype: str, single_base: bool) -> str | None:
    """Keep only the union operands of an expression that apply to one resource type."""
    kept = []
    for operand in split_union(parse(expr)):
        root = root_type(operand)
        if root == rtype or root in ("Resource", "DomainResource") or (root is None and single_base):
            kept.append(unparse(operand))
    return " | ".join(kept) or None


def build(package: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return the search parameter, compartment and element documents."""
    sps: list[dict[str, Any]] = []
    sds: list[dict[str, Any]] = []
    cds: dict[str, dict[str, Any]] = {}
    for doc in read_package(package):
        rt = doc.get("resourceType")
        if rt == "SearchParameter":
            sps.append(doc)
        elif rt == "StructureDefinition":
            sds.append(doc)
        elif rt == "CompartmentDefinition":
            cds[doc["id"]] = doc
    resources = sorted(
        sd["type"]
        for sd in sds
        if sd.get("kind") == "resource"
        and not sd.get("abstract")
        and sd.get("derivation") == "specialization"
    )
    elements, aliases = element_map(sds)
    walker = TypeWalker(elements, aliases, set(resources))
    by_url = {sp["url"]: sp for sp in sps}
    targets: list[list[str]] = []
    params: dict[str, list[list[Any]]] = {}
    for sp in sorted(sps, key=lambda s: s["id"]):
        if sp["id"].startswith("example") or not sp.get("expression") or not sp.get("base"):
            continue
        bases = sp["base"]
        for rtype in bases:
            expr = restrict(sp["expression"], rtype, len(bases) == 1)
            if expr is None:
                continue
            root = rtype if rtype in resources else "Resource"
            out_types = walker.walk(parse(expr), {root}, root)
            target = sorted(sp.get("target", ()))
            tix = -1
            if target:
                if target not in targets:
                    targets.append(target)
                tix = targets.index(target)
            comps = []
            for comp in sp.get("component", ()):
                defn = by_url[comp["definition"]]
                for t in out_types:
                    walker.walk(parse(comp["expression"]), {t}, root)
                comps.append([defn["type"], unparse(parse(comp["expression"])), defn["code"]])
            url = sp["url"].removeprefix(URL_BASE)
            row: list[Any] = [sp["code"], sp["type"], expr, tix, url]
            if comps:
                row.append(comps)
            params.setdefault(rtype, []).append(row)
    search = {"urlBase": URL_BASE, "resourceTypes": resources, "targets": targets, "params": params}
    compartments = {
        kind: {
            r["code"]: [p for p in r["param"] if p != "{def}"]
            for r in cds[kind]["resource"]
            if [p for p in r.get("param", ()) if p != "{def}"]
        }
        for kind in COMPARTMENTS
    }
    compartments = {cds[k]["code"]: v for k, v in compartments.items()}
    return search, compartments, dict(sorted(walker.reached.items()))


def main(package: str) -> None:
    """Extract the definitions and write the data files."""
    search, compartments, elements = build(package)
    DATA.mkdir(parents=True, exist_ok=True)
    for name, doc in (
        ("search_parameters.json", search),
        ("compartments.json", compartments),
        ("elements.json", elements),
    ):
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        (DATA / name).write_text(text + "\n", encoding="utf-8")
        print(f"{name}: {len(text) // 1024} KiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PACKAGE)
