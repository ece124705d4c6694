"""Write the base element definitions our profiles' snapshots are generated from.

https://hl7.org/fhir/R4B/profiling.html#snapshot

Reads the official core package (hl7.fhir.r4b.core 4.3.0, CC0), a .tgz or an unpacked
directory, and writes fhir_mapping/data/r4b_base_elements.json: for each resource type our
profiles constrain and each data type whose children a profile reaches, the snapshot elements
of the base StructureDefinition, kept to the keys a snapshot needs (mappings, comments,
requirements, aliases and the constraints' XPath and extensions are dropped).

    python scripts/extract_profile_bases.py [path/to/hl7.fhir.r4b.core-4.3.0.tgz | dir]
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.extract_definitions import read_package  # noqa: E402

OUT = ROOT / "fhir_mapping" / "data" / "r4b_base_elements.json"
DEFAULT_PACKAGE = str(pathlib.Path.home() / ".cache" / "rehabfhir" / "hl7.fhir.r4b.core-4.3.0.tgz")
TYPES = (
    "Observation",
    "CarePlan",
    "Procedure",
    "CodeableConcept",
    "Coding",
    "Reference",
    "Quantity",
    "Period",
    "SampledData",
    "Extension",
)
KEEP = ("id", "path", "short", "definition", "min", "max", "base", "contentReference", "type")
KEEP_AFTER = ("constraint", "isModifier", "isModifierReason", "isSummary", "binding")


def _trim(el: dict[str, Any]) -> dict[str, Any]:
    out = {k: el[k] for k in (*KEEP, *KEEP_AFTER) if k in el}
    if "constraint" in out:
        out["constraint"] = [
            {k: c[k] for k in ("key", "severity", "human", "expression") if k in c} for c in out["constraint"]
        ]
    if "binding" in out:
        out["binding"] = {k: out["binding"][k] for k in ("strength", "valueSet") if k in out["binding"]}
    if "type" in out:
        out["type"] = [{k: t[k] for k in ("code", "profile", "targetProfile") if k in t} for t in out["type"]]
    return out


def main(package: str) -> None:
    wanted = {f"StructureDefinition-{t}.json" for t in TYPES}
    found: dict[str, Any] = {}
    for sd in read_package(package, ("StructureDefinition-",)):
        if f"StructureDefinition-{sd.get('id')}.json" in wanted and sd.get("derivation") != "constraint":
            found[sd["type"]] = {
                "url": sd["url"],
                "version": sd.get("version"),
                "kind": sd["kind"],
                "element": [_trim(el) for el in sd["snapshot"]["element"]],
            }
    missing = set(TYPES) - set(found)
    if missing:
        raise SystemExit(f"not in the package: {sorted(missing)}")
    ordered = {t: found[t] for t in TYPES}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(ordered, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PACKAGE)
