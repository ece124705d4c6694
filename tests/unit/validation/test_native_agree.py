"""The native invariants and the evaluation shortcut agree with fhirpathpy over the official examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fhirpathpy.engine.nodes import ResourceNode

from server.fhir.validation import invariants as inv
from server.fhir.validation import walker
from server.fhir.validation.definitions import all_invariants
from tests.functional.test_examples import ALL_EXAMPLES

EXPRESSIONS = {i.key: i.expression for invs in all_invariants().values() for i in invs}


def nodes(
    doc: Any, key: str = "", resource: Any = None, root: Any = None
) -> Iterator[tuple[str, Any, Any, Any]]:
    """Yield (property name, node, enclosing resource, container of contained) for every object."""
    if isinstance(doc, list):
        for item in doc:
            yield from nodes(item, key, resource, root)
        return
    if not isinstance(doc, dict):
        return
    if "resourceType" in doc:
        root = root if key == "contained" else doc
        resource = doc
    else:
        yield key, doc, resource, root
    for k, v in doc.items():
        yield from nodes(v, k, resource, root)


def fhirpath(key: str, node: Any, base: str, resource: Any = None, root: Any = None) -> bool:
    fn = inv.compiled(EXPRESSIONS[key])
    assert fn is not None
    return fn(ResourceNode.create_node(node, base), {"resource": resource, "rootResource": root}) != [False]


def contained_ids(root: Any) -> dict[str, str]:
    return {c["id"]: c["resourceType"] for c in root.get("contained", ()) if "id" in c}


BROKEN = [
    {},
    {"id": "a"},
    {"url": "http://x"},
    {"url": "http://x", "valueString": "v", "extension": [{"url": "y"}]},
]


def test_native_invariants_agree_with_fhirpath() -> None:
    seen = {"ele-1": 0, "ext-1": 0, "ref-1": 0, "per-1": 0}
    failing = {"ele-1": 0, "ext-1": 0, "ref-1": 0, "per-1": 0}

    def agree(key: str, native: bool, by_fhirpath: bool) -> None:
        assert native == by_fhirpath, (key, native)
        seen[key] += 1
        failing[key] += not native

    for doc in ALL_EXAMPLES + [{"resourceType": "Basic", "extension": BROKEN}]:
        for key, node, resource, root in nodes(doc):
            # Untyped, fhirpathpy does not see "_event" (a primitive with only extensions) as the
            # element "event"; FHIRPath does: give it the element under its own name.
            as_fhirpath = {k.lstrip("_"): v for k, v in node.items()}
            agree("ele-1", inv.ele_1(node), fhirpath("ele-1", as_fhirpath, "Element"))
            if key in ("extension", "modifierExtension"):
                agree("ext-1", inv.ext_1(node), fhirpath("ext-1", node, "Extension"))
            if isinstance(node.get("reference"), str):
                native = inv.ref_1(node, resource, root, contained_ids(root))
                agree("ref-1", native, fhirpath("ref-1", node, "Reference", resource, root))
            start, end = node.get("start"), node.get("end")
            # fhirpathpy compares dateTimes of different precisions wrongly (10:00:00Z > 10:00:00.002Z):
            # compare like with like.
            if isinstance(start, str) and isinstance(end, str) and len(start) == len(end):
                agree("per-1", inv.per_1(node), fhirpath("per-1", node, "Period"))
    assert min(seen.values()) > 0 and failing["ele-1"] >= 2 and failing["ext-1"] >= 2, (seen, failing)


def _small(doc: dict[str, Any]) -> bool:
    return len(json.dumps(doc)) < 6_000


@pytest.mark.parametrize("warnings", [False, True], ids=["errors", "warnings"])
def test_shortcut_agrees_with_full_evaluation(warnings: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [d for d in ALL_EXAMPLES if _small(d)]
    fast = [walker.check(d["resourceType"], d, warnings=warnings) for d in docs]
    monkeypatch.setattr(inv, "vacuous", lambda *_: False)
    slow = [walker.check(d["resourceType"], d, warnings=warnings) for d in docs]
    assert fast == slow
    assert sum(map(len, fast)) > 0 if warnings else True


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("dataAbsentReason.empty() or value.empty()", ("dataAbsentReason", "value")),
        ("hasValue() or (children().count() > id.count())", None),
        ("contained.where(('#'+id in %resource.descendants().reference)).empty()", ("contained",)),
        ("$this is Quantity", None),
        ("(start <= end) or start.empty()", ("end", "start")),
    ],
)
def test_root_names(expression: str, names: tuple[str, ...] | None) -> None:
    assert inv.root_names(expression) == names


EXISTENCE = {k: e for k, e in EXPRESSIONS.items() if inv.existence_terms(e) is not None}


def test_existence_invariants_agree_with_fhirpath() -> None:
    """`a.empty() or b.exists() …` decided from the node's keys agrees with fhirpathpy wherever it decides."""
    assert {"qty-3", "cpt-2", "obs-3", "obs-6", "tim-1", "pat-1"} <= set(EXISTENCE)
    broken = [
        {"value": 3, "code": "kg"},  # qty-3 fails
        {"value": "555", "use": "home"},  # cpt-2 fails
        {"dataAbsentReason": {"text": "x"}, "valueQuantity": {"value": 1}},  # choice: left to fhirpathpy
        {"duration": 2, "_durationUnit": {"extension": []}},  # extension-only primitive: fhirpathpy
        {"period": 1, "periodMax": 2, "periodUnit": "d"},  # longer name sharing the prefix
    ]
    decided = failing = 0
    for doc in [d for d in ALL_EXAMPLES if _small(d)] + [{"resourceType": "Basic", "extension": broken}]:
        for _, node, resource, root in nodes(doc):
            for key, expression in EXISTENCE.items():
                terms = inv.existence_terms(expression)
                assert terms is not None
                if not any(k.lstrip("_").startswith(name) for name, _ in terms for k in node):
                    continue
                native = inv.existence_holds(terms, node)
                if native is None:
                    continue
                assert native == fhirpath(key, node, "Element", resource, root), (key, node)
                decided += 1
                failing += not native
    assert decided > 1000 and failing > 100, (decided, failing)


def test_existence_invariants_enforced_on_write() -> None:
    """qty-3 and cpt-2 still refuse a write when decided natively (they were fhirpathpy's before)."""
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70, "unit": "kg", "code": "kg"},
    }
    found = walker.check("Observation", obs)
    assert [(i["diagnostics"][:6], i["expression"]) for i in found] == [
        ("qty-3:", ["Observation.value.ofType(Quantity)"])
    ]
    patient = {"resourceType": "Patient", "telecom": [{"value": "555-1234"}]}
    found = walker.check("Patient", patient)
    assert [(i["diagnostics"][:6], i["expression"]) for i in found] == [("cpt-2:", ["Patient.telecom[0]"])]
    phone = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "5"}]}
    assert walker.check("Patient", phone) == []


# dom-3 as R4B writes it applies as() to collections, which fhirpathpy refuses (FHIRPath means
# the filter ofType()); the native version is checked against that reading.
DOM_3 = (
    EXPRESSIONS["dom-3"]
    .replace(".as(canonical)", ".ofType(canonical)")
    .replace(".as(uri)", ".ofType(uri)")
    .replace(".as(url)", ".ofType(url)")
    .replace("where(as(canonical) = '#')", "ofType(canonical).where($this = '#')")
    .replace("where(as(uri) = '#')", "ofType(uri).where($this = '#')")
)
_OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
DOM_3_CASES = [
    {**_OBS, "contained": [{"resourceType": "Patient", "id": "p"}]},  # not referred to
    {**_OBS, "contained": [{"resourceType": "Patient"}]},  # no id
    {**_OBS, "subject": {"reference": "#p"}, "contained": [{"resourceType": "Patient", "id": "p"}]},
    {  # refers to its container
        **_OBS,
        "contained": [
            {"resourceType": "Patient", "id": "p", "link": [{"other": {"reference": "#"}, "type": "seealso"}]}
        ],
    },
    {  # a canonical names it
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "choice", "answerValueSet": "#vs"}],
        "contained": [{"resourceType": "ValueSet", "id": "vs", "status": "draft"}],
    },
]


def _resources(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield doc
    for entry in doc.get("entry") or () if doc.get("resourceType") == "Bundle" else ():
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield entry["resource"]


def test_dom_3_natively_agrees_with_fhirpath() -> None:
    import fhirpathpy
    from fhirpathpy.models import models

    fn = fhirpathpy.compile(DOM_3, model=models["r4"], options=inv._OPTIONS)
    docs = [r for d in ALL_EXAMPLES for r in _resources(d) if r.get("contained")] + DOM_3_CASES
    verdicts = []
    for doc in docs:
        by_fhirpath = fn(
            ResourceNode.create_node(doc, doc["resourceType"]), {"resource": doc, "rootResource": doc}
        )
        assert inv.dom_3(doc) == (by_fhirpath != [False]), doc.get("id") or doc
        verdicts.append(inv.dom_3(doc))
    assert len(docs) > (100 if len(ALL_EXAMPLES) > 1000 else 5)  # official package, or the sample
    assert verdicts[-5:] == [False, False, True, True, True]
    failed = walker.check("Observation", DOM_3_CASES[0])
    assert [(i["diagnostics"][:6], i["expression"]) for i in failed] == [("dom-3:", ["Observation"])]
