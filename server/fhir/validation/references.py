"""Reference target types: a reference must point at a type the element allows.

https://hl7.org/fhir/R4B/references.html#Reference

The target type is read from the literal reference (`Type/id`, an absolute URL ending in
`Type/id[/_history/v]`, or `#id` of a contained resource) or else from `Reference.type`.
Logical references (identifier only) and `urn:` references carry no type and pass.
"""

from __future__ import annotations

from typing import Any

from server.fhir.outcomes import issue
from server.fhir.resources import resource_types
from server.fhir.validation.definitions import Child

_KNOWN = frozenset(resource_types())


def target_type(reference: Any, contained: dict[str, str]) -> str | None:
    """Return the resource type a reference points at, or None when it cannot be told."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str) and ref:
        if ref.startswith("#"):
            return contained.get(ref[1:])
        if not ref.startswith("urn:"):
            parts = ref.split("?", 1)[0].split("/")
            if len(parts) >= 4 and parts[-2] == "_history":
                parts = parts[:-2]
            if len(parts) >= 2 and parts[-2] in _KNOWN:
                return parts[-2]
            return None
    declared = reference.get("type")
    if isinstance(declared, str) and declared in _KNOWN:
        return declared
    return None


def reference_issue(child: Child, item: Any, where: str, contained: dict[str, str]) -> dict[str, Any] | None:
    """Return an issue if the reference points at a type the element does not allow."""
    target = target_type(item, contained)
    if target is None or target in child.targets:
        return None
    allowed = " | ".join(sorted(child.targets))
    return issue(
        "error",
        "invalid",
        f"{child.path} refers to a {target}; it may refer to {allowed}",
        [where],
        message_id="MSG_REFERENCE_TYPE",
    )
