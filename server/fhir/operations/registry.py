"""Named operations ($everything, $validate, $export, ...) looked up by type and name.

https://hl7.org/fhir/R4B/operations.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Operation = Callable[..., Any]
_OPERATIONS: dict[tuple[str, bool, str], Operation] = {}


def register(type_: str, name: str, *, instance: bool) -> Callable[[Operation], Operation]:
    """Register an operation; type_ "*" applies to every resource type, "" is system level."""

    def wrap(func: Operation) -> Operation:
        _OPERATIONS[(type_, instance, name)] = func
        return func

    return wrap


def find(type_: str, id_: str | None, name: str) -> Operation | None:
    """Return the operation for this type/level/name, or None."""
    instance = id_ is not None
    found = _OPERATIONS.get((type_, instance, name))
    if found is None and type_:
        found = _OPERATIONS.get(("*", instance, name))
    return found


def names() -> list[tuple[str, bool, str]]:
    """Every registered (type, instance-level, name)."""
    return sorted(_OPERATIONS)
