"""One walk over a resource that checks bindings, reference targets and invariants.

https://hl7.org/fhir/R4B/validation.html

Each JSON property is looked up among the checked children of its element definition; a
property with nothing to check below it is still walked, untyped, for ele-1 and extensions.
Issue expressions are FHIRPath: `Observation.component[1].value.ofType(Quantity).code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from server.fhir.outcomes import issue
from server.fhir.validation import invariants as inv
from server.fhir.validation.bindings import binding_issue
from server.fhir.validation.definitions import Child
from server.fhir.validation.definitions import Invariant
from server.fhir.validation.definitions import children
from server.fhir.validation.definitions import invariants
from server.fhir.validation.references import reference_issue

# Resources that are not DomainResources (no text, contained or dom-* invariants).
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})
_DOM_3 = (
    "If the resource is contained in another resource, it SHALL be referred to from elsewhere in the"
    " resource or SHALL refer to the containing resource"
)
_EXTENSION = Child("Element.extension", "Extension", None, None, frozenset(), False)


@dataclass(slots=True)
class _Pending:
    invariant: Invariant
    node: Any
    base: str
    where: str
    resource: Any
    root: Any


@dataclass(slots=True)
class _Walk:
    warnings: bool
    issues: list[dict[str, Any]] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)

    def queue(self, path: str, node: Any, base: str, where: str, resource: Any, root: Any) -> None:
        for invariant in invariants(path):
            if invariant.key in inv.NATIVE or (invariant.severity != "error" and not self.warnings):
                continue
            if inv.vacuous(invariant, node, base):
                continue
            self.pending.append(_Pending(invariant, node, base, where, resource, root))

    def resource(self, node: dict[str, Any], where: str, root: Any) -> None:
        type_ = node.get("resourceType")
        if not isinstance(type_, str):
            return
        self.queue(type_, node, type_, where, node, root)
        if type_ not in _NOT_DOMAIN:
            self.queue("DomainResource", node, type_, where, node, root)
            if not inv.dom_3(node):
                self.fail("dom-3", _DOM_3, where)
        self.queue("Resource", node, type_, where, node, root)
        # "#id" references inside a contained resource name its container's other contained ones.
        contained = {
            c["id"]: c.get("resourceType", "")
            for c in (root if isinstance(root, dict) else node).get("contained") or ()
            if isinstance(c, dict) and isinstance(c.get("id"), str)
        }
        self.complex(node, type_, where, node, root, contained)

    def complex(
        self, node: dict[str, Any], path: str, where: str, res: Any, root: Any, contained: dict[str, str]
    ) -> None:
        kids = children(path)
        for key, value in node.items():
            if key == "resourceType":
                continue
            child = _EXTENSION if key in ("extension", "modifierExtension") else kids.get(key)
            name = key
            if child is not None and child.choice:
                name = f"{child.path.rsplit('.', 1)[1]}.ofType({child.type})"
            many = isinstance(value, list)
            for i, item in enumerate(value if many else (value,)):
                if item is None:
                    continue
                at = f"{where}.{name}[{i}]" if many else f"{where}.{name}"
                if child is None:
                    self.untyped(item, at, res, root, contained)
                else:
                    self.element(child, item, at, res, root, contained)

    def element(
        self, child: Child, item: Any, at: str, res: Any, root: Any, contained: dict[str, str]
    ) -> None:
        if child.value_set is not None and (child.strength == "required" or self.warnings):
            found = binding_issue(child, item, at)
            if found is not None:
                self.issues.append(found)
        if not isinstance(item, dict):
            return
        if child.type == "Reference":
            if child.targets:
                found = reference_issue(child, item, at, contained)
                if found is not None:
                    self.issues.append(found)
            if not inv.ref_1(item, res, root, contained):
                self.fail("ref-1", "SHALL have a contained resource if a local reference is provided", at)
        if child.type == "Resource":
            # A contained resource's "#id" references resolve in its container.
            self.resource(item, at, root if child.path.endswith(".contained") else item)
            return
        self.ele_1(item, at)
        if child.type == "Extension" and not inv.ext_1(item):
            self.fail("ext-1", "Must have either extensions or value[x], not both", at)
        elif child.type == "Period" and not inv.per_1(item):
            self.fail("per-1", "If present, start SHALL have a lower value than end", at)
        self.queue(child.path, item, child.type, at, res, root)
        if child.type != child.path:
            self.queue(child.type, item, child.type, at, res, root)
        self.complex(item, child.type, at, res, root, contained)

    def untyped(self, item: Any, at: str, res: Any, root: Any, contained: dict[str, str]) -> None:
        if isinstance(item, dict):
            self.ele_1(item, at)
            self.complex(item, "", at, res, root, contained)

    def ele_1(self, item: dict[str, Any], at: str) -> None:
        if not inv.ele_1(item):
            self.fail("ele-1", "All FHIR elements must have a @value or children", at)

    def fail(self, key: str, human: str, at: str) -> None:
        self.issues.append(issue("error", "invariant", f"{key}: {human}", [at], message_id="MSG_INVARIANT"))

    def evaluate(self) -> None:
        for p in self.pending:
            outcome = inv.holds(p.invariant, p.node, p.base, p.resource, p.root)
            if outcome is False:
                severity = "error" if p.invariant.severity == "error" else "warning"
                text = f"{p.invariant.key}: {p.invariant.human}"
                self.issues.append(issue(severity, "invariant", text, [p.where], message_id="MSG_INVARIANT"))


def check(type_: str, resource: dict[str, Any], *, warnings: bool = False) -> list[dict[str, Any]]:
    """Return the issues of a resource that passed the model: errors, and warnings if asked."""
    walk = _Walk(warnings)
    walk.resource(resource, type_, resource)
    walk.evaluate()
    return walk.issues
