"""The OpenAPI 3.1 document of the /rehab API, built from the marshmallow schemas and the catalog.

apispec (marshmallow-code, the maintainers of marshmallow itself) turns the request schemas
into JSON Schema with their validators (enums, lengths, ranges, patterns, required fields,
unknown fields refused); openapi_schemas adds the catalog's enumerations and rules and the
answers' shapes. Security is SMART on FHIR's OAuth 2: authorization code (PKCE S256) for
apps acting for a person, client credentials for backend services, with the scopes each
endpoint needs. https://spec.openapis.org/oas/v3.1.0 ; https://apispec.readthedocs.io/
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema
from marshmallow import fields

from fhir_mapping import adherence
from fhir_mapping import catalog
from fhir_mapping import discharge
from fhir_mapping import episodes
from fhir_mapping import goals
from fhir_mapping import measures_csv
from fhir_mapping import outcomes
from fhir_mapping import schemas
from fhir_mapping import sensors
from fhir_mapping import sessions
from server.api import openapi_schemas as oas
from server.api.openapi_examples import EXAMPLES

VERSION = "3.1.0"
SECURITY = "smart"
JSON = "application/json"
FHIR_JSON = "application/fhir+json"
PREFIXES = ("user", "patient", "system")

# The resource types each POST writes in its transaction (each needs a create grant).
WRITES: dict[str, tuple[str, ...]] = {
    "/rehab/assessments": ("Encounter", "Observation"),
    "/rehab/plans": ("Goal", "CarePlan", "ServiceRequest"),
    "/rehab/sessions": ("Encounter", "Procedure", "Observation"),
    "/rehab/outcomes": ("QuestionnaireResponse", "Observation"),
    "/rehab/sensor-series": ("Device", "Observation"),
    "/rehab/episodes": ("Condition", "ServiceRequest", "EpisodeOfCare"),
    "/rehab/adherence": ("Observation",),
}
# A write refers to its patient, which the writer must be able to read (else it "does not exist").
WRITE_READS = ("Patient",)
# What a POST reads beyond the patient (the plan it follows).
WRITE_EXTRA: dict[str, tuple[tuple[str, str], ...]] = {
    "/rehab/adherence": (("CarePlan", "r"), ("CarePlan", "s"))
}
PROGRESS_READS = ("Observation",)
PROGRESS = "/rehab/patients/{id}/progress"
EPISODE = "/rehab/episodes/{id}"
RECERTIFICATION = "/rehab/episodes/{id}/recertification"
GOAL = "/rehab/goals/{id}"
DISCHARGE = "/rehab/episodes/{id}/discharge"
MEASURES_CSV = "/rehab/patients/{id}/measures.csv"
# What each other operation reads or changes: (type, interaction) pairs, each needing its grant.
READS: dict[str, tuple[tuple[str, str], ...]] = {
    PROGRESS: tuple((t, "s") for t in PROGRESS_READS),
    EPISODE: (
        ("EpisodeOfCare", "r"),
        ("Encounter", "s"),
        ("CarePlan", "s"),
        ("QuestionnaireResponse", "s"),
        ("ServiceRequest", "s"),
    ),
    GOAL: (("Goal", "r"), ("Goal", "u")),
    MEASURES_CSV: (("Observation", "s"),),
    DISCHARGE: (
        ("EpisodeOfCare", "r"),
        ("EpisodeOfCare", "u"),
        ("Composition", "c"),
        ("Encounter", "s"),
        ("CarePlan", "s"),
        ("QuestionnaireResponse", "s"),
        ("ServiceRequest", "s"),
        ("Observation", "s"),
        # What the summary cites and the closed plan of care references must resolve for the token.
        ("Patient", "r"),
        ("Practitioner", "r"),
        ("Condition", "r"),
        ("Observation", "r"),
        ("Encounter", "r"),
        ("Goal", "r"),
        # The plan of care ends with the episode.
        ("CarePlan", "u"),
        ("ServiceRequest", "u"),
        ("Goal", "u"),
    ),
    RECERTIFICATION: (
        ("EpisodeOfCare", "r"),
        ("ServiceRequest", "s"),
        ("CarePlan", "r"),
        ("CarePlan", "u"),
        ("ServiceRequest", "u"),
    ),
}
VERBS = {"c": "create", "r": "read", "s": "search", "u": "update"}


_UPDATED = {
    "component": "Updated",
    "description": "Goals the new measurements moved (achievementStatus, outcomeReference), written in "
    "the same transaction when the token may search and update Goals",
}


class EpisodeView(episodes.EpisodeSchema):
    """201 to POST /rehab/episodes."""

    references = fields.Raw(required=True, metadata={"component": "References"})


class AdherenceView(adherence.AdherenceSchema):
    """201 to POST /rehab/adherence."""

    references = fields.Raw(required=True, metadata={"component": "References"})


class AssessmentView(schemas.AssessmentSchema):
    """201 to POST /rehab/assessments: the assessment in canonical units and what was written."""

    updated = fields.Raw(metadata=_UPDATED)
    references = fields.Raw(required=True, metadata={"component": "References"})


class PlanView(schemas.PlanSchema):
    """201 to POST /rehab/plans."""

    references = fields.Raw(required=True, metadata={"component": "References"})


class SessionView(sessions.SessionSchema):
    """201 to POST /rehab/sessions, with the billing units (and, in an episode, the visit's warnings)."""

    billing = fields.Raw(required=True, metadata={"component": "Billing"})
    updated = fields.Raw(metadata=_UPDATED)
    warnings = fields.List(
        fields.String(),
        metadata={
            "description": "Given `episode`: the session is beyond the visits authorized or outside the "
            "certified period of the plan of care (accepted; the clinic decides)"
        },
    )
    references = fields.Raw(required=True, metadata={"component": "References"})


class OutcomeView(outcomes.OutcomeSchema):
    """201 to POST /rehab/outcomes, with the score."""

    score = fields.Raw(required=True, metadata={"component": "Score"})
    updated = fields.Raw(metadata=_UPDATED)
    references = fields.Raw(required=True, metadata={"component": "References"})


class SensorSeriesView(sensors.SensorSeriesSchema):
    """201 to POST /rehab/sensor-series, with peak/mean/RMS per channel and the symmetry index."""

    summaries = fields.List(fields.Raw(metadata={"component": "SensorSummary"}), required=True)
    references = fields.Raw(required=True, metadata={"component": "References"})


POSTS: dict[str, tuple[type[Schema], type[Schema], str]] = {
    "/rehab/assessments": (schemas.AssessmentSchema, AssessmentView, "Record an assessment"),
    "/rehab/plans": (schemas.PlanSchema, PlanView, "Record a plan of care: goals and a home program"),
    "/rehab/sessions": (sessions.SessionSchema, SessionView, "Record a treatment session"),
    "/rehab/outcomes": (outcomes.OutcomeSchema, OutcomeView, "Record an outcome instrument"),
    "/rehab/sensor-series": (sensors.SensorSeriesSchema, SensorSeriesView, "Record a sensor series"),
    "/rehab/episodes": (episodes.EpisodeSchema, EpisodeView, "Open an episode of care"),
    "/rehab/adherence": (adherence.AdherenceSchema, AdherenceView, "Record a day of the home program"),
}

_VALUE = {
    "type": ["number", "string"],
    "description": "A number in `unit` (see Measure for the accepted units and the range), "
    "or a grade code (a string) for a graded measure",
}
# What the field objects cannot say themselves, by (schema class, field name).
_FIELDS: dict[tuple[type[Schema], str], dict[str, Any]] = {
    (schemas.MeasuredSchema, "measure"): {"$ref": oas.REF + "Measure"},
    (schemas.MeasuredSchema, "unit"): {
        "description": "The unit as entered (one of the measure's accepted units); "
        "none for a graded measure, optional where the measure has a single unit"
    },
    (schemas.MeasuredSchema, "protocol"): {
        "enum": sorted({p for m in catalog.MEASURES for p in m.protocols}),
        "description": "Only for measures that name protocols (see Measure)",
    },
    (schemas.FindingSchema, "value"): _VALUE,
    (schemas.GoalSchema, "target"): _VALUE,
    (outcomes.OutcomeSchema, "instrument"): {"$ref": oas.REF + "Instrument"},
    (outcomes.OutcomeSchema, "items"): {
        "propertyNames": {"pattern": "^[1-9][0-9]?$"},
        "additionalProperties": {"type": "integer"},
        "description": 'Item id ("1".."n") -> the score given; see Instrument for the items and ranges',
    },
}


def _field_properties(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec attribute function: the catalog's facts, component references, the patient id form."""
    extra: dict[str, Any] = {}
    if isinstance(field, schemas.PatientId):
        extra = {"pattern": oas.PATIENT_ID, "description": 'A Patient id: "123" or "Patient/123"'}
    elif field.metadata.get("component"):
        extra = {"$ref": oas.REF + field.metadata["component"]}
    else:
        for (cls, name), props in _FIELDS.items():
            if isinstance(field.parent, cls) and field.name == name:
                extra = props
    if "$ref" in extra:
        ret.clear()  # a reference stands alone: no `type` or `enum` beside it
    return dict(extra)


def _needs(path: str) -> list[tuple[str, str]]:
    """(type, interaction) pairs an operation needs: creates for a POST, what a GET reads."""
    if path in WRITES:
        return (
            [(t, "c") for t in WRITES[path]]
            + [(t, "r") for t in WRITE_READS]
            + list(WRITE_EXTRA.get(path, ()))
        )
    return list(READS[path])


def _scopes(path: str) -> list[dict[str, list[str]]]:
    """The security requirement: every pair needed, under one of the three SMART contexts."""
    return [{SECURITY: [f"{prefix}/{t}.{letter}" for t, letter in _needs(path)]} for prefix in PREFIXES]


def _all_scopes() -> dict[str, str]:
    wanted = {pair for path in (*WRITES, *READS) for pair in _needs(path)}
    acting = {
        "user": "as the signed-in user",
        "patient": "of the patient in context",
        "system": "as a backend",
    }
    return {
        f"{prefix}/{t}.{letter}": f"{VERBS[letter]} {t} ({acting[prefix]})"
        for t, letter in sorted(wanted)
        for prefix in PREFIXES
    }


def _security_scheme(base: str) -> dict[str, Any]:
    scopes = _all_scopes()
    return {
        "type": "oauth2",
        "description": "SMART on FHIR (v2 scopes `context/Type.cruds`; a broader grant such as "
        "`system/*.cruds` or v1 `user/*.write` covers the scopes listed). Apps acting for a person use "
        "authorization code with PKCE S256 (`code_challenge_method=S256` is required); backend "
        "services use client credentials (client secret or a signed JWT assertion). Discovery: "
        f"{base}/.well-known/smart-configuration",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": base + "/auth/authorize",
                "tokenUrl": base + "/auth/token",
                "scopes": {k: v for k, v in scopes.items() if not k.startswith("system/")},
            },
            "clientCredentials": {
                "tokenUrl": base + "/auth/token",
                "scopes": {k: v for k, v in scopes.items() if k.startswith("system/")},
            },
        },
    }


def _error(description: str, **headers: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {FHIR_JSON: {"schema": oas.ref("OperationOutcome")}},
    }
    if headers:
        out["headers"] = headers
    return out


_RESPONSES = {
    "Invalid": _error("Bad input: `expression` names each field (e.g. `findings[0].unit`); nothing stored"),
    "Unauthenticated": _error(
        "No valid bearer token",
        **{"WWW-Authenticate": {"schema": oas.TEXT, "description": "Bearer challenge (RFC 6750)"}},
    ),
    "Forbidden": _error("The token's scopes do not cover every resource the request reads or writes"),
    "NotFound": _error("No such patient, or one the token may not see"),
    "Unprocessable": _error("A written resource breaks a FHIR rule"),
    "Error": _error("Any other error (413 too large, 415 not JSON, 429, 500, 503), as an OperationOutcome"),
}


def _errors(*codes: str) -> dict[str, Any]:
    names = {"400": "Invalid", "401": "Unauthenticated", "403": "Forbidden", "404": "NotFound"}
    names |= {"422": "Unprocessable", "default": "Error"}
    return {c: {"$ref": "#/components/responses/" + names[c]} for c in (*codes, "default")}


def _post_operation(path: str, request: str, view: str, summary: str) -> dict[str, Any]:
    name, example = EXAMPLES[path]
    return {
        "operationId": "post" + request,
        "tags": ["clinic"],
        "summary": summary,
        "description": f"One FHIR transaction writing {', '.join(WRITES[path])}: atomic, "
        "scope-checked and audited like POST / of a Bundle; the token must also be able to read the "
        "patient (and, when `episode` is given, the open EpisodeOfCare of that patient). The answer "
        "is the clinic view (values as entered, units as UCUM codes) and the `Type/id` of every "
        "resource written.",
        "security": _scopes(path),
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": oas.ref(request),
                    "examples": {"readme": {"summary": name, "value": example}},
                }
            },
        },
        "responses": {
            "201": {"description": "Stored", "content": {JSON: {"schema": oas.ref(view)}}},
            **_errors("400", "401", "403", "422"),
        },
    }


def _progress_operation() -> dict[str, Any]:
    return {
        "operationId": "getProgress",
        "tags": ["clinic"],
        "summary": "A patient's progress per measure",
        "description": "Comparable series by instant with baseline, change, MCID, trend and last "
        "step; same-day left/right pairs; within-session changes; every point not counted and why. "
        "Reads only the Observations the token may see.",
        "security": _scopes(PROGRESS),
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9\-.]{1,64}$"},
            },
            {
                "name": "involved",
                "in": "query",
                "required": False,
                "description": "The involved side: adds the limb symmetry index and deficit",
                "schema": {"enum": ["left", "right"]},
            },
        ],
        "responses": {
            "200": {"description": "The progress report", "content": {JSON: {"schema": oas.ref("Progress")}}},
            **_errors("400", "401", "403", "404"),
        },
    }


def _id_parameter() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": oas.ID}}


@dataclasses.dataclass(frozen=True)
class IdOperation:
    """A /rehab operation on one resource named by `{id}`: its answer, request and errors."""

    method: str
    operation_id: str
    summary: str
    description: str
    answer: tuple[str, str, str]  # status, description, component schema (or "csv")
    request: str | None = None  # the request body's component schema
    errors: tuple[str, ...] = ("400", "401", "403", "404", "422")

    def document(self, path: str) -> dict[str, Any]:
        """Return the OpenAPI operation object."""
        status, description, schema = self.answer
        content = (
            {"text/csv": {"schema": oas.TEXT}} if schema == "csv" else {JSON: {"schema": oas.ref(schema)}}
        )
        out: dict[str, Any] = {
            "operationId": self.operation_id,
            "tags": ["clinic"],
            "summary": self.summary,
            "description": self.description,
            "security": _scopes(path),
            "parameters": [_id_parameter()],
            "responses": {status: {"description": description, "content": content}, **_errors(*self.errors)},
        }
        if self.request:
            out["requestBody"] = {"required": True, "content": {JSON: {"schema": oas.ref(self.request)}}}
        return out


ID_OPERATIONS: dict[str, IdOperation] = {
    EPISODE: IdOperation(
        "get",
        "getEpisode",
        "An episode of care, as the clinic sees it",
        "The condition treated, referrer and care manager, and the assessments, sessions "
        "(visits used), plans and outcome instruments linked to the episode. The EpisodeOfCare is read as "
        "a FHIR read would (403 outside the scopes, 404 when the token may not see it); what links to it "
        "is searched, confined to what the token may see.",
        ("200", "The episode", "EpisodeOfCareView"),
        errors=("401", "403", "404"),
    ),
    RECERTIFICATION: IdOperation(
        "post",
        "postRecertification",
        "Re-certify the episode's plan of care",
        "Writes, in one transaction with If-Match on the versions read, a new version of "
        "the plan of care CarePlan (the certification period) and of the ServiceRequest for its visits "
        "(frequency x duration, visits authorized); earlier certifications stay in their history. "
        "400 when the episode is closed or has no plan of care (POST /rehab/plans with `episode` "
        "and `certification` makes one).",
        ("200", "The new version", "Recertified"),
        request="Certification",
    ),
    DISCHARGE: IdOperation(
        "post",
        "postDischarge",
        "Discharge: close the episode and write the discharge summary document",
        "One transaction: a Composition (LOINC 18842-5 Discharge summary; sections: reason, "
        "condition, baseline vs discharge of every measure, goals met or not, visits used, home program "
        "with adherence) and the EpisodeOfCare PUT back finished (If-Match). The plan of care ends "
        "with it: the episode's CarePlans and visits ServiceRequest still in force become completed, "
        "its goals still sought completed when met, else cancelled (achievementStatus kept), each "
        "with If-Match; adherence can no longer be recorded against the plan. The document is "
        "GET /Composition/{id}/$document (a FHIR `document` Bundle). 400 naming `episode` when it is "
        "already closed, `date` before its start, `author` when no practitioner can be named (the "
        "token's fhirUser or the care manager are used when none is given).",
        ("201", "Discharged", "Discharged"),
        request="Discharge",
    ),
    MEASURES_CSV: IdOperation(
        "get",
        "getMeasuresCsv",
        "A patient's measurements as CSV, for spreadsheets",
        "One row per point of the progress report: the series points, the values taken "
        "after treatment in a session (context within-session) and every point not counted (excluded "
        f"true, with the reason). Columns: {', '.join(f'`{c}`' for c in measures_csv.COLUMNS)}. "
        "Reads only the Observations the token may see.",
        ("200", "RFC 4180 CSV with a header row", "csv"),
        errors=("401", "403", "404"),
    ),
    GOAL: IdOperation(
        "patch",
        "patchGoal",
        "Set a goal's achievement, lifecycle or add a note by hand",
        "A new Goal version (If-Match on the version read) through the FHIR transaction "
        "interaction: achievement is http://terminology.hl7.org/CodeSystem/goal-achievement, lifecycle "
        "http://hl7.org/fhir/goal-status. 403 without Goal update, 404 for a goal the token may not see.",
        ("200", "The new version", "GoalPatched"),
        request="GoalPatch",
    ),
}


def _catalog_operation() -> dict[str, Any]:
    return {
        "operationId": "getCatalog",
        "tags": ["clinic"],
        "summary": "The measure catalog",
        "description": "Every measure with its codes (and whether each is sent), units, range, grades, "
        "side and site rules, MCID and direction. Any valid token.",
        "security": [{SECURITY: []}],
        "responses": {
            "200": {"description": "The catalog", "content": {JSON: {"schema": oas.ref("Catalog")}}},
            **_errors("401"),
        },
    }


def _components(spec: APISpec, base: str) -> None:
    spec.components.schema("Measure", oas.measure_schema())
    spec.components.schema("Instrument", oas.instrument_schema())
    spec.components.schema("Finding", {"allOf": oas.measure_rules("value")}, schema=schemas.FindingSchema)
    spec.components.schema("Goal", {"allOf": oas.measure_rules("target")}, schema=schemas.GoalSchema)
    spec.components.schema("Outcome", {"allOf": oas.instrument_rules()}, schema=outcomes.OutcomeSchema)
    for name, build in (
        ("OperationOutcome", oas.operation_outcome),
        ("References", oas.references),
        ("Billing", oas.billing),
        ("Score", oas.score),
        ("SensorSummary", oas.summary),
        ("ProgressPoint", oas.point),
        ("Progress", oas.progress),
        ("CatalogEntry", oas.catalog_entry),
        ("Catalog", oas.catalog_answer),
        ("EpisodeOfCareView", oas.episode),
        ("Recertified", oas.recertified),
        ("Updated", oas.updated),
        ("GoalPatched", oas.goal_patched),
        ("Discharged", oas.discharged),
    ):
        spec.components.schema(name, build())
    for name, response in _RESPONSES.items():
        spec.components.response(name, response)
    spec.components.security_scheme(SECURITY, _security_scheme(base))


@functools.lru_cache(maxsize=4)
def _build(base: str) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="rehabfhir clinic API",
        version="1",
        openapi_version=VERSION,
        plugins=[plugin],
        info={
            "summary": "Clinic payloads in, coded FHIR R4B out",
            "description": "What a physical-therapy clinic's system knows (assessments, plans, sessions, "
            "outcome instruments, sensor series) goes in as plain JSON and is stored as coded FHIR R4B in "
            "one transaction; progress comes back per measure. Every error is a FHIR OperationOutcome "
            "whose `expression` names the field. The FHIR API itself is described by "
            f"{base}/metadata (CapabilityStatement).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        servers=[{"url": base}],
        tags=[{"name": "clinic", "description": "The /rehab endpoints"}],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_field_properties)
    _components(spec, base)
    for path, (request, view, summary) in POSTS.items():
        names = []
        for cls in (request, view):
            names.append(plugin.converter.schema_name_resolver(cls))
            if names[-1] not in spec.components.schemas:
                spec.components.schema(names[-1], schema=cls)
        spec.path(path=path, operations={"post": _post_operation(path, *names, summary)})
    spec.path(path=PROGRESS, operations={"get": _progress_operation()})
    spec.components.schema("GoalPatch", schema=goals.GoalPatchSchema)
    spec.components.schema("Discharge", schema=discharge.DischargeSchema)
    for path, op in ID_OPERATIONS.items():
        spec.path(path=path, operations={op.method: op.document(path)})
    spec.path(path="/rehab/catalog", operations={"get": _catalog_operation()})
    return spec.to_dict()


def document(base: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for a server at `base` (built once per base URL)."""
    return _build(base)
