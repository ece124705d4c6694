"""auth/roles.py: the one table that caps a user's grant."""

from __future__ import annotations

import pytest

from auth.roles import ROLES
from auth.roles import cap


@pytest.mark.parametrize(
    ("role", "asked", "granted"),
    [
        (
            "practitioner",
            "openid user/Observation.cruds patient/Goal.rs",
            "openid user/Observation.cruds patient/Goal.rs",
        ),
        ("practitioner", "user/AuditEvent.rs patient/AuditEvent.r user/*.rs patient/*.read", ""),
        ("practitioner", "system/Patient.rs", ""),
        ("auditor", "user/*.cruds", "user/AuditEvent.rs user/Patient.rs"),
        ("auditor", "user/*.read", "user/AuditEvent.rs user/Patient.rs"),
        ("auditor", "user/Patient.cud user/Patient.s", "user/Patient.s"),
        ("auditor", "user/AuditEvent.rs?type=rest", "user/AuditEvent.rs?type=rest"),
        ("auditor", "patient/AuditEvent.rs user/Observation.rs", ""),
        ("patient", "patient/*.cruds user/Patient.rs launch/patient", "patient/*.cruds launch/patient"),
        ("admin", "user/*.cruds patient/*.rs", "user/*.cruds patient/*.rs"),
        ("nobody", "openid user/Patient.rs", "openid"),
    ],
)
def test_cap(role: str, asked: str, granted: str) -> None:
    got = cap(role, asked.split())
    assert got.granted == tuple(granted.split())
    kept_as_asked = set(asked.split()) & set(granted.split())
    assert {s for s, _ in got.dropped} == set(asked.split()) - kept_as_asked


def test_every_drop_says_why() -> None:
    got = cap("auditor", ["user/*.cruds", "user/Goal.rs"])
    assert dict(got.dropped) == {
        "user/*.cruds": "narrowed to user/AuditEvent.rs user/Patient.rs: an auditor may only read and search "
        "AuditEvent and Patient",
        "user/Goal.rs": "an auditor is granted AuditEvent and Patient only",
    }


def test_the_roles_are_the_table() -> None:
    assert ROLES == ("practitioner", "auditor", "patient", "admin")
