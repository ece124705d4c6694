"""Resource types, ids and validation against the R4B models (fhir.resources).

https://hl7.org/fhir/R4B/resource.html
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import pathlib
import re
import types
import typing
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase
from fhir_core.types import FhirElementOrResourceBase

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


# What an element of a model holds in FHIR JSON: an object of a model, a resource (an object naming
# its resourceType), a JSON string, or something the model's own validation judges (numbers, booleans).
_OBJECT, _RESOURCE, _STRING, _OTHER = "object", "resource", "string", "other"
_STRING_BASES = (str, datetime.date, datetime.datetime, datetime.time)


def _kind(annotation: Any) -> tuple[str, Any]:
    """(kind, model class or None) of one element's type (a list's item type for a list)."""
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        kind = _RESOURCE if issubclass(annotation, FhirElementOrResourceBase) else _OBJECT
        return kind, annotation.get_model_klass()
    if typing.get_origin(annotation) is typing.Annotated:
        base = typing.get_args(annotation)[0]
        members = (
            typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
        )
        if all(
            m in _STRING_BASES or (isinstance(m, type) and m.__module__.startswith("pydantic"))
            for m in members
        ):
            return _STRING, None
    return _OTHER, None


@functools.cache
def _elements(model: Any) -> dict[str, tuple[bool, str, Any]]:
    """A model's elements by their JSON name: (is a list, kind, model class or None)."""
    out: dict[str, tuple[bool, str, Any]] = {}
    for name, field in model.model_fields.items():
        annotation = _optional(field.annotation)
        many = typing.get_origin(annotation) is list
        if many:
            annotation = _optional(typing.get_args(annotation)[0])
        out[field.alias or name] = (many, *_kind(annotation))
    return out


def _optional(annotation: Any) -> Any:
    """X for Optional[X] (X | None); anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def shape_problems(type_: str, resource: dict[str, Any]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """The elements of a resource whose JSON type its R4B model cannot take.

    Each as (expression, message, steps): steps lead from the resource to the element's key in
    the object that holds it (a list's items are judged one by one; the steps name the list).

    FHIR JSON gives a complex element as an object and a string-valued primitive (uri, url, code,
    date, ...) as a string (https://hl7.org/fhir/R4B/json.html). The model library takes a string
    where an object belongs as JSON text to parse (a HumanName given as '{"family": "x"}' passed and
    was stored as a string), and fails with a bare AttributeError or KeyError (not a validation
    error naming the element) on a number given as a url, a string given as a primitive's "_x"
    extension object, or a contained resource of an unknown resourceType.
    """
    found: list[tuple[str, str, tuple[Any, ...]]] = []
    stack: list[tuple[str, Any, dict[str, Any], tuple[Any, ...]]] = [
        (type_, get_fhir_model_class(type_), resource, ())
    ]
    while stack:
        path, model, node, steps = stack.pop()
        elements = _elements(model)
        for key, value in node.items():
            if key == "resourceType" or key not in elements or value is None:
                continue  # the model's own validation names unknown elements
            many, kind, klass = elements[key]
            if kind == _OTHER:
                continue
            items = list(enumerate(value)) if many and isinstance(value, list) else [(None, value)]
            for i, item in items:
                where = f"{path}.{key}" + (f"[{i}]" if i is not None else "")
                inner = (*steps, key) + ((i,) if i is not None else ())
                if item is None and i is not None and key.startswith("_"):
                    continue  # a list primitive's extensions: null where an item has none
                if kind == _STRING:
                    if not isinstance(item, str):
                        found.append(
                            (where, f"expected a JSON string, got {_json_type(item)}", (*steps, key))
                        )
                    continue
                if not isinstance(item, dict):
                    found.append((where, f"expected a JSON object, got {_json_type(item)}", (*steps, key)))
                    continue
                if kind == _RESOURCE:
                    named = item.get("resourceType")
                    if not isinstance(named, str) or named not in _type_set():
                        found.append(
                            (f"{where}.resourceType", f"unknown resourceType {named!r}", (*steps, key))
                        )
                        continue
                    klass = get_fhir_model_class(named)
                stack.append((where, klass, item, inner))
    found.sort(key=lambda f: f[0])
    return found


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def model_issues(type_: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    """One "structure" error issue per element the R4B model refuses, each with its expression.

    Elements of the wrong JSON type (`shape_problems`) are named and left out of what the model
    then validates, so every other error is still found and the model library never meets them.
    """
    problems = shape_problems(type_, resource)
    issues = [issue("error", "structure", message, [where]) for where, message, _ in problems]
    if problems:
        resource = copy.deepcopy(resource)
        # outermost first: an element inside one already left out is gone with it
        for *owner, key in sorted((steps for _, _, steps in problems), key=len):
            node: Any = resource
            for step in owner:
                if isinstance(node, dict):
                    node = node.get(step)
                elif isinstance(node, list) and isinstance(step, int) and step < len(node):
                    node = node[step]
                else:
                    break
                if not isinstance(node, (dict, list)):
                    break
            else:
                if isinstance(node, dict):
                    node.pop(key, None)
    try:
        get_fhir_model_class(type_).model_validate(resource)
    except pydantic.ValidationError as exc:
        issues += [
            issue("error", "structure", str(err["msg"]), [_loc_to_expression(type_, err["loc"])])
            for err in exc.errors(include_url=False)
        ]
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        # the model library's own failure on input shape_problems did not foresee: the body's fault still
        issues.append(issue("error", "structure", f"{type_} could not be read: {exc!r}"))
    return issues


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
    issues = model_issues(type_, resource)
    if issues:
        first = issues[0]
        raise ValidationFailedError(
            f"{type_} failed validation: {len(issues)} error(s); first: {first['diagnostics']}",
            expression=first.get("expression", ()),
            issues=issues[1:],
            message_id="MSG_VALIDATION_FAILED",
        )
    return resource
