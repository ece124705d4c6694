"""Resource types, ids and validation against the R4B models (fhir.resources).

https://hl7.org/fhir/R4B/resource.html
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from server.errors import InvalidRequestError
from server.errors import NotFoundError
from server.errors import ValidationFailedError
from server.fhir.outcomes import issue

_DATA = pathlib.Path(__file__).resolve().parent / "data"
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@functools.cache
def resource_types() -> tuple[str, ...]:
    """Every concrete R4B resource type (from the official StructureDefinitions)."""
    return tuple(json.loads((_DATA / "resource_types.json").read_text()))


@functools.cache
def _type_set() -> frozenset[str]:
    return frozenset(resource_types())


def check_type(type_: str) -> str:
    """Return the type if it is a known resource type, else raise 404."""
    if type_ not in _type_set():
        raise NotFoundError(f"Unknown resource type {type_!r}", message_id="MSG_UNKNOWN_TYPE")
    return type_


def check_id(id_: str) -> str:
    """Return the id if it is a valid FHIR id, else raise 400."""
    if not ID_RE.match(id_):
        raise InvalidRequestError(
            f"Invalid resource id {id_!r}: ids are 1-64 of A-Z a-z 0-9 - .",
            message_id="MSG_INVALID_ID",
        )
    return id_


def nul_path(doc: Any) -> str | None:
    """The FHIRPath-like location of the first string (or key) in a parsed JSON body holding NUL.

    FHIR strings may not contain control characters below U+0020 but tab, CR and LF
    (https://hl7.org/fhir/R4B/datatypes.html#string), and PostgreSQL text cannot store U+0000 at
    all: a NUL must be refused before it reaches the store. Iterative: bodies may nest deeply.
    """
    root = doc.get("resourceType") if isinstance(doc, dict) else None
    stack: list[tuple[str, Any]] = [(root if isinstance(root, str) and "\x00" not in root else "", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path or "(body)"
        elif isinstance(node, dict):
            for key, value in reversed(node.items()):
                if "\x00" in key:
                    return f"{path}.{key}".lstrip(".").replace("\x00", "\ufffd")
                stack.append((f"{path}.{key}".lstrip("."), value))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", node[i]) for i in reversed(range(len(node))))
    return None


def _loc_to_expression(type_: str, loc: tuple[Any, ...]) -> str:
    path = type_
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def validate(type_: str, resource: Any) -> dict[str, Any]:
    """Check the body is a resource of `type_` and validates against the R4B model."""
    if not isinstance(resource, dict):
        raise InvalidRequestError("Request body must be a JSON object (a FHIR resource)")
    actual = resource.get("resourceType")
    if actual != type_:
        raise InvalidRequestError(
            f"resourceType {actual!r} in the body does not match {type_!r} in the URL",
            expression=("resourceType",),
            message_id="MSG_RESOURCE_TYPE_MISMATCH",
        )
    try:
        get_fhir_model_class(type_).model_validate(resource)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        issues = [
            issue("error", "structure", f"{err['msg']}", [_loc_to_expression(type_, err["loc"])])
            for err in errors
        ]
        first = issues[0]
        raise ValidationFailedError(
            f"{type_} failed validation: {len(errors)} error(s); first: {first['diagnostics']}",
            expression=first.get("expression", ()),
            issues=issues[1:] if len(issues) > 1 else issues[:0],
            message_id="MSG_VALIDATION_FAILED",
        ) from None
    except (ValueError, TypeError) as exc:
        raise ValidationFailedError(f"{type_} failed validation: {exc}") from None
    return resource
