"""The token side of the authorization server: grants, client authentication, revocation, introspection.

https://hl7.org/fhir/smart-app-launch/app-launch.html
https://hl7.org/fhir/smart-app-launch/backend-services.html

Framework-free: each endpoint takes the form fields and the Authorization header and returns a
JSON body (or raises OAuthError, rendered as an RFC 6749 §5.2 error). Where authlib's grant
classes fall short of SMART (they accept PKCE `plain`, require PKCE only from public clients,
do not rotate refresh tokens and leave `jti` replay, the 5-minute `exp` limit and the
algorithm of client assertions to the caller), this module does the checks itself:
- PKCE S256 is required from every client at /authorize and at the token endpoint;
- refresh tokens rotate on every use and reuse revokes the family;
- client assertions: RS384/ES384 only, `kid` must match, iss = sub = client_id, aud = token
  URL, exp at most 5 minutes ahead, jti recorded and replays refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy import orm as so

from auth import roles
from auth import scopes as scope_rules
from auth.keys import KeyStore
from auth.keys import now
from auth.models import AuthClient
from auth.models import AuthUser
from auth.store import AuthStore
from auth.store import digest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")
TOKEN_ALG = "RS256"
CODE_TTL = 600
APP_TOKEN_TTL = 3600
BACKEND_TOKEN_TTL = 300
REFRESH_TTL = 30 * 24 * 3600
MAX_ASSERTION_LIFETIME = 300
# RFC 7515 §4.1.11: header parameters we do not know are ignored (the SMART Bulk Data test tool
# sends `kty`), unless the sender lists them in `crit`; this server understands no extension.
_ASSERTION_REGISTRY = JWSRegistry(algorithms=list(ASSERTION_ALGS), strict_check_header=False)
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


class OAuthError(Exception):
    """An RFC 6749 error response: error code, description, status."""

    def __init__(
        self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class Urls:
    """The endpoints, derived from the FHIR base URL."""

    base: str

    @property
    def token(self) -> str:
        """Token endpoint (also the `aud` of client assertions)."""
        return self.base + "/auth/token"


def _b64_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client",
            "Malformed Basic credentials",
            401,
            {"WWW-Authenticate": 'Basic realm="rehabfhir"'},
        ) from None
    client_id, sep, secret = raw.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client",
            "Malformed Basic credentials",
            401,
            {"WWW-Authenticate": 'Basic realm="rehabfhir"'},
        )
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _fetch_jwks(uri: str) -> dict[str, Any]:
    with urllib.request.urlopen(uri, timeout=10) as resp:  # noqa: S310 - registered https URL
        return json.loads(resp.read())  # type: ignore[no-any-return]


def unverified_part(token: str, index: int) -> dict[str, Any] | None:
    """A JWT's header (0) or claims (1) as JSON, not verified; None if it is not one."""
    try:
        part = token.split(".")[index]
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


class AuthServer:
    """Issue, refresh, revoke, introspect and validate tokens."""

    def __init__(self, store: AuthStore, keys: KeyStore) -> None:
        self.store = store
        self.keys = keys

    # -- client authentication -------------------------------------------------------

    def authenticate_client(self, form: dict[str, str], authorization: str | None, urls: Urls) -> AuthClient:
        """Authenticate by private_key_jwt, client_secret_basic/post, or (public clients) client_id alone."""
        if form.get("client_assertion_type") or form.get("client_assertion"):
            return self._assertion_client(form, urls)
        basic = _b64_basic(authorization)
        if basic is not None:
            return self._secret_client(*basic, basic=True)
        if form.get("client_secret"):
            return self._secret_client(form.get("client_id", ""), form["client_secret"], basic=False)
        client = self.store.client(form.get("client_id", ""))
        if client is None or client.client_type != "public":
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return client

    def _secret_client(self, client_id: str, secret: str, *, basic: bool) -> AuthClient:
        client = self.store.client(client_id)
        ok = (
            client is not None
            and client.secret_hash is not None
            and hmac.compare_digest(client.secret_hash, digest(secret))
        )
        if not ok or client is None:
            headers = {"WWW-Authenticate": 'Basic realm="rehabfhir"'} if basic else {}
            raise OAuthError("invalid_client", "Client authentication failed", 401, headers)
        return client

    def _client_keys(self, client: AuthClient) -> dict[str, Any]:
        if client.jwks:
            return json.loads(client.jwks)  # type: ignore[no-any-return]
        if client.jwks_uri:
            try:
                return _fetch_jwks(client.jwks_uri)
            except (OSError, ValueError):
                raise OAuthError("invalid_client", "The client's JWKS URL could not be read", 401) from None
        raise OAuthError("invalid_client", "The client has no registered keys", 401)

    def _assertion_client(self, form: dict[str, str], urls: Urls) -> AuthClient:
        def fail(why: str) -> OAuthError:
            return OAuthError("invalid_client", why, 401)

        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise fail(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        try:
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
            unverified = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
        except (ValueError, IndexError, binascii.Error):
            raise fail("The client assertion is not a JWT") from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise fail("The client assertion is not a JWT")
        if header.get("alg") not in ASSERTION_ALGS:
            raise fail(f"Client assertions must be signed with {' or '.join(ASSERTION_ALGS)}")
        client_id = str(unverified.get("iss", ""))
        client = self.store.client(client_id)
        if client is None or client.client_type != "asymmetric":
            raise fail("Unknown client or not registered for private_key_jwt")
        if form.get("client_id") and form["client_id"] != client_id:
            raise fail("client_id does not match the assertion's issuer")
        self._check_assertion_header(header, client)
        jwks = self._client_keys(client)
        kid = header.get("kid")
        candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
        if not kid or not candidates:
            raise fail("The assertion's kid matches no registered key")
        try:
            token = jwt.decode(
                assertion,
                KeySet.import_key_set({"keys": candidates}),
                algorithms=list(ASSERTION_ALGS),
                registry=_ASSERTION_REGISTRY,
            )
        except (JoseError, ValueError, TypeError):
            raise fail("The client assertion's signature does not verify") from None
        claims = token.claims
        self._check_assertion_claims(claims, client_id, urls)
        expires = datetime.fromtimestamp(int(claims["exp"]))
        if not self.store.first_jti(client_id, str(claims["jti"]), expires):
            raise fail("The client assertion's jti was already used")
        return client

    @staticmethod
    def _check_assertion_header(header: dict[str, Any], client: AuthClient) -> None:
        """Refuse a `crit` extension (we understand none) and a `jku` other than the registered JWKS URL."""
        if "crit" in header:
            crit = header["crit"]
            names = " ".join(map(str, crit)) if isinstance(crit, list) else repr(crit)
            raise OAuthError("invalid_client", f"Unsupported critical header parameter(s): {names}", 401)
        if "jku" in header and (not client.jwks_uri or header["jku"] != client.jwks_uri):
            raise OAuthError(
                "invalid_client", "The assertion's jku is not the client's registered JWKS URL", 401
            )

    @staticmethod
    def _check_assertion_claims(claims: dict[str, Any], client_id: str, urls: Urls) -> None:
        def fail(why: str) -> OAuthError:
            return OAuthError("invalid_client", why, 401)

        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise fail("iss and sub must both be the client_id")
        aud = claims.get("aud")
        if (aud if isinstance(aud, list) else [aud]).count(urls.token) == 0:
            raise fail(f"aud must be the token URL {urls.token}")
        exp = claims.get("exp")
        current = time.time()
        if not isinstance(exp, (int, float)) or exp <= current:
            raise fail("The client assertion has expired (or has no exp)")
        if exp > current + MAX_ASSERTION_LIFETIME + 5:
            raise fail("The client assertion's exp is more than 5 minutes ahead")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise fail("The client assertion needs a jti")

    # -- token endpoint -------------------------------------------------------------

    def token(self, form: dict[str, str], authorization: str | None, urls: Urls) -> dict[str, Any]:
        """Answer a token request."""
        grant = form.get("grant_type")
        if grant not in ("authorization_code", "refresh_token", "client_credentials"):
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        client = self.authenticate_client(form, authorization, urls)
        if grant == "client_credentials":
            return self._client_credentials(client, form, urls)
        if grant == "authorization_code":
            return self._authorization_code(client, form, urls)
        return self._refresh(client, form, urls)

    def _client_credentials(self, client: AuthClient, form: dict[str, str], urls: Urls) -> dict[str, Any]:
        if client.client_type == "public":
            raise OAuthError("unauthorized_client", "Public clients cannot use client_credentials")
        if not (form.get("scope") or "").strip():
            # SMART Backend Services: the scope parameter is required; never default to the registration.
            raise OAuthError("invalid_scope", "A scope parameter naming system/ scopes is required")
        granted = [
            s
            for s in scope_rules.grant(form.get("scope"), client.scope)
            if (rule := scope_rules.parse_rule(s)) is not None and rule.context == "system"
        ]
        if not granted:
            raise OAuthError("invalid_scope", "None of the requested scopes is allowed (system/ scopes only)")
        return self._issue(client, urls, tuple(granted), ttl=BACKEND_TOKEN_TTL, subject=client.client_id)

    def _authorization_code(self, client: AuthClient, form: dict[str, str], urls: Urls) -> dict[str, Any]:
        code, first = self.store.use_code(form.get("code", ""))
        if code is None:
            raise OAuthError("invalid_grant", "Unknown authorization code")
        if not first:
            # RFC 6749 §4.1.2: deny a replayed code and revoke what it issued.
            self.store.revoke("fam:" + code.family_id, now() + timedelta(seconds=REFRESH_TTL))
            raise OAuthError(
                "invalid_grant", "The authorization code was already used; its tokens are revoked"
            )
        if code.expires_at <= now():
            raise OAuthError("invalid_grant", "The authorization code has expired")
        if code.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The authorization code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier") or ""
        if not _VERIFIER.match(verifier):
            raise OAuthError("invalid_grant", "A code_verifier of 43-128 unreserved characters is required")
        if not hmac.compare_digest(create_s256_code_challenge(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (S256)")
        user = self.store.user(code.user_id)
        granted = self._role_cap(user, tuple(code.scope.split()), code.patient)
        return self._issue(
            client,
            urls,
            granted,
            ttl=APP_TOKEN_TTL,
            subject=code.user_id,
            patient=code.patient,
            fhir_user=user.fhir_user if user else None,
            family=code.family_id,
            nonce=code.nonce,
            encounter=code.encounter,
        )

    def _refresh(self, client: AuthClient, form: dict[str, str], urls: Urls) -> dict[str, Any]:
        value = form.get("refresh_token", "")
        row = self.store.refresh(value)
        if row is None or row.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Unknown refresh token")
        if self.store.revoked("fam:" + row.family_id):
            raise OAuthError("invalid_grant", "The refresh token was revoked")
        if not self.store.use_refresh(value):
            self.store.revoke("fam:" + row.family_id, now() + timedelta(seconds=REFRESH_TTL))
            raise OAuthError("invalid_grant", "The refresh token was already used; its family is revoked")
        if row.expires_at <= now():
            raise OAuthError("invalid_grant", "The refresh token has expired")
        previous = tuple(row.scope.split())
        granted = scope_rules.narrower(form.get("scope"), previous)
        wanted = tuple((form.get("scope") or "").split())
        if wanted and set(wanted) - set(granted):
            raise OAuthError("invalid_scope", "A refresh may narrow the scopes, never widen them")
        user = self.store.user(row.user_id) if row.user_id else None
        granted = self._role_cap(user, granted, row.patient)
        return self._issue(
            client,
            urls,
            granted,
            ttl=APP_TOKEN_TTL,
            subject=row.user_id or client.client_id,
            patient=row.patient,
            fhir_user=user.fhir_user if user else None,
            family=row.family_id,
        )

    @staticmethod
    def _role_cap(user: AuthUser | None, scopes: tuple[str, ...], patient: str | None) -> tuple[str, ...]:
        """Cap a user grant by the user's current role (a demotion takes effect at the next refresh)."""
        if user is None:
            raise OAuthError("invalid_grant", "The user of this grant no longer exists")
        capped = roles.cap(user.role, scopes)
        granted = capped.granted
        if user.role == "patient" and (not patient or user.fhir_user != f"Patient/{patient}"):
            # A patient's grant covers their own record only.
            granted = tuple(s for s in granted if scope_rules.parse_rule(s) is None)
        if not any(scope_rules.parse_rule(s) for s in granted):
            raise OAuthError("invalid_grant", "The user's role no longer allows any of the granted scopes")
        return granted

    def _issue(
        self,
        client: AuthClient,
        urls: Urls,
        granted: tuple[str, ...],
        *,
        ttl: int,
        subject: str,
        patient: str | None = None,
        fhir_user: str | None = None,
        family: str | None = None,
        nonce: str | None = None,
        encounter: str | None = None,
    ) -> dict[str, Any]:
        issued = int(time.time())
        claims: dict[str, Any] = {
            "iss": urls.base,
            "sub": subject,
            "aud": urls.base,
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "client_id": client.client_id,
            "scope": " ".join(granted),
        }
        if patient and scope_rules.parse(" ".join(granted)).has_patient_scopes:
            claims["patient"] = patient
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if family:
            claims["fam"] = family
        key = self.keys.signing_key()
        body: dict[str, Any] = {
            "access_token": jwt.encode(
                {"alg": TOKEN_ALG, "kid": key.kid, "typ": "at+jwt"}, claims, key, algorithms=[TOKEN_ALG]
            ),
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(granted),
        }
        if "patient" in claims:
            body["patient"] = patient
        if encounter:
            body["encounter"] = encounter
        if family and ({"offline_access", "online_access"} & set(granted)):
            refresh = secrets.token_urlsafe(32)
            self.store.add_refresh(
                refresh,
                family_id=family,
                client_id=client.client_id,
                user_id=subject,
                scope=" ".join(granted),
                patient=patient,
                expires_at=now() + timedelta(seconds=REFRESH_TTL),
            )
            body["refresh_token"] = refresh
        if "openid" in granted and fhir_user:
            body["id_token"] = self._id_token(client, urls, subject, fhir_user, nonce, issued)
        return body

    def _id_token(
        self, client: AuthClient, urls: Urls, subject: str, fhir_user: str, nonce: str | None, issued: int
    ) -> str:
        claims: dict[str, Any] = {
            "iss": urls.base,
            "sub": subject,
            "aud": client.client_id,
            "iat": issued,
            "exp": issued + APP_TOKEN_TTL,
            "fhirUser": f"{urls.base}/{fhir_user}",
        }
        if nonce:
            claims["nonce"] = nonce
        key = self.keys.signing_key()
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS256"])

    # -- access tokens -------------------------------------------------------------

    def verify(
        self, token: str, urls: Urls, *, check_revoked: bool = True, session: so.Session | None = None
    ) -> dict[str, Any]:
        """Return the claims of a valid access token, or raise OAuthError("invalid_token").

        Signature, issuer, audience and expiry, then revocation in the database (on `session`
        when the caller has one open). Nothing is remembered here: FHIR requests go through the
        worker's verified-token cache (auth/revocation.py), which calls verified_claims and
        revoked.
        """
        claims = self.verified_claims(token, urls)
        if check_revoked and self.revoked(claims, session):
            raise OAuthError("invalid_token", "The token was revoked", 401)
        return {k: v for k, v in claims.items() if k != "_kid"}

    def verified_claims(self, token: str, urls: Urls) -> dict[str, Any]:
        """The claims of a token whose signature, issuer, audience and expiry hold (its key id in `_kid`)."""
        claims = self._check_signature(token, urls)
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= time.time():
            raise OAuthError("invalid_token", "The token has expired", 401)
        return claims

    def revoked(self, claims: dict[str, Any], session: so.Session | None = None) -> bool:
        """Whether the token of these claims, or its refresh family, is revoked (one query)."""
        family = "fam:" + claims["fam"] if claims.get("fam") else None
        return self.store.revoked("jti:" + str(claims.get("jti")), family, session)

    def _check_signature(self, token: str, urls: Urls) -> dict[str, Any]:
        def fail(why: str) -> OAuthError:
            return OAuthError("invalid_token", why, 401)

        header = unverified_part(token, 0)
        if header is None:
            raise fail("The token is not a JWT")
        if header.get("alg") != TOKEN_ALG or not header.get("kid"):
            raise fail("The token is not signed by this server")
        try:
            claims = dict(
                jwt.decode(token, self.keys.key_set(str(header["kid"])), algorithms=[TOKEN_ALG]).claims
            )
        except (JoseError, ValueError, TypeError):
            raise fail("The token's signature does not verify") from None
        if claims.get("iss") != urls.base:
            raise fail("The token was issued by another server")
        aud = claims.get("aud")
        if urls.base not in (aud if isinstance(aud, list) else [aud]):
            raise fail("The token is meant for another server")
        claims["_kid"] = str(header["kid"])
        return claims

    def revoke(self, form: dict[str, str], authorization: str | None, urls: Urls) -> None:
        """RFC 7009: revoke an access or refresh token of the authenticated client (always 200)."""
        client = self.authenticate_client(form, authorization, urls)
        value = form.get("token", "")
        row = self.store.refresh(value)
        if row is not None:
            if row.client_id == client.client_id:
                self.store.revoke("fam:" + row.family_id, row.expires_at)
            return
        try:
            claims = self.verify(value, urls, check_revoked=False)
        except OAuthError:
            return
        if claims.get("client_id") == client.client_id:
            self.store.revoke("jti:" + str(claims["jti"]), datetime.fromtimestamp(int(claims["exp"])))

    def introspect(self, form: dict[str, str], authorization: str | None, urls: Urls) -> dict[str, Any]:
        """RFC 7662: describe a token to an authenticated confidential client; {"active": false} if invalid.

        A bearer token or a public client (client_id alone) is not client authentication: 401.
        """
        if authorization and not authorization.lower().startswith("basic "):
            raise OAuthError(
                "invalid_client",
                "Introspection needs confidential client authentication (client_secret_basic, "
                "client_secret_post or private_key_jwt)",
                401,
                {"WWW-Authenticate": 'Basic realm="rehabfhir"'},
            )
        client = self.authenticate_client(form, authorization, urls)
        if client.client_type == "public":
            raise OAuthError("invalid_client", "Public clients may not introspect tokens", 401)
        try:
            claims = self.verify(form.get("token", ""), urls)
        except OAuthError:
            return {"active": False}
        out = {"active": True, "token_type": "Bearer"}
        out.update(
            {
                k: claims[k]
                for k in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "patient", "fhirUser")
                if k in claims
            }
        )
        return out
