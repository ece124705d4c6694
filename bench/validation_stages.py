"""Per-resource cost of each write validation stage, over official R4B examples of common types.

    python bench/validation_stages.py [path/to/hl7.fhir.r4b.examples-4.3.0.tgz]

Stages: the R4B model (fhir.resources model_validate), then server.fhir.validation.check
(bindings + reference targets + error invariants: what every write runs), the same with
warnings ($validate), and search index extraction, for comparison.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tarfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from server.fhir.search import indexing  # noqa: E402
from server.fhir.validation import check  # noqa: E402

TYPES = ("Observation", "Patient", "Encounter", "Procedure", "Goal", "CarePlan", "Condition")
DEFAULT = pathlib.Path.home() / ".cache" / "rehabfhir" / "hl7.fhir.r4b.examples-4.3.0.tgz"


def load(path: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name.split("-", 1)[0] in out and name.endswith(".json"):
                doc = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                try:
                    get_fhir_model_class(doc["resourceType"]).model_validate(doc)
                except Exception:  # noqa: BLE001, S112 - only what the server accepts
                    continue
                out[doc["resourceType"]].append(doc)
    return out


def per_resource(fn: Callable[[dict[str, Any]], Any], docs: list[dict[str, Any]], rounds: int = 5) -> float:
    for doc in docs:
        fn(doc)  # warm caches (compiled FHIRPath)
    start = time.perf_counter()
    for _ in range(rounds):
        for doc in docs:
            fn(doc)
    return (time.perf_counter() - start) / (rounds * len(docs)) * 1000


def main(path: str) -> None:
    stages = {
        "model": lambda d: get_fhir_model_class(d["resourceType"]).model_validate(d),
        "check": lambda d: check(d["resourceType"], d),
        "check+warnings": lambda d: check(d["resourceType"], d, warnings=True),
        "index": lambda d: indexing.prepare(d),
    }
    print(f"{'type':<12} {'n':>4} " + " ".join(f"{s:>15}" for s in stages) + "   (ms per resource)")
    for type_, docs in load(path).items():
        if docs:
            cells = " ".join(f"{per_resource(fn, docs):>15.3f}" for fn in stages.values())
            print(f"{type_:<12} {len(docs):>4} {cells}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT))
