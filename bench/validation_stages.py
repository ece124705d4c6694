"""Per-resource cost of each write validation stage, over official R4B examples of common types.

    python bench/validation_stages.py [path/to/hl7.fhir.r4b.examples-4.3.0.tgz]

Stages: the R4B model (fhir.resources model_validate), then server.fhir.validation.check
(bindings + reference targets + error invariants, and the held profiles a resource claims: what
every write runs), the same with warnings ($validate), and search index extraction, for
comparison. The last rows are Observations as /rehab writes them (rehab_finding), once without
and once with their meta.profile claim: the difference is the profile check.
"""

from __future__ import annotations

import copy
import json
import pathlib
import random
import sys
import tarfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from fhir_mapping import profiles  # noqa: E402
from fhir_mapping import terminology  # noqa: E402
from fhir_mapping.observations import build_observation  # noqa: E402
from server.fhir.search import indexing  # noqa: E402
from server.fhir.validation import check  # noqa: E402
from server.fhir.validation import profiles as held  # noqa: E402

TYPES = ("Observation", "Patient", "Encounter", "Procedure", "Goal", "CarePlan", "Condition")
DEFAULT = pathlib.Path.home() / ".cache" / "rehabfhir" / "hl7.fhir.r4b.examples-4.3.0.tgz"


def rehab_finding(rng: random.Random, patient_id: str) -> dict[str, Any]:
    """An Observation as POST /rehab/assessments writes it, claiming the rehab-finding profile."""
    finding = rng.choice(
        [
            {"measure": "pain_nrs", "value": rng.randrange(0, 11), "unit": "{score}"},
            {"measure": "tug_time", "value": round(rng.uniform(6, 30), 1), "unit": "s"},
            {
                "measure": "joint_rom_knee_flexion",
                "value": rng.randrange(60, 140),
                "unit": "deg",
                "side": "left",
            },
            {"measure": "mmt_grade", "value": "4+", "side": "right", "body_site": "quadriceps"},
        ]
    )
    day = 1 + rng.randrange(28)
    return profiles.claim("finding", build_observation(finding, patient_id, f"2026-11-{day:02d}T10:00:00Z"))


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
    held.hold(terminology.resources())
    rng = random.Random(7)
    claimed = [rehab_finding(rng, "p1") for _ in range(200)]
    unclaimed = copy.deepcopy(claimed)
    for doc in unclaimed:
        del doc["meta"]
    rows = {**load(path), "rehab": unclaimed, "rehab+prof": claimed}
    for type_, docs in rows.items():
        if docs:
            cells = " ".join(f"{per_resource(fn, docs):>15.3f}" for fn in stages.values())
            print(f"{type_:<12} {len(docs):>4} {cells}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT))
