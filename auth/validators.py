"""Bearer tokens on FHIR requests: validate and turn into the AccessContext the FHIR layer enforces.

https://www.rfc-editor.org/rfc/rfc6750

Signature (our keys, RS256 only), issuer, audience, expiry and revocation are checked the first
time a worker sees a token; the AccessContext built from it is then remembered in the worker's
verified-token cache (auth/revocation.py: keyed by the token's hash, LRU, never past `exp` nor
once its key is retired) and used without a database query for as long as the worker is sure
no revocation came in since (SQLite: the generation counter read on the request's connection;
PostgreSQL: LISTEN/NOTIFY). With REHABFHIR_TOKEN_CACHE off, every request checks everything.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from auth import scopes as scope_rules
from auth.revocation import Grant
from auth.revocation import TokenCache
from auth.revocation import Watch
from auth.revocation import token_key
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


class BearerCheck:
    """Verify bearer tokens through the worker's cache (None: no cache, every check every time)."""

    def __init__(self, server: AuthServer, cache: TokenCache | None, watch: Watch | None) -> None:
        self.server, self.cache = server, cache
        self.watch = watch or Watch(cache or TokenCache(1))

    def grant(self, token: str, urls: Urls, session: Any = None) -> Grant:
        """The grant of a valid token, or raise OAuthError."""
        if self.cache is None:
            return grant_of(self.server.verify(token, urls, session=session), "")
        epoch = self.watch.sync(session)  # None: revocations are not pushed to this worker right now
        key = token_key(urls.base, token)
        found = self.cache.get(key, time.time())
        if found is not None and found[0].kid not in self.server.keys.kids():
            self.cache.forget(key)  # its signing key was retired
            found = None
        if found is not None and epoch is not None and found[1] == epoch:
            return found[0]
        if found is None:
            claims = self.server.verified_claims(token, urls)
            grant = grant_of(claims, str(claims["_kid"]))
        else:
            grant = found[0]
        if self.server.revoked({"jti": grant.jti, "fam": grant.family}, session):
            self.cache.forget(key)
            raise OAuthError("invalid_token", "The token was revoked", 401)
        self.cache.put(key, grant, epoch)
        return grant


def grant_of(claims: dict[str, Any], kid: str) -> Grant:
    """What a verified token gives: its AccessContext (without the request's address) and its limits."""
    policy = scope_rules.parse(str(claims.get("scope", "")))
    patient = str(claims["patient"]) if claims.get("patient") else None
    # patient/ scopes without a patient in context grant nothing (never the whole database).
    rules = tuple(r for r in policy.rules if r.context != "patient" or patient is not None)
    context = AccessContext(
        # A backend service (client_credentials) has no user: its subject is the client itself.
        user=str(claims["sub"])
        if claims.get("sub") and claims.get("sub") != claims.get("client_id")
        else None,
        client_id=str(claims.get("client_id")) if claims.get("client_id") else None,
        scopes=frozenset(policy.scopes),
        patient=patient,
        unrestricted=False,
        rules=rules,
        fhir_user=str(claims["fhirUser"]) if claims.get("fhirUser") else None,
        # What a subscription the token creates records: revoking either stops its deliveries.
        token_id=str(claims["jti"]) if claims.get("jti") else None,
        token_family=str(claims["fam"]) if claims.get("fam") else None,
    )
    family = str(claims["fam"]) if claims.get("fam") else None
    return Grant(context, kid, float(claims["exp"]), str(claims.get("jti")), family)


def access_context(
    check: BearerCheck,
    authorization: str | None,
    urls: Urls,
    remote_addr: str | None = None,
    session: Any = None,
) -> AccessContext:
    """Validate the request's bearer token and build its AccessContext (401 if invalid)."""
    token = bearer_token(authorization)
    try:
        grant = check.grant(token, urls, session)
    except OAuthError as err:
        raise UnauthenticatedError(err.description, headers=challenge(err.error, err.description)) from None
    return dataclasses.replace(grant.context, remote_addr=remote_addr)
