"""$validate at type and instance level: every error with its element path, nothing stored.

https://hl7.org/fhir/R4B/resource-operation-validate.html
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequestError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.capabilities import contribute
from server.fhir.interactions.read import current
from server.fhir.operations.registry import register
from server.fhir.outcomes import issue
from server.fhir.outcomes import operation_outcome
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.resources import model_issues
from server.fhir.validation import check
from server.fhir.validation.profiles import held

MODES = ("create", "update", "delete")
_RANK = {"fatal": 0, "error": 1, "warning": 2, "information": 3}


def _arguments(req: FhirRequest) -> tuple[Any, str | None, str | None]:
    """Return (resource, mode, profile) from a Parameters body or a bare resource, plus the query."""
    mode, profile = req.param("mode"), req.param("profile")
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        for param in body.get("parameter") or []:
            if not isinstance(param, dict):
                continue
            name = param.get("name")
            if name == "resource":
                resource = param.get("resource")
            elif name == "mode":
                mode = param.get("valueCode") or param.get("valueString")
            elif name == "profile":
                profile = param.get("valueUri") or param.get("valueCanonical")
        return resource, mode, profile
    return body, mode, profile


def resource_issues(type_: str, resource: Any, profile: str | None = None) -> list[dict[str, Any]]:
    """Return one issue per error (structure, binding, invariant, reference, profile) and warning.

    Besides the profiles the resource claims, `profile` (the operation's parameter) is checked
    when this server holds it; an unknown one is a warning.
    """
    if not isinstance(resource, dict):
        return [issue("error", "structure", "The resource to validate must be a JSON object")]
    actual = resource.get("resourceType")
    if actual != type_:
        return [
            issue("error", "invalid", f"resourceType {actual!r} does not match {type_!r}", ["resourceType"])
        ]
    issues = model_issues(type_, resource)
    if issues:
        return issues
    return check(type_, resource, warnings=True, profiles_=(profile,) if profile else ())


def _mode_issues(mode: str, resource: Any, type_: str, id_: str | None) -> list[dict[str, Any]]:
    body_id = resource.get("id") if isinstance(resource, dict) else None
    if mode == "update":
        if not body_id:
            return [issue("error", "required", "mode=update: the resource must have an id", [f"{type_}.id"])]
        if id_ is not None and body_id != id_:
            return [
                issue(
                    "error",
                    "invalid",
                    f"mode=update: resource id {body_id!r} does not match {id_!r} in the URL",
                    [f"{type_}.id"],
                )
            ]
    return []


def validate_resource(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Validate the posted resource (or, for mode=delete, the instance) and answer an OperationOutcome."""
    check_type(type_)
    if id_ is not None:
        check_id(id_)
    resource, mode, profile = _arguments(req)
    if mode is not None and mode not in MODES:
        raise InvalidRequestError(
            f"mode {mode!r}: expected one of {', '.join(MODES)}",
            expression=("mode",),
            message_id="MSG_PARAM_INVALID",
        )
    issues: list[dict[str, Any]] = []
    if mode == "delete":
        if id_ is None:
            raise InvalidRequestError("mode=delete needs an instance: POST [type]/[id]/$validate")
        current(repo, type_, id_)
    else:
        if resource is None:
            raise InvalidRequestError(
                "$validate needs a resource: a Parameters 'resource' part or the bare resource"
            )
        if mode == "update" and id_ is not None:
            current(repo, type_, id_)
        issues = resource_issues(type_, resource, profile) + _mode_issues(mode or "", resource, type_, id_)
    issues.sort(key=lambda i: _RANK.get(i["severity"], 3))  # errors first, then warnings
    if not any(i["severity"] == "error" for i in issues):
        issues.insert(0, issue("information", "informational", f"{type_} is valid (mode {mode or 'none'})"))
    return FhirResponse(200, operation_outcome(issues), {"Content-Type": "application/fhir+json"})


@register("*", "validate", instance=False)
def validate_type(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: None
) -> FhirResponse:
    """POST [type]/$validate."""
    return validate_resource(repo, ctx, req, type_, None)


@register("*", "validate", instance=True)
def validate_instance(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str
) -> FhirResponse:
    """POST [type]/[id]/$validate."""
    return validate_resource(repo, ctx, req, type_, id_)


@contribute
def _capabilities(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare $validate on every resource type, and the profiles held for it (supportedProfile)."""
    supported: dict[str, list[str]] = {}
    for url, type_ in held():
        supported.setdefault(type_, []).append(url)
    for entry in statement["rest"][0]["resource"]:
        entry.setdefault("operation", []).append(
            {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
        )
        if entry["type"] in supported:
            entry["supportedProfile"] = supported[entry["type"]]
