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
        for i in range(20):  # alternate: a failed request here, a failure recorded by the other host
            if i % 2:
                there.fail("127.0.0.1")
                codes.append(401)
            else:
                r = c.post(
                    TOKEN, data={"grant_type": "client_credentials"}, headers=basic(client.client_id, "x")
                )
                codes.append(r.status_code)
        assert codes == [401] * 20
        assert there.blocked("127.0.0.1") >= 1.0  # the other host sees this host's failures too
    finally:
        engine.dispose()
    r = c.post(
        TOKEN,
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers=basic(client.client_id, secret or ""),
    )
    assert r.status_code == 429 and r.get_json()["error"] == "too_many_requests"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert _rows(app) == {"token:127.0.0.1": 20}  # the refused request wrote nothing


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
    assert _rows(app) == {"token:127.0.0.1": 1}


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
