"""marshmallow schemas for what a clinic sends; `load` turns their errors into a 400 naming the field.

Loaded payloads are in canonical form (values in the catalog's UCUM unit, defaults filled
in), which is exactly what the readers return: build then read is the identity on them.
https://marshmallow.readthedocs.io/ ; https://hl7.org/fhir/R4B/operationoutcome.html
"""

from __future__ import annotations

import re
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import codes
from fhir_mapping.catalog import BODY_SITES
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get
from fhir_mapping.units import accepted
from fhir_mapping.units import convert
from fhir_mapping.units import resolve
from fhir_mapping.units import single_unit
from fhir_mapping.units import ucum
from server.errors import InvalidRequestError

# A measured value belongs to one limb: "bilateral" is only for where an intervention was applied.
SIDES = ("left", "right")
SITE_SIDES = ("left", "right", "bilateral")
POSITIONS = ("supine", "prone", "side-lying", "sitting", "standing")
# How far ahead of the server clock a recorded event may be dated (clock skew, time zones).
FUTURE_SLACK = timedelta(days=1)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATETIME = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?"
    r"(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?$"
)
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


class PatientId(fields.String):
    """A Patient id, given as "123" or "Patient/123"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).removeprefix("Patient/")
        if not _ID.match(text):
            raise ValidationError("Not a Patient id (1-64 of A-Z a-z 0-9 - .)")
        return text


class IdOf(fields.String):
    """The id of a resource of one type, given as "123" or "Type/123" (e.g. an EpisodeOfCare)."""

    def __init__(self, type_: str, **kwargs: Any) -> None:
        pattern = rf"^({type_}/)?[A-Za-z0-9\-.]{{1,64}}$"
        description = f'A {type_} id: "123" or "{type_}/123"'
        super().__init__(metadata={"pattern": pattern, "description": description}, **kwargs)
        self.type_ = type_

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).removeprefix(f"{self.type_}/")
        if not _ID.match(text):
            raise ValidationError(f"Not a {self.type_} id (1-64 of A-Z a-z 0-9 - .)")
        return text


def parse_when(text: str) -> datetime:
    """Return the UTC instant a FHIR date or dateTime starts at (a date: midnight UTC); ValueError if none."""
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def not_future(moment: datetime) -> None:
    """Refuse an event dated more than FUTURE_SLACK after now."""
    if moment > datetime.now(UTC) + FUTURE_SLACK:
        raise ValidationError("Is more than a day in the future")


def _real_date(future: bool) -> Any:
    def check(text: str) -> None:
        try:
            moment = parse_when(text)
        except ValueError:
            raise ValidationError(f"{text!r} is not a calendar date") from None
        if not future:
            not_future(moment)

    return check


def date_time(required: bool = True, *, future: bool = False) -> fields.String:
    """A FHIR dateTime with a time zone (or a plain date) of something that happened (not ahead of now)."""
    return fields.String(
        required=required,
        validate=[
            validate.Regexp(_DATETIME, error="Not a FHIR dateTime (YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"),
            _real_date(future),
        ],
    )


def date_only(required: bool = False, *, future: bool = True) -> fields.String:
    """A FHIR date (may lie ahead unless `future` is False)."""
    return fields.String(
        required=required,
        validate=[validate.Regexp(_DATE, error="Not a date (YYYY-MM-DD)"), _real_date(future)],
    )


def check_measured(data: dict[str, Any], value_field: str) -> dict[str, str]:
    """Check a measure, its value/unit, side, site and protocol; return {field: message} for each error."""
    measure = get(str(data.get("measure")))
    if measure is None:
        return {"measure": f"Unknown measure {data.get('measure')!r}; GET /rehab/catalog lists them"}
    errors = _check_side_site(measure, data)
    protocol = data.get("protocol")
    if protocol is not None and protocol not in measure.protocols:
        errors["protocol"] = f"{measure.key} knows the protocols {list(measure.protocols)}, not {protocol!r}"
    value = data.get(value_field)
    if measure.grades:
        if data.get("unit") is not None:
            errors["unit"] = f"{measure.key} is graded ({', '.join(g.code for g in measure.grades)}): no unit"
        if str(value) not in {g.code for g in measure.grades}:
            errors[value_field] = (
                f"{value!r} is not a {measure.key} grade; one of {[g.code for g in measure.grades]}"
            )
        return errors
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        errors[value_field] = f"{measure.key} takes a number in {measure.unit}"
        return errors
    assert measure.unit is not None
    canonical = convert(float(value), data.get("unit"), measure.unit)
    if canonical is None:
        errors["unit"] = unit_problem(data.get("unit"), measure.unit, measure.key)
        return errors
    if measure.low is not None and measure.high is not None and not measure.low <= canonical <= measure.high:
        errors[value_field] = (
            f"{canonical:g} {measure.unit} is outside {measure.key}'s range {measure.low:g}-{measure.high:g}"
        )
    elif measure.integer and not canonical.is_integer():
        errors[value_field] = f"{measure.key} takes a whole number"
    elif protocol == "phenx-170801" and canonical > 30:
        errors[value_field] = "The PhenX one-leg stand protocol stops at 30 s"
    return errors


def unit_problem(unit: str | None, canonical: str, what: str) -> str:
    """Say why `unit` cannot be taken for a value stored against `canonical`."""
    if unit is None and not single_unit(canonical):
        return f"{what} needs a unit: one of {', '.join(accepted(canonical))}"
    listed = ", ".join(accepted(canonical))
    return f"Unit {unit!r} does not convert to {canonical!r} for {what}; accepted: {listed}"


def _check_side_site(measure: Measure, data: dict[str, Any]) -> dict[str, str]:
    errors = {}
    side, site = data.get("side"), data.get("body_site")
    if side is not None and measure.laterality == "forbidden":
        errors["side"] = f"{measure.key} is not a sided measure: send it without side"
    elif side is None and measure.laterality == "required":
        errors["side"] = f"{measure.key} needs side (left or right)"
    if site is not None and measure.site in ("none", "fixed"):
        errors["body_site"] = f"{measure.key} takes no body_site" + (
            f" (it is always {measure.fixed_site})" if measure.fixed_site else ""
        )
    elif site is None and measure.site == "required":
        errors["body_site"] = f"{measure.key} needs body_site (one of {sorted(BODY_SITES)})"
    return errors


def canonicalise(data: dict[str, Any], value_field: str) -> dict[str, Any]:
    """Return the payload with its value as entered and its unit as the UCUM code (after check_measured)."""
    measure = get(data["measure"])
    assert measure is not None
    out = {k: v for k, v in data.items() if v is not None}
    if measure.grades:
        out[value_field] = str(data[value_field])
        out.pop("unit", None)
    else:
        assert measure.unit is not None
        out[value_field] = codes.number(data[value_field])
        out["unit"] = ucum(data.get("unit"), measure.unit)
    return out


def quantity_in(q: dict[str, Any], canonical: str) -> dict[str, Any]:
    """Return {value, unit} as entered with the unit's UCUM code (after `resolve` accepted it)."""
    return {"value": codes.number(q["value"]), "unit": ucum(q["unit"], canonical)}


class MeasuredSchema(Schema):
    """Fields shared by a finding and a goal target: which measure, side and site."""

    measure = fields.String(required=True)
    unit = fields.String()
    side = fields.String(
        validate=validate.OneOf(SIDES, error="One of left, right: a value is measured on one side")
    )
    body_site = fields.String(validate=validate.OneOf(sorted(BODY_SITES)))
    protocol = fields.String()
    value_field = "value"

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        errors = check_measured(data, self.value_field)
        if errors:
            raise ValidationError({k: [v] for k, v in errors.items()})

    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return canonicalise(data, self.value_field)


class FindingSchema(MeasuredSchema):
    """One finding of an assessment: "left knee flexion 95 deg active"."""

    value = fields.Raw(required=True)
    method = fields.String(validate=validate.Length(min=1, max=200))
    device = fields.String(validate=validate.Length(min=1, max=200))
    assistive_device = fields.String(validate=validate.Length(min=1, max=200))
    position = fields.String(validate=validate.OneOf(POSITIONS))
    note = fields.String(validate=validate.Length(min=1, max=2000))


class AssessmentSchema(Schema):
    """POST /rehab/assessments."""

    patient = PatientId(required=True)
    episode = IdOf("EpisodeOfCare")
    date = date_time()
    title = fields.String(validate=validate.Length(min=1, max=200))
    findings = fields.List(
        fields.Nested(FindingSchema), required=True, validate=validate.Length(min=1, max=500)
    )


class QuantityInput(Schema):
    """A value with a unit (converted to the unit the context names)."""

    value = fields.Float(required=True, validate=validate.Range(min=0))
    unit = fields.String(required=True)


class FrequencySchema(Schema):
    """ "3 times per 1 d": Timing.repeat frequency / period / periodUnit."""

    times = fields.Integer(required=True, validate=validate.Range(min=1, max=20))
    period = fields.Integer(load_default=1, validate=validate.Range(min=1, max=12))
    period_unit = fields.String(load_default="d", validate=validate.OneOf(("d", "wk")))


class ExerciseSchema(Schema):
    """One exercise of a home program."""

    exercise = fields.String(required=True, validate=validate.Length(min=1, max=200))
    sets = fields.Integer(validate=validate.Range(min=1, max=20))
    reps = fields.Integer(validate=validate.Range(min=1, max=500))
    hold = fields.Nested(QuantityInput)
    load_ = fields.Nested(QuantityInput, data_key="load", attribute="load")  # `load` would shadow Schema.load
    frequency = fields.Nested(FrequencySchema)
    progression = fields.String(validate=validate.Length(min=1, max=1000))
    instructions = fields.String(validate=validate.Length(min=1, max=2000))

    @validates_schema
    def _units(self, data: dict[str, Any], **_: Any) -> None:
        errors = {}
        for name, canonical in (("hold", "s"), ("load", "kg")):
            q = data.get(name)
            if q is not None and resolve(q["unit"], canonical) is None:
                errors[name] = {
                    "unit": [
                        f"{q['unit']!r} does not convert to {canonical!r}; accepted: "
                        f"{', '.join(accepted(canonical))}"
                    ]
                }
        if errors:
            raise ValidationError(errors)

    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        for name, canonical in (("hold", "s"), ("load", "kg")):
            if name in data:
                data[name] = quantity_in(data[name], canonical)
        return data


class GoalSchema(MeasuredSchema):
    """A goal: reach `target` on a measure by `due`."""

    target = fields.Raw(required=True)
    due = date_only()
    description = fields.String(validate=validate.Length(min=1, max=1000))
    value_field = "target"


class CertificationSchema(Schema):
    """A plan of care's certification: the period, visits frequency x duration, visits authorized."""

    start = date_only(required=True)
    end = date_only(required=True)
    visits_per_week = fields.Integer(required=True, validate=validate.Range(min=1, max=7))
    weeks = fields.Integer(required=True, validate=validate.Range(min=1, max=52))
    visits_authorized = fields.Integer(required=True, validate=validate.Range(min=1, max=365))

    @validates_schema(skip_on_field_errors=True)
    def _period(self, data: dict[str, Any], **_: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError(f"{data['end']} is not after the start {data['start']}", field_name="end")


class PlanSchema(Schema):
    """POST /rehab/plans (a plan of care when it carries a certification)."""

    patient = PatientId(required=True)
    episode = IdOf("EpisodeOfCare")
    date = date_only(required=True)
    title = fields.String(validate=validate.Length(min=1, max=200))
    goals = fields.List(fields.Nested(GoalSchema), validate=validate.Length(max=50))
    exercises = fields.List(fields.Nested(ExerciseSchema), validate=validate.Length(max=100))
    certification = fields.Nested(CertificationSchema)
    author = IdOf("Practitioner")

    @validates_schema
    def _something(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("goals") and not data.get("exercises"):
            raise ValidationError("A plan needs at least one goal or exercise", field_name="exercises")

    @validates_schema
    def _certified_in_episode(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("certification") and not data.get("episode"):
            raise ValidationError("A certified plan of care belongs to an episode", field_name="episode")

    @validates_schema(skip_on_field_errors=True)
    def _due_after_start(self, data: dict[str, Any], **_: Any) -> None:
        late = {
            i: {"due": [f"{g['due']} is not after the plan start {data['date']}"]}
            for i, g in enumerate(data.get("goals") or [])
            if g.get("due") and g["due"] <= data["date"]
        }
        if late:
            raise ValidationError({"goals": late})


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate and load `data`; raise InvalidRequestError naming every bad field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("The body must be a JSON object")
    try:
        return schema.load(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        problems = list(_flatten(exc.messages))
        path, message = problems[0]
        raise InvalidRequestError(
            f"{path}: {message}",
            expression=[p for p, _ in problems],
            issues=[
                {"severity": "error", "code": "invalid", "diagnostics": f"{p}: {m}", "expression": [p]}
                for p, m in problems[1:]
            ],
        ) from None


def _flatten(messages: Any, prefix: str = "") -> Any:
    if isinstance(messages, dict):
        for key, value in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "body"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(value, path)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        yield prefix or "body", "; ".join(messages)
    elif isinstance(messages, list):
        for m in messages:
            yield from _flatten(m, prefix)
    else:
        yield prefix or "body", str(messages)
