"""server.subscriptions.grants: a subscription's grant now, from the recorded scopes and auth's tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from server.subscriptions.grants import AuthGrants
from server.subscriptions.grants import intersection


@pytest.mark.parametrize(
    ("granted", "allowed", "left"),
    [
        ("system/*.cruds", "system/*.cruds", ("system/*.cruds",)),
        ("system/*.cruds", "openid", ()),
        (
            "system/*.cruds",
            "system/CarePlan.rs system/Subscription.cruds",
            ("system/CarePlan.rs", "system/Subscription.cruds"),
        ),
        ("system/Observation.rs", "system/*.r", ("system/Observation.r",)),
        ("system/Observation.rs", "user/Observation.rs", ()),  # another context grants nothing here
        (
            "system/Observation.rs",
            "system/Observation.rs?patient=Patient/b",
            ("system/Observation.rs?patient=Patient/b",),
        ),
        (
            "patient/Observation.rs?category=vital-signs",
            "patient/*.rs?code=http://loinc.org|8867-4",
            ("patient/Observation.rs?category=vital-signs&code=http://loinc.org|8867-4",),
        ),
        ("openid fhirUser patient/Goal.rs", "openid patient/Goal.r", ("openid", "patient/Goal.r")),
    ],
)
def test_intersection(granted: str, allowed: str, left: tuple[str, ...]) -> None:
    assert intersection(granted, allowed) == left


class FakeAuth:
    """An AuthServer as far as AuthGrants uses it."""

    def __init__(self, revoked: set[str], clients: dict[str, str], users: dict[str, Any]) -> None:
        self.revoked_keys, self.asked = revoked, []
        self.store = SimpleNamespace(
            client=lambda c: SimpleNamespace(scope=clients[c]) if c in clients else None,
            user=lambda u: users.get(u),
        )

    def revoked(self, claims: dict[str, Any], session: Any = None) -> bool:
        self.asked.append(claims)
        return f"jti:{claims['jti']}" in self.revoked_keys or f"fam:{claims['fam']}" in self.revoked_keys


def state(**values: Any) -> Any:
    base = dict(
        client_id="app",
        grant_scopes="user/Observation.rs user/Subscription.cruds",
        token_id="j1",
        token_family="f1",
        user_id=None,
        patient=None,
    )
    return SimpleNamespace(**{**base, **values})


def test_standing() -> None:
    practitioner = SimpleNamespace(role="practitioner", fhir_user="Practitioner/1")
    auditor = SimpleNamespace(role="auditor", fhir_user=None)
    patient = SimpleNamespace(role="patient", fhir_user="Patient/a")
    auth = FakeAuth(
        {"fam:gone"},
        {"app": "user/*.cruds patient/*.rs"},
        {"u1": practitioner, "u2": auditor, "p": patient},
    )
    grants = AuthGrants(auth)
    assert grants.standing(None, state(user_id="u1")).scopes == "user/Observation.rs user/Subscription.cruds"
    assert auth.asked[-1] == {"jti": "j1", "fam": "f1"}  # the token's jti and its family, in one check
    revoked = grants.standing(None, state(token_family="gone"))
    assert (revoked.scopes, revoked.withdrawn) == (None, "the token that created it was revoked")
    assert (
        grants.standing(None, state(client_id="other")).withdrawn
        == "its client other is no longer registered"
    )
    assert grants.standing(None, state(client_id=None)).withdrawn == "it has no owning client"
    assert grants.standing(None, state(user_id="nobody")).withdrawn == "its user no longer exists"
    assert grants.standing(None, state(user_id="u2")).scopes == ""  # an auditor now: no Observation
    mine = state(user_id="p", patient="a", grant_scopes="patient/Observation.rs")
    assert grants.standing(None, mine).scopes == "patient/Observation.rs"
    moved = state(user_id="p", patient="b", grant_scopes="patient/Observation.rs")
    assert grants.standing(None, moved).scopes == ""  # no longer that patient's user
    asked = len(auth.asked)
    assert grants.standing(None, state(token_id=None, token_family=None)).scopes  # before s003: no token
    assert len(auth.asked) == asked
