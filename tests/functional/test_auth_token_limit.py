"""The token endpoint's failure limiter lives in the database: shared by hosts, written only on failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from auth.keys import now
from auth.models import AuthLoginAttempt
from auth.ratelimit import FailureLimiter
from server.store.session import make_engine
from server.store.session import make_session_factory
from tests.functional.auth_flows import basic
from tests.functional.auth_flows import ext

TOKEN = "/auth/token"


def _rows(app: Any) -> dict[str, int]:
    with app.extensions["rehabfhir.sessions"]() as session:
        return dict(session.execute(sa.select(AuthLoginAttempt.key, AuthLoginAttempt.count)).all())


def test_failures_through_two_hosts_count_as_one(app: Any, database_url: str) -> None:
    """Another host's limiter (its own engine) records failures; this app's token endpoint refuses."""
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    engine = make_engine(database_url)
    try:
        there = FailureLimiter(make_session_factory(engine), limit=20, window=60.0, prefix="token:")
        c = app.test_client()
        codes = []
        key = f"127.0.0.1|{client.client_id}"  # the address and the client it claims
        for i in range(20):  # alternate: a failed request here, a failure recorded by the other host
            if i % 2:
                there.fail(key)
                codes.append(401)
            else:
                r = c.post(
                    TOKEN, data={"grant_type": "client_credentials"}, headers=basic(client.client_id, "x")
                )
                codes.append(r.status_code)
        assert codes == [401] * 20
        assert there.blocked(key) >= 1.0  # the other host sees this host's failures too
    finally:
        engine.dispose()
    r = c.post(
        TOKEN,
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers=basic(client.client_id, secret or ""),
    )
    assert r.status_code == 429 and r.get_json()["error"] == "too_many_requests"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert _rows(app) == {f"token:{key}": 20}  # the refused request wrote nothing


def test_only_failures_write(app: Any) -> None:
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    ok = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    for _ in range(3):
        assert c.post(TOKEN, data=ok, headers=basic(client.client_id, secret or "")).status_code == 200
    assert _rows(app) == {}
    # A request refused for a reason that is not a guessed credential is not counted either.
    r = c.post(TOKEN, data={"grant_type": "password"}, headers=basic(client.client_id, secret or ""))
    assert r.status_code == 400 and _rows(app) == {}
    assert c.post(TOKEN, data=ok, headers=basic(client.client_id, "wrong")).status_code == 401
    assert _rows(app) == {f"token:127.0.0.1|{client.client_id}": 1}


def test_a_new_window_allows_again(app: Any) -> None:
    limiter = FailureLimiter(app.extensions["rehabfhir.sessions"], limit=3, window=60.0, prefix="token:")
    for _ in range(3):
        assert limiter.blocked("10.2.2.2") == 0.0
        limiter.fail("10.2.2.2")
    assert 1.0 <= limiter.blocked("10.2.2.2") <= 60.0
    assert limiter.blocked("10.2.2.3") == 0.0  # another address
    with app.extensions["rehabfhir.sessions"]() as session:
        session.execute(sa.update(AuthLoginAttempt).values(window_start=now() - timedelta(seconds=61)))
        session.commit()
    assert limiter.blocked("10.2.2.2") == 0.0
    limiter.fail("10.2.2.2")  # the first failure of a new window
    assert _rows(app) == {"token:10.2.2.2": 1}


def test_each_limiter_resets_only_its_own_counters(app: Any) -> None:
    auth = ext(app)
    assert auth.login_limiter.reserve("doc", "10.3.3.3") == 0.0
    auth.token_limiter.fail("10.3.3.3")
    assert _rows(app) == {"user:doc": 1, "addr:10.3.3.3": 1, "token:10.3.3.3": 1}
    auth.token_limiter.reset()
    assert _rows(app) == {"user:doc": 1, "addr:10.3.3.3": 1}
    auth.token_limiter.fail("10.3.3.3")
    auth.login_limiter.reset()
    assert _rows(app) == {"token:10.3.3.3": 1}


def test_strangers_failures_do_not_lock_out_another_client(app: Any) -> None:
    """Behind one proxy address every client shares the address: 20 failures with made-up client
    ids (or another client's) must not refuse this client's token requests."""
    client, secret = ext(app).store.add_client("ehr", "system/*.rs", "symmetric")
    c = app.test_client()
    for _ in range(20):
        r = c.post(TOKEN, data={"grant_type": "client_credentials"}, headers=basic("made-up", "x"))
        assert r.status_code == 401
    ok = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    assert c.post(TOKEN, data=ok, headers=basic(client.client_id, secret or "")).status_code == 200
    assert c.post(TOKEN, data=ok, headers=basic("made-up", "x")).status_code == 429  # the one named


def test_behind_trusted_proxies_the_forwarded_address_counts(database_url: str, tmp_path: Any) -> None:
    """REHABFHIR_TRUSTED_PROXIES=1: the client address is the one the proxy saw (X-Forwarded-For)."""
    from server import create_app
    from server.settings import Settings

    proxied = create_app(
        Settings(
            database_url=database_url,
            testing=True,
            trusted_proxies=1,
            audit_witness=str(tmp_path / "w.jsonl"),
            audit_head_interval=0,
            export_worker=False,
        )
    )
    try:
        ext(proxied).token_limiter.reset()
        c = proxied.test_client()
        headers = {**basic("nobody", "x"), "X-Forwarded-For": "203.0.113.9"}
        assert c.post(TOKEN, data={"grant_type": "client_credentials"}, headers=headers).status_code == 401
        assert _rows(proxied) == {"token:203.0.113.9|nobody": 1}
    finally:
        ext(proxied).token_limiter.reset()
        proxied.extensions["rehabfhir.engine"].dispose()
