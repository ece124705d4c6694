"""SMART scope parsing (v2, v1), granting, narrowing, and the AccessContext policy built from it."""

from __future__ import annotations

import pytest

from auth import scopes
from server.fhir.access import SYSTEM
from server.fhir.access import AccessContext


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("patient/Observation.rs", ("patient", "Observation", "rs", ())),
        ("user/*.cruds", ("user", "*", "cruds", ())),
        ("system/Patient.c", ("system", "Patient", "c", ())),
        ("patient/*.read", ("patient", "*", "rs", ())),
        ("user/Observation.write", ("user", "Observation", "cud", ())),
        ("system/*.*", ("system", "*", "cruds", ())),
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|survey",
            (
                "patient",
                "Observation",
                "rs",
                (("category", "http://terminology.hl7.org/CodeSystem/observation-category|survey"),),
            ),
        ),
    ],
    ids=["v2", "wildcard", "create-only", "v1-read", "v1-write", "v1-star", "restricted"],
)
def test_parse_rule(scope: str, expected: tuple[str, str, str, tuple[tuple[str, str], ...]]) -> None:
    rule = scopes.parse_rule(scope)
    assert rule is not None
    assert (
        rule.context,
        rule.type,
        "".join(c for c in "cruds" if c in rule.interactions),
        rule.params,
    ) == expected


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.dus",
        "patient/Observation.rr",
        "patient/Observation.x",
        "admin/*.rs",
        "patient/Nope.rs",
        "patient/Observation",
        "patient/Observation.rs?",
        "openid",
    ],
    ids=[
        "out-of-order",
        "repeated",
        "unknown-letter",
        "bad-context",
        "bad-type",
        "no-perms",
        "empty-query",
        "not-clinical",
    ],
)
def test_invalid_scopes_grant_nothing(scope: str) -> None:
    assert scopes.parse_rule(scope) is None
    assert scopes.parse(scope).rules == ()


def test_grant_keeps_only_what_the_client_may_have() -> None:
    allowed = "patient/*.rs patient/Observation.cruds launch/patient openid fhirUser offline_access"
    asked = "patient/Patient.r patient/Observation.cud user/*.rs system/*.rs launch/patient openid bogus"
    assert scopes.grant(asked, allowed) == (
        "patient/Patient.r",
        "patient/Observation.cud",
        "launch/patient",
        "openid",
    )
    restricted = "patient/Observation.rs?category=survey"
    assert scopes.grant(restricted, "patient/Observation.rs") == (restricted,)
    assert scopes.grant("patient/Observation.rs", restricted) == ()


def test_refresh_narrows_but_never_widens() -> None:
    previous = ("patient/*.rs", "offline_access")
    assert scopes.narrower("patient/Observation.rs offline_access", previous) == (
        "patient/Observation.rs",
        "offline_access",
    )
    assert scopes.narrower(None, previous) == previous
    assert scopes.narrower("patient/*.cruds", previous) == ()


def test_describe_in_plain_words() -> None:
    assert (
        scopes.describe("patient/Observation.rs")
        == "Read, search Observation records of the selected patient"
    )
    assert scopes.describe("user/*.cruds").startswith("Create, read, update, delete, search all data")
    assert "only where category is survey" in scopes.describe("patient/Observation.rs?category=survey")


def _ctx(scope: str, patient: str | None = "p1") -> AccessContext:
    policy = scopes.parse(scope)
    return AccessContext(
        patient=patient, unrestricted=False, rules=policy.rules, scopes=frozenset(policy.scopes)
    )


def test_access_context_policy() -> None:
    ctx = _ctx("patient/Observation.rs patient/Patient.r")
    assert ctx.can("Observation", "r") and ctx.can("Observation", "s") and not ctx.can("Observation", "c")
    assert ctx.can("Patient", "r") and not ctx.can("Patient", "s") and not ctx.can("Condition", "r")
    assert ctx.compartment_patient("Observation", "r") == "p1"
    wide = _ctx("patient/*.rs system/Observation.rs")
    assert wide.compartment_patient("Observation", "s") is None  # a system scope also grants it
    assert wide.compartment_patient("Practitioner", "r") == "p1"  # confined: may point to no other patient
    assert wide.compartment_patient("Condition", "r") == "p1"
    restricted = _ctx("patient/Observation.rs?category=survey patient/Observation.rs?category=vital-signs")
    assert restricted.restrictions("Observation", "s") == (("category", "survey,vital-signs"),)
    assert _ctx("user/*.rs").restrictions("Observation", "s") is None
    assert not AccessContext().can("Anything", "r")  # default deny
    assert SYSTEM.can("Anything", "d")  # the named context of in-process callers
