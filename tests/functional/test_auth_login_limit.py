"""The sign-in limiter reserves before it checks, in the database: exact under concurrency, shared."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import auth.store
from auth.keys import now
from auth.models import AuthLoginAttempt
from auth.ratelimit import LoginLimiter
from server.store.session import make_engine
from server.store.session import make_session_factory
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import ext
from tests.functional.auth_flows import hidden

THREADS = 64


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every password verification (scrypt) the server performs."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    real = auth.store.check_password

    def counting(password: str, stored: str) -> bool:
        with lock:
            seen["checks"] += 1
        return real(password, stored)

    monkeypatch.setattr(auth.store, "check_password", counting)
    return seen


def _login_forms(app: Any, n: int) -> list[tuple[Any, str]]:
    """n browser sessions, each on the sign-in page of a pending authorization request."""
    client_id, _ = add_app(app, "openid fhirUser user/Patient.rs")
    out = []
    for _ in range(n):
        c = app.test_client()
        page = c.get("/auth/authorize", query_string=authorize_params(client_id, "user/Patient.rs", "v" * 50))
        out.append((c, hidden(page.get_data(as_text=True), "csrf_token")))
    return out


def _post_logins(forms: list[tuple[Any, str]], usernames: list[str], password: str) -> Counter[int]:
    barrier = threading.Barrier(len(forms))

    def one(i: int) -> int:
        c, csrf = forms[i]
        barrier.wait()
        data = {"step": "login", "csrf_token": csrf, "username": usernames[i], "password": password}
        return int(c.post("/auth/authorize", data=data).status_code)

    with ThreadPoolExecutor(len(forms)) as pool:
        return Counter(pool.map(one, range(len(forms))))


def test_concurrent_wrong_passwords_get_at_most_the_limit_of_checks(
    app: Any, verifications: Counter[str]
) -> None:
    add_user(app, "doc", "practitioner", "Practitioner/1")
    forms = _login_forms(app, THREADS)
    statuses = _post_logins(forms, ["doc"] * THREADS, "wrong password")
    assert verifications["checks"] == 5
    assert statuses == Counter({401: 5, 429: THREADS - 5})


def test_concurrent_guesses_from_one_address_are_capped_too(app: Any, verifications: Counter[str]) -> None:
    forms = _login_forms(app, 30)
    statuses = _post_logins(forms, [f"user{i}" for i in range(30)], "guess")  # one try per name
    assert verifications["checks"] == 20  # the per-address limit
    assert statuses == Counter({401: 20, 429: 10})


def test_workers_on_different_hosts_share_the_counter(app: Any, database_url: str) -> None:
    """Two limiters on two engines (two hosts) reserve against the same rows: exactly the limit passes."""
    here = ext(app).login_limiter
    engine = make_engine(database_url)
    try:
        there = LoginLimiter(make_session_factory(engine), per_user=5, per_address=20, window=60.0)
        limiters = [here, there]
        barrier = threading.Barrier(THREADS)

        def one(i: int) -> float:
            barrier.wait()
            return limiters[i % 2].reserve("Doc", f"10.0.0.{i}")  # other addresses: the user limit binds

        with ThreadPoolExecutor(THREADS) as pool:
            waits = list(pool.map(one, range(THREADS)))
    finally:
        engine.dispose()
    assert waits.count(0.0) == 5 and all(1.0 <= w <= 60.0 for w in waits if w)


def test_a_new_window_allows_again_and_a_right_password_gives_its_slot_back(
    app: Any, verifications: Counter[str]
) -> None:
    add_user(app, "doc", "practitioner", "Practitioner/1")
    limiter = ext(app).login_limiter
    for _ in range(4):
        assert limiter.reserve("doc", "10.1.1.1") == 0.0
    limiter.release("doc", "10.1.1.1")  # a right password
    assert limiter.reserve("doc", "10.1.1.1") == 0.0
    assert limiter.reserve("doc", "10.1.1.1") == 0.0
    wait = limiter.reserve("DOC ", "10.1.1.1")  # the same user, however typed
    assert 1.0 <= wait <= 60.0
    with app.extensions["rehabfhir.sessions"]() as session:
        session.execute(sa.update(AuthLoginAttempt).values(window_start=now() - timedelta(seconds=61)))
        session.commit()
    assert limiter.reserve("doc", "10.1.1.1") == 0.0
    assert verifications["checks"] == 0  # the limiter itself never checks a password
