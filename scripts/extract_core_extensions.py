"""Write the official StructureDefinitions of the core extensions the rehab mapping writes.

https://hl7.org/fhir/R4B/extensibility.html#Extension

Reads the official core package (hl7.fhir.r4b.core 4.3.0, CC0), a .tgz or an unpacked
directory, and writes fhir_mapping/data/r4b_core_extensions.json: the StructureDefinition of
each URL in fhir_mapping.profiles.CORE_EXTENSIONS, as the package holds it (nothing dropped), so
the server seeds and serves the definition a reader resolves at that canonical URL.

    python scripts/extract_core_extensions.py [path/to/hl7.fhir.r4b.core-4.3.0.tgz | dir]
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_mapping.profiles import CORE_EXTENSIONS  # noqa: E402
from scripts.extract_definitions import read_package  # noqa: E402

OUT = ROOT / "fhir_mapping" / "data" / "r4b_core_extensions.json"
DEFAULT_PACKAGE = str(pathlib.Path.home() / ".cache" / "rehabfhir" / "hl7.fhir.r4b.core-4.3.0.tgz")


def main(package: str) -> None:
    found = {
        sd["url"]: sd
        for sd in read_package(package, ("StructureDefinition-",))
        if sd.get("url") in CORE_EXTENSIONS and sd.get("type") == "Extension"
    }
    missing = set(CORE_EXTENSIONS) - set(found)
    if missing:
        raise SystemExit(f"not in the package: {sorted(missing)}")
    ordered = [found[url] for url in CORE_EXTENSIONS]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(ordered, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {len(ordered)} definitions)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PACKAGE)
