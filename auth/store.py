"""The auth package's SQL: users, clients, codes, refresh-token families, revocations, used jtis.

https://www.rfc-editor.org/rfc/rfc6749
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from auth.keys import now
from auth.models import AuthClient
from auth.models import AuthCode
from auth.models import AuthLaunchContext
from auth.models import AuthRefreshToken
from auth.models import AuthRevocation
from auth.models import AuthUsedJti
from auth.models import AuthUser
from auth.revocation import bump
from auth.roles import ROLES
from server.store.session import begin_write

# Two fixed parameters (a token's jti and its refresh family), not an expanding IN: every request runs it.
_REVOKED = (
    sa.select(sa.literal(1))
    .where(sa.or_(AuthRevocation.key == sa.bindparam("a"), AuthRevocation.key == sa.bindparam("b")))
    .limit(1)
)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def digest(value: str) -> str:
    """SHA-256 of a secret (codes, refresh tokens and client secrets are stored this way)."""
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    """Salted scrypt hash, with its parameters."""
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Compare a password with its stored hash in constant time."""
    try:
        _, n, r, p, salt, key = stored.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(key) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), key)


_DUMMY_HASH = hash_password(secrets.token_hex(8))


class AuthStore:
    """Reads and writes of the auth tables, each in its own short transaction."""

    def __init__(self, sessions: so.sessionmaker[so.Session]) -> None:
        self.sessions = sessions
        # Called after a revocation commits (this worker's token cache drops what it remembers).
        self.on_revoke: list[Callable[[], None]] = []

    @contextmanager
    def write(self) -> Iterator[so.Session]:
        """A write transaction (SQLite takes the write lock up front)."""
        with self.sessions() as session:
            begin_write(session)
            yield session
            session.commit()

    # -- people and clients -------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str, fhir_user: str | None) -> AuthUser:
        """Create a user with a salted slow password hash."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        user = AuthUser(
            id=uuid.uuid4().hex,
            username=username,
            password_hash=hash_password(password),
            role=role,
            fhir_user=fhir_user,
            created_at=now(),
        )
        with self.write() as session:
            session.add(user)
        return user

    def authenticate_user(self, username: str, password: str) -> AuthUser | None:
        """Return the user if the password matches (same cost whether or not the user exists)."""
        with self.sessions() as session:
            user = session.scalar(sa.select(AuthUser).where(AuthUser.username == username))
        if user is None:
            check_password(password, _DUMMY_HASH)
            return None
        return user if check_password(password, user.password_hash) else None

    def user(self, user_id: str) -> AuthUser | None:
        """Return a user by id."""
        with self.sessions() as session:
            return session.get(AuthUser, user_id)

    def add_client(
        self,
        name: str,
        scope: str,
        client_type: str,
        *,
        redirect_uris: list[str] = (),  # type: ignore[assignment]
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
        client_id: str | None = None,
    ) -> tuple[AuthClient, str | None]:
        """Register a client; return it and its secret (symmetric clients only; shown once)."""
        secret = secrets.token_urlsafe(32) if client_type == "symmetric" else None
        client = AuthClient(
            client_id=client_id or uuid.uuid4().hex,
            name=name,
            client_type=client_type,
            secret_hash=digest(secret) if secret else None,
            jwks=json.dumps(jwks) if jwks else None,
            jwks_uri=jwks_uri,
            redirect_uris=json.dumps(list(redirect_uris)),
            scope=scope,
            created_at=now(),
        )
        with self.write() as session:
            session.add(client)
        return client, secret

    def client(self, client_id: str) -> AuthClient | None:
        """Return a client by id."""
        with self.sessions() as session:
            return session.get(AuthClient, client_id)

    def add_redirect_uri(self, client_id: str, uri: str) -> bool:
        """Add a redirect URI to a registered client; return whether it was missing."""
        with self.write() as session:
            client = session.get(AuthClient, client_id)
            uris = json.loads(client.redirect_uris or "[]") if client is not None else [uri]
            if client is None or uri in uris:
                return False
            client.redirect_uris = json.dumps([*uris, uri])
        return True

    def set_client_scope(self, client_id: str, scope: str) -> bool:
        """Set a registered client's allowed scopes; return whether they changed."""
        with self.write() as session:
            client = session.get(AuthClient, client_id)
            if client is None or client.scope == scope:
                return False
            client.scope = scope
        return True

    # -- launch contexts and codes ------------------------------------------------------

    def add_launch(
        self, patient: str | None, encounter: str | None = None, user_id: str | None = None, ttl: int = 3600
    ) -> str:
        """Register an EHR launch context; return its opaque `launch` value."""
        launch = secrets.token_urlsafe(24)
        with self.write() as session:
            session.add(
                AuthLaunchContext(
                    launch=launch,
                    patient=patient,
                    encounter=encounter,
                    user_id=user_id,
                    expires_at=now() + timedelta(seconds=ttl),
                )
            )
        return launch

    def launch(self, launch: str) -> AuthLaunchContext | None:
        """Return a live launch context."""
        with self.sessions() as session:
            row = session.get(AuthLaunchContext, launch)
        return row if row is not None and row.expires_at > now() else None

    def add_code(self, code: str, **values: Any) -> None:
        """Store an authorization code (hashed)."""
        with self.write() as session:
            session.add(AuthCode(code_hash=digest(code), **values))

    def use_code(self, code: str) -> tuple[AuthCode | None, bool]:
        """Mark a code used; return it and whether this call was the first use."""
        key = digest(code)
        with self.write() as session:
            row = session.get(AuthCode, key)
            if row is None:
                return None, False
            first = (
                session.execute(
                    sa.update(AuthCode)
                    .where(AuthCode.code_hash == key, AuthCode.used_at.is_(None))
                    .values(used_at=now())
                ).rowcount  # type: ignore[attr-defined]
                == 1
            )
        return row, first

    # -- refresh-token families and revocation -----------------------------------------

    def add_refresh(self, token: str, **values: Any) -> None:
        """Store a refresh token (hashed) in its family."""
        with self.write() as session:
            session.add(AuthRefreshToken(token_hash=digest(token), **values))

    def refresh(self, token: str) -> AuthRefreshToken | None:
        """Return a refresh token row by its value."""
        with self.sessions() as session:
            return session.get(AuthRefreshToken, digest(token))

    def use_refresh(self, token: str) -> bool:
        """Mark a refresh token used; return whether this call was the first use."""
        with self.write() as session:
            return bool(
                session.execute(
                    sa.update(AuthRefreshToken)
                    .where(AuthRefreshToken.token_hash == digest(token), AuthRefreshToken.used_at.is_(None))
                    .values(used_at=now())
                ).rowcount  # type: ignore[attr-defined]
                == 1
            )

    def revoke(self, key: str, expires_at: datetime) -> None:
        """Record a revoked jti ("jti:...") or family ("fam:..."), idempotently.

        The same transaction bumps the revocation generation (and notifies every PostgreSQL
        listener at commit), so every worker's token cache drops what it remembers.
        Rows are never purged: a Subscription outlives its token's `expires_at`, and its delivery
        worker asks `revoked` about the token that created it (server/subscriptions/grants.py), so
        a purge by `expires_at` would let a revoked subscription deliver again.
        """
        with self.write() as session:
            if session.get(AuthRevocation, key) is None:
                session.add(AuthRevocation(key=key, expires_at=expires_at))
            if key.startswith("fam:"):
                session.execute(
                    sa.update(AuthRefreshToken)
                    .where(AuthRefreshToken.family_id == key[4:], AuthRefreshToken.used_at.is_(None))
                    .values(used_at=now())
                )
            bump(session)
        for hook in self.on_revoke:
            hook()

    def revoked(self, key: str, family: str | None = None, session: so.Session | None = None) -> bool:
        """Whether a token ("jti:...") or its refresh family ("fam:...") is revoked.

        On `session` if given (the request's own connection, no second one).
        """
        params = {"a": key, "b": family or key}
        if session is not None:
            return session.connection().execute(_REVOKED, params).first() is not None
        with self.sessions() as own:
            return own.connection().execute(_REVOKED, params).first() is not None

    def first_jti(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record a client-assertion jti; return False if it was seen before (a replay)."""
        key = f"{client_id} {jti}"[:400]
        try:
            with self.write() as session:
                session.execute(
                    sa.delete(AuthUsedJti).where(AuthUsedJti.expires_at < now() - timedelta(hours=1))
                )
                if session.get(AuthUsedJti, key) is not None:
                    return False
                session.add(AuthUsedJti(key=key, expires_at=expires_at))
        except sa.exc.IntegrityError:
            return False
        return True
