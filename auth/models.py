"""Tables of the authorization server: users, clients, codes, refresh tokens, revocations, keys.

https://hl7.org/fhir/smart-app-launch/app-launch.html

Every secret (client secret, code, refresh token) is stored as its SHA-256 hash; passwords
as salted scrypt hashes. All state lives in the database so any worker on any host can
answer and a revocation is seen by every worker at once.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.base import Base


class AuthUser(Base):
    """A person who logs in: practitioner, patient, auditor or admin."""

    __tablename__ = "auth_user"

    id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(200), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(400))
    role: so.Mapped[str] = so.mapped_column(sa.String(20))
    fhir_user: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())


class AuthClient(Base):
    """A registered app or backend: public, confidential-symmetric or confidential-asymmetric."""

    __tablename__ = "auth_client"

    client_id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    client_type: so.Mapped[str] = so.mapped_column(sa.String(20))  # public | symmetric | asymmetric
    secret_hash: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    jwks: so.Mapped[str | None] = so.mapped_column(sa.Text())
    jwks_uri: so.Mapped[str | None] = so.mapped_column(sa.String(1000))
    redirect_uris: so.Mapped[str] = so.mapped_column(sa.Text(), default="[]")  # JSON list
    scope: so.Mapped[str] = so.mapped_column(sa.Text())
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())


class AuthCode(Base):
    """An authorization code: single use, short-lived, bound to client, redirect URI and PKCE challenge."""

    __tablename__ = "auth_code"

    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    client_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    user_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    redirect_uri: so.Mapped[str] = so.mapped_column(sa.String(1000))
    scope: so.Mapped[str] = so.mapped_column(sa.Text())
    patient: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    encounter: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    code_challenge: so.Mapped[str] = so.mapped_column(sa.String(128))
    nonce: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    family_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())
    used_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime())


class AuthRefreshToken(Base):
    """One refresh token of a family; each use rotates it, reuse of a used one revokes the family."""

    __tablename__ = "auth_refresh_token"

    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    family_id: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    client_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    user_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    scope: so.Mapped[str] = so.mapped_column(sa.Text())
    patient: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())
    used_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime())


class AuthRevocation(Base):
    """A revoked access-token jti or token family (key "jti:..." / "fam:..."), kept until expiry."""

    __tablename__ = "auth_revocation"

    key: so.Mapped[str] = so.mapped_column(sa.String(100), primary_key=True)
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())


class AuthUsedJti(Base):
    """A client-assertion jti already seen (replays are refused until it expires)."""

    __tablename__ = "auth_used_jti"

    key: so.Mapped[str] = so.mapped_column(sa.String(400), primary_key=True)  # client_id + " " + jti
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())


class AuthSigningKey(Base):
    """An RSA signing key; the newest active one signs, every unretired one verifies (JWKS)."""

    __tablename__ = "auth_signing_key"

    kid: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    private_pem: so.Mapped[str] = so.mapped_column(sa.Text())  # encrypted with the secret key
    created_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())
    retired_at: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime())


class AuthLaunchContext(Base):
    """An EHR launch: the opaque `launch` value and the context it stands for."""

    __tablename__ = "auth_launch_context"

    launch: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    patient: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    encounter: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    user_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    expires_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime())


class AuthLoginAttempt(Base):
    """Password checks reserved for a key ("user:<name>" / "addr:<ip>") in its current fixed window.

    A sign-in increments the counts first (one atomic upsert each) and checks the password only if
    they are still within the limit: shared by every worker and host, exact under concurrency.
    """

    __tablename__ = "auth_login_attempt"

    key: so.Mapped[str] = so.mapped_column(sa.String(300), primary_key=True)
    window_start: so.Mapped[datetime] = so.mapped_column(sa.DateTime())
    count: so.Mapped[int] = so.mapped_column(sa.Integer())


class AuthRevocationGeneration(Base):
    """One row counting revocations: every revocation bumps it in its own transaction.

    Workers read it (SQLite) or are told of it (PostgreSQL NOTIFY) to drop their verified-token
    caches; no row (an emptied table) reads as generation 0.
    """

    __tablename__ = "auth_revocation_generation"

    id: so.Mapped[int] = so.mapped_column(sa.Integer(), primary_key=True, autoincrement=False)
    generation: so.Mapped[int] = so.mapped_column(sa.BigInteger())
