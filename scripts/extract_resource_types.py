"""Write server/fhir/data/resource_types.json: every concrete R4B resource type.

Reads the StructureDefinitions of the official core package (hl7.fhir.r4b.core 4.3.0, CC0):
    python scripts/extract_resource_types.py [path/to/hl7.fhir.r4b.core-4.3.0.tgz]
"""

from __future__ import annotations

import json
import pathlib
import sys
import tarfile

OUT = pathlib.Path(__file__).resolve().parent.parent / "server" / "fhir" / "data" / "resource_types.json"


def main(package: str) -> None:
    types = []
    with tarfile.open(package) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not (name.startswith("StructureDefinition-") and name.endswith(".json")):
                continue
            doc = json.load(tar.extractfile(member))  # type: ignore[arg-type]
            if (
                doc.get("kind") == "resource"
                and not doc.get("abstract")
                and doc.get("derivation") == "specialization"
            ):
                types.append(doc["type"])
    OUT.write_text(json.dumps(sorted(set(types))) + "\n")
    print(f"{len(set(types))} resource types -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/pkgs/hl7.fhir.r4b.core-4.3.0.tgz")
