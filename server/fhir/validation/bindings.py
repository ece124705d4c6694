"""Terminology bindings: a coded element's value checked against its bound value set.

https://hl7.org/fhir/R4B/terminologies.html#strength

Required bindings are errors; extensible and preferred bindings give warnings (reported by
$validate only). Value sets the core package cannot expand are not checked.
"""

from __future__ import annotations

from typing import Any

from server.fhir.outcomes import issue
from server.fhir.validation.definitions import Child
from server.fhir.validation.definitions import ValueSet

# Value sets this small are listed in the diagnostics, so a client sees what would do.
_LIST_UP_TO = 20


def _coding_in(vs: ValueSet, coding: Any) -> bool:
    if not isinstance(coding, dict):
        return False
    code, system = coding.get("code"), coding.get("system")
    if not isinstance(code, str):
        return False
    if isinstance(system, str):
        return code in vs.by_system.get(system, ())
    return code in vs.codes


def _shown(item: Any, type_: str) -> str:
    if type_ == "CodeableConcept" and isinstance(item, dict):
        codings = [c for c in item.get("coding") or () if isinstance(c, dict)]
        if not codings:
            return "a CodeableConcept without a coding"
        return ", ".join(f"{c.get('system', '')}#{c.get('code', '')}" for c in codings)
    if type_ == "Coding" and isinstance(item, dict):
        return f"{item.get('system', '')}#{item.get('code', '')}"
    return repr(item)


def binding_issue(child: Child, item: Any, where: str) -> dict[str, Any] | None:
    """Return an issue if `item` (of the child's type) is not in its bound value set."""
    vs = child.value_set
    if vs is None:
        return None
    type_ = child.type
    if type_ == "CodeableConcept":
        ok = isinstance(item, dict) and any(_coding_in(vs, c) for c in item.get("coding") or ())
    elif type_ == "Coding":
        ok = _coding_in(vs, item)
    elif type_ in ("code", "string", "uri"):
        ok = not isinstance(item, str) or item in vs.codes
    else:
        return None
    if ok:
        return None
    required = child.strength == "required"
    text = f"{_shown(item, type_)} is not in the {child.strength} value set {vs.url}"
    if len(vs.codes) <= _LIST_UP_TO:
        text += f" (expected one of: {', '.join(sorted(vs.codes))})"
    return issue(
        "error" if required else "warning",
        "code-invalid",
        text,
        [where],
        message_id="MSG_CODE_INVALID" if required else "MSG_CODE_NOT_IN_VALUE_SET",
    )
