"""Bearer tokens on FHIR requests: validate and turn into the AccessContext the FHIR layer enforces.

https://www.rfc-editor.org/rfc/rfc6750

Signature (our keys, RS256 only), issuer and audience are checked the first time a worker sees
a token (then remembered while its key is unretired); expiry on every request; revocation is
looked up in `auth_revocation` on every request (no cache), so a revoked token is refused at
once by every worker on every host.
"""

from __future__ import annotations

from typing import Any

from auth import scopes as scope_rules
from auth.server import AuthServer
from auth.server import OAuthError
from auth.server import Urls
from server.errors import UnauthenticatedError
from server.fhir.access import AccessContext

REALM = "rehabfhir"


def challenge(error: str, description: str) -> dict[str, str]:
    """The WWW-Authenticate header of a 401."""
    safe = description.replace('"', "'")
    return {"WWW-Authenticate": f'Bearer realm="{REALM}", error="{error}", error_description="{safe}"'}


def bearer_token(authorization: str | None) -> str:
    """Return the token of an `Authorization: Bearer` header, or raise 401."""
    if not authorization:
        raise UnauthenticatedError(
            "This request needs a bearer token", headers=challenge("invalid_token", "No bearer token")
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError(
            "The Authorization header must be 'Bearer <token>'",
            headers=challenge("invalid_request", "Authorization must be Bearer"),
        )
    return token.strip()


def access_context(
    server: AuthServer,
    authorization: str | None,
    urls: Urls,
    remote_addr: str | None = None,
    session: Any = None,
) -> AccessContext:
    """Validate the request's bearer token and build its AccessContext (401 if invalid)."""
    token = bearer_token(authorization)
    try:
        claims = server.verify(token, urls, session=session)
    except OAuthError as err:
        raise UnauthenticatedError(err.description, headers=challenge(err.error, err.description)) from None
    policy = scope_rules.parse(str(claims.get("scope", "")))
    patient = str(claims["patient"]) if claims.get("patient") else None
    # patient/ scopes without a patient in context grant nothing (never the whole database).
    rules = tuple(r for r in policy.rules if r.context != "patient" or patient is not None)
    return AccessContext(
        # A backend service (client_credentials) has no user: its subject is the client itself.
        user=str(claims["sub"])
        if claims.get("sub") and claims.get("sub") != claims.get("client_id")
        else None,
        client_id=str(claims.get("client_id")) if claims.get("client_id") else None,
        scopes=frozenset(policy.scopes),
        patient=patient,
        remote_addr=remote_addr,
        unrestricted=False,
        rules=rules,
        fhir_user=str(claims["fhirUser"]) if claims.get("fhirUser") else None,
    )
