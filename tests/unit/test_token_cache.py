"""The verified-token cache: keyed by a hash, bounded (LRU), never past exp, trusted as its watch allows."""

from __future__ import annotations

import time
from typing import Any

import pytest

from auth.revocation import TokenCache
from auth.revocation import Watch
from auth.revocation import token_key
from auth.server import OAuthError
from auth.server import Urls
from auth.validators import BearerCheck
from auth.validators import access_context
from auth.validators import grant_of

URLS = Urls("http://testserver/fhir")


def _grant(exp: float = 0.0, kid: str = "k1") -> Any:
    claims = {
        "scope": "system/*.rs",
        "client_id": "c",
        "sub": "c",
        "jti": "j",
        "exp": exp or time.time() + 60,
    }
    return grant_of(claims, kid)


def test_key_is_a_hash_of_base_and_token() -> None:
    key = token_key(URLS.base, "header.claims.signature")
    assert len(key) == 32 and b"signature" not in key
    assert key == token_key(URLS.base, "header.claims.signature")
    assert key != token_key("http://other/fhir", "header.claims.signature")


def test_bounded_least_recently_used_go_first() -> None:
    cache = TokenCache(2)
    a, b, c = (token_key(URLS.base, t) for t in "abc")
    cache.put(a, _grant(), 0)
    cache.put(b, _grant(), 0)
    assert cache.get(a, time.time()) is not None  # a is now the most recently used
    cache.put(c, _grant(), 0)
    assert len(cache) == 2 and cache.get(b, time.time()) is None
    assert cache.get(a, time.time()) is not None and cache.get(c, time.time()) is not None


def test_an_entry_never_outlives_its_token() -> None:
    cache = TokenCache(10)
    key = token_key(URLS.base, "t")
    cache.put(key, _grant(exp=time.time() + 5), 0)
    assert cache.get(key, time.time()) is not None
    assert cache.get(key, time.time() + 5) is None and len(cache) == 0


def test_a_check_from_a_dropped_epoch_is_not_trusted() -> None:
    cache = TokenCache(10)
    key = token_key(URLS.base, "t")
    epoch = cache.epoch
    cache.clear()  # a revocation arrived while the request was checking
    cache.put(key, _grant(), epoch)
    found = cache.get(key, time.time())
    assert found is not None and found[1] is None
    cache.put(key, _grant(), cache.epoch)
    assert cache.get(key, time.time())[1] == cache.epoch  # type: ignore[index]
    cache.clear()
    assert len(cache) == 0 and cache.epoch == epoch + 2


class _Keys:
    def __init__(self) -> None:
        self.live = frozenset({"k1"})

    def kids(self) -> frozenset[str]:
        return self.live


class _Server:
    """AuthServer's surface BearerCheck uses, counting signature checks and revocation queries."""

    def __init__(self) -> None:
        self.keys = _Keys()
        self.signatures = self.queries = 0
        self.revoked_jtis: set[str] = set()

    def verified_claims(self, token: str, urls: Urls) -> dict[str, Any]:
        self.signatures += 1
        claims = {"scope": "patient/*.rs", "patient": "p1", "sub": "u1", "client_id": "c", "jti": token}
        return {**claims, "fhirUser": "Practitioner/1", "exp": time.time() + 60, "_kid": "k1"}

    def revoked(self, claims: dict[str, Any], session: Any = None) -> bool:
        self.queries += 1
        return claims["jti"] in self.revoked_jtis


class _Vouching(Watch):
    def sync(self, session: Any) -> int | None:
        return self.cache.epoch


def test_a_vouched_entry_answers_without_database_or_signature() -> None:
    server, cache = _Server(), TokenCache(10)
    check = BearerCheck(server, cache, _Vouching(cache))  # type: ignore[arg-type]
    first = access_context(check, "Bearer t1", URLS, "10.0.0.1")
    again = access_context(check, "Bearer t1", URLS, "10.0.0.2")
    assert (server.signatures, server.queries) == (1, 1)
    assert first.patient == again.patient == "p1" and again.user == "u1" and again.client_id == "c"
    assert (
        again.fhir_user == "Practitioner/1"
        and again.remote_addr == "10.0.0.2"
        and again.can("Observation", "r")
    )
    cache.clear()  # a revocation was pushed
    server.revoked_jtis.add("t1")
    with pytest.raises(Exception, match="revoked"):
        access_context(check, "Bearer t1", URLS)
    assert server.queries == 2 and len(cache) == 0


def test_without_a_vouching_watch_revocation_is_queried_every_time() -> None:
    server, cache = _Server(), TokenCache(10)
    check = BearerCheck(server, cache, Watch(cache))  # type: ignore[arg-type]
    for _ in range(3):
        check.grant("t1", URLS)
    assert (server.signatures, server.queries) == (1, 3)  # the signature is remembered, revocation is not
    server.revoked_jtis.add("t1")
    with pytest.raises(OAuthError, match="revoked"):
        check.grant("t1", URLS)


def test_a_retired_key_means_verifying_again() -> None:
    server, cache = _Server(), TokenCache(10)
    check = BearerCheck(server, cache, _Vouching(cache))  # type: ignore[arg-type]
    check.grant("t1", URLS)
    server.keys.live = frozenset({"k2"})
    check.grant("t1", URLS)
    assert server.signatures == 2


def test_cache_off_checks_everything_every_time() -> None:
    class _Full(_Server):
        def verify(self, token: str, urls: Urls, session: Any = None) -> dict[str, Any]:
            claims = self.verified_claims(token, urls)
            self.revoked(claims)
            return claims

    server = _Full()
    check = BearerCheck(server, None, None)  # type: ignore[arg-type]
    check.grant("t1", URLS)
    check.grant("t1", URLS)
    assert (server.signatures, server.queries) == (2, 2)
