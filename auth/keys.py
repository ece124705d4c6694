"""Signing keys: RSA keys kept in the database, encrypted with REHABFHIR_SECRET_KEY, published as JWKS.

https://www.rfc-editor.org/rfc/rfc7517

Every worker and every restart loads the same keys from `auth_signing_key`, so a token signed
by one worker verifies on any other. The newest unretired key signs; all unretired keys
verify, so a rotation never breaks tokens already issued.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from joserfc.jwk import KeySet
from joserfc.jwk import RSAKey
from sqlalchemy import orm as so

from auth.models import AuthSigningKey

_RELOAD_SECONDS = 60.0


def now() -> datetime:
    """The current UTC time as a naive datetime (how the auth tables store times)."""
    return datetime.now(UTC).replace(tzinfo=None)


class KeyStore:
    """Load, create and rotate the server's signing keys; cached per process, reloaded on unknown kid."""

    def __init__(self, sessions: so.sessionmaker[so.Session], secret: str) -> None:
        self._sessions = sessions
        self._password = "rehabfhir-signing:" + secret
        self._keys: list[RSAKey] = []
        self._kids: frozenset[str] = frozenset()
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _decrypt(self, row: AuthSigningKey) -> RSAKey | None:
        try:
            return RSAKey.import_key(
                row.private_pem,
                parameters={"kid": row.kid, "use": "sig", "alg": "RS256"},
                password=self._password,
            )
        except Exception:  # noqa: BLE001 - a key sealed with another secret is unusable here
            return None

    def _load(self) -> None:
        with self._sessions() as session:
            rows = session.scalars(
                sa.select(AuthSigningKey)
                .where(AuthSigningKey.retired_at.is_(None))
                .order_by(AuthSigningKey.created_at.desc(), AuthSigningKey.kid)
            ).all()
            keys = [k for k in (self._decrypt(r) for r in rows) if k is not None]
        if not keys:
            self._create()
            return self._load()
        self._keys = keys
        self._kids = frozenset(str(k.kid) for k in keys)
        self._loaded = time.monotonic()

    def _create(self) -> None:
        key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex})
        pem = key.as_pem(private=True, password=self._password).decode()
        with self._sessions() as session:
            session.add(AuthSigningKey(kid=key.kid, private_pem=pem, created_at=now()))
            session.commit()

    def keys(self, refresh: bool = False) -> list[RSAKey]:
        """Return the unretired keys, newest first."""
        with self._lock:
            self._reload_if_due(refresh)
            return list(self._keys)

    def _reload_if_due(self, refresh: bool = False) -> None:
        if refresh or not self._keys or time.monotonic() - self._loaded > _RELOAD_SECONDS:
            self._load()

    def kids(self) -> frozenset[str]:
        """The ids of the unretired keys (reloaded like keys())."""
        with self._lock:
            self._reload_if_due()
            return self._kids

    def signing_key(self) -> RSAKey:
        """Return the key that signs new tokens."""
        return self.keys()[0]

    def key_set(self, kid: str | None) -> KeySet:
        """Return the verification keys, reloading once if `kid` is not known yet (rotation elsewhere)."""
        keys = self.keys()
        if kid is not None and kid not in {k.kid for k in keys}:
            keys = self.keys(refresh=True)
        return KeySet(keys)  # type: ignore[arg-type]

    def jwks(self) -> dict[str, Any]:
        """Return the public JWKS document."""
        out = []
        for key in self.keys():
            public: dict[str, Any] = dict(key.as_dict(private=False))
            public.update({"kid": key.kid, "use": "sig", "alg": "RS256"})
            out.append(public)
        return {"keys": out}

    def rotate(self, retire_old: bool = False) -> str:
        """Create a new signing key (it signs from now on); optionally retire the older ones at once."""
        self._create()
        newest = str(self.keys(refresh=True)[0].kid)
        if retire_old:
            with self._sessions() as session:
                session.execute(
                    sa.update(AuthSigningKey).where(AuthSigningKey.kid != newest).values(retired_at=now())
                )
                session.commit()
            self.keys(refresh=True)
        return newest
