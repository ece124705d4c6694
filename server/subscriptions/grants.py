"""A subscription owner's grant as it stands when a notification is sent, not as it was when created.

https://www.rfc-editor.org/rfc/rfc7009 · https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

A subscription records the creating token's scopes, jti and refresh-token family. Before each
lease's work (handshake, events, heartbeat) the delivery worker asks `AuthGrants.standing`:

- the token or its family revoked (the query every request's token check makes,
  auth.server.AuthServer.revoked, on the worker's session): withdrawn;
- the client no longer registered, or the user gone: withdrawn;
- otherwise the intersection of the recorded scopes with the client's registered scopes now
  (`intersection`: `system/*.cruds` under a registration of `system/CarePlan.rs` is
  `system/CarePlan.rs`) and, for a user, what the user's role allows now (auth.roles, as a
  refresh is capped): what the grant no longer covers is withheld.

Withdrawn: the worker turns the subscription `off` with the reason and sends nothing more.
A subscription created before its token was recorded (revision s003) is bounded by the client
and the user only.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from sqlalchemy import orm as so

from auth import roles
from auth import scopes as scope_rules


@dataclass(frozen=True, slots=True)
class Standing:
    """The scopes the owner's grant still has, or why it is withdrawn (scopes None)."""

    scopes: str | None
    withdrawn: str | None = None


class GrantCheck(Protocol):
    """How the worker learns what the owner's grant is now."""

    def standing(self, session: so.Session, state: Any) -> Standing:
        """The grant of `state` (a StateView) now."""


class AuthGrants:
    """The grant now, from the auth tables (auth.server.AuthServer: its store and revocation check)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def standing(self, session: so.Session, state: Any) -> Standing:
        if not state.client_id:
            return Standing(None, "it has no owning client")
        if state.token_id and self.server.revoked(
            {"jti": state.token_id, "fam": state.token_family}, session
        ):
            return Standing(None, "the token that created it was revoked")
        client = self.server.store.client(state.client_id)
        if client is None:
            return Standing(None, f"its client {state.client_id} is no longer registered")
        granted = intersection(state.grant_scopes, client.scope or "")
        if state.user_id:
            user = self.server.store.user(state.user_id)
            if user is None:
                return Standing(None, "its user no longer exists")
            granted = roles.cap(user.role, granted).granted
            if user.role == "patient" and user.fhir_user != f"Patient/{state.patient}":
                # A patient's grant covers their own record only (as a refresh is capped).
                granted = tuple(s for s in granted if scope_rules.parse_rule(s) is None)
        return Standing(" ".join(granted))


_ORDER = "cruds"


def _both(granted: Any, allowed: Any) -> str | None:
    """The scope two clinical rules both grant, or None (a resource must meet both restrictions)."""
    if granted.context != allowed.context:
        return None
    if allowed.type != "*" and granted.type not in ("*", allowed.type):
        return None
    type_ = granted.type if allowed.type == "*" else allowed.type
    letters = "".join(ch for ch in _ORDER if ch in granted.interactions and ch in allowed.interactions)
    if not letters:
        return None
    params = tuple(dict.fromkeys((*granted.params, *allowed.params)))
    query = "?" + urllib.parse.urlencode(params, safe=":/|,") if params else ""
    return f"{granted.context}/{type_}.{letters}{query}"


def intersection(granted: str, allowed: str) -> tuple[str, ...]:
    """What a grant of `granted` scopes still covers under a registration of `allowed` scopes."""
    allowed_rules = scope_rules.parse(allowed).rules
    out: list[str] = []
    for name in scope_rules.parse(granted).scopes:
        rule = scope_rules.parse_rule(name)
        if rule is None:
            if name in allowed.split():
                out.append(name)  # openid, launch/patient...: no data by themselves
            continue
        out.extend(both for a in allowed_rules if (both := _both(rule, a)) is not None)
    return tuple(dict.fromkeys(out))
