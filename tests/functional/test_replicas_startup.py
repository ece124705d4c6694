"""Stateless hosts (issue 18, item 1): two hosts starting at once against an empty database take turns.

Migrating, seeding the terminology and registering the pages' client run under the startup lock
(server/store/session.py: a PostgreSQL advisory lock; on SQLite a file lock).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from server.store.migrate import missing_heads
from server.store.session import make_engine
from server.store.session import startup_lock
from tests.conftest import fresh_postgres

pytestmark = pytest.mark.pg

# Each child imports everything first, says "ready", and builds its app when the parent says "go":
# the two startups begin within a millisecond of each other.
CHILD = """
import sys
from server import create_app
from server.settings import Settings
settings = Settings(database_url=sys.argv[1], testing=True, audit_witness=sys.argv[2], audit_head_interval=0,
                    export_worker=False)
print("ready", flush=True)
sys.stdin.readline()
app = create_app(settings)
app.extensions["rehabfhir.engine"].dispose()
print("started", flush=True)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///" + os.path.join(str(tmp_path), "empty.db")
    else:
        with fresh_postgres() as url:
            yield url


def test_two_hosts_start_at_once_on_an_empty_database(empty_database: str, tmp_path: object) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, empty_database, os.path.join(str(tmp_path), f"witness-{n}.jsonl")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "started" in out
        assert "could not seed" not in err, err[-3000:]
    engine = make_engine(empty_database)
    try:
        assert missing_heads(engine) == []
        with engine.connect() as conn:
            clients = conn.execute(
                sa.text("SELECT count(*) FROM auth_client WHERE client_id = 'rehabfhir-web'")
            )
            assert clients.scalar_one() == 1
            seeded = conn.execute(sa.text("SELECT count(*) FROM resource WHERE type = 'CodeSystem'"))
            assert seeded.scalar_one() >= 1
    finally:
        engine.dispose()


def test_the_startup_lock_makes_a_second_holder_wait(database_url: str) -> None:
    """While one process holds the lock, another's startup waits until it is released."""
    engine = make_engine(database_url)
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with startup_lock(engine):
            order.append("first in")
            entered.set()
            release.wait(30)
            order.append("first out")

    def second() -> None:
        entered.wait(30)
        with startup_lock(engine):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    try:
        for thread in threads:
            thread.start()
        entered.wait(30)
        threads[1].join(0.5)  # the second is blocked on the lock meanwhile
        assert threads[1].is_alive()
        release.set()
        for thread in threads:
            thread.join(30)
        assert order == ["first in", "first out", "second in"]
    finally:
        release.set()
        engine.dispose()


def test_the_startup_lock_is_reentrant_in_a_thread(database_url: str) -> None:
    """The app's startup holds it around the migration, which takes it too when run alone."""
    engine = make_engine(database_url)
    done: list[bool] = []

    def nested() -> None:
        with startup_lock(engine), startup_lock(engine):
            done.append(True)

    thread = threading.Thread(target=nested, daemon=True)
    try:
        thread.start()
        thread.join(10)
        assert done == [True]  # a second, independent lock would have waited for the first forever
    finally:
        engine.dispose()
