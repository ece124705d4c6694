"""SQLite writers take turns in arrival order (server/store/sqlite_queue.py): threads and processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from server.store import sqlite_queue
from server.store.session import WRITE_OPTION
from server.store.session import make_engine


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path}/q.db")
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("CREATE TABLE t (pk INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("INSERT INTO t (pk, n) VALUES (1, 0)")
    yield engine
    while _checked_out:
        _checked_out.pop().invalidate()  # closed, not returned to the pool mid-transaction
    engine.dispose()


_checked_out: list[Any] = []


def _raw(engine: sa.Engine) -> Any:
    """A driver connection of the engine's pool, as the audit group commit uses one."""
    _checked_out.append(engine.raw_connection())
    return _checked_out[-1].dbapi_connection


def _queue(engine: sa.Engine) -> sqlite_queue.WriterQueue:
    return sqlite_queue.queue_for(str(engine.url.database))


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("SELECT 1", False),
        ("  select * from t", False),
        ("BEGIN", False),
        ("BEGIN DEFERRED", False),
        ("BEGIN IMMEDIATE", True),
        ("begin exclusive", True),
        ("COMMIT", False),
        ("ROLLBACK", False),
        ("PRAGMA foreign_keys=ON", False),
        ("INSERT INTO t VALUES (2, 0)", True),
        ("\n UPDATE t SET n = 1", True),
        ("DELETE FROM t", True),
        ("CREATE TABLE u (x)", True),
        ("", False),
    ],
)
def test_which_statements_take_a_turn(sql: str, writes: bool) -> None:
    assert sqlite_queue._starts_write(sql) is writes


def test_engines_on_one_file_share_the_queue_and_memory_has_none(engine: sa.Engine, tmp_path: Path) -> None:
    other = make_engine(f"sqlite:///{tmp_path}/../{tmp_path.name}/q.db")
    try:
        assert isinstance(_raw(other), sqlite_queue.QueuedConnection)
        assert _raw(other).writer_queue is _raw(engine).writer_queue is _queue(engine)
    finally:
        other.dispose()
    memory = make_engine("sqlite://")
    assert not isinstance(_raw(memory), sqlite_queue.QueuedConnection)
    memory.dispose()


def test_write_transactions_hold_the_turn_until_they_end_reads_do_not_queue(engine: sa.Engine) -> None:
    writer, reader = _raw(engine), _raw(engine)
    writer.execute("BEGIN IMMEDIATE")
    assert writer.holds_turn
    assert reader.execute("SELECT n FROM t").fetchone() == (0,)  # WAL: reads go on
    reader.execute("BEGIN")
    reader.execute("SELECT n FROM t").fetchone()
    assert not reader.holds_turn
    reader.rollback()
    writer.execute("UPDATE t SET n = 1")
    writer.commit()
    assert not writer.holds_turn
    # A deferred transaction takes the turn at its first write, and keeps it until ROLLBACK.
    reader.execute("BEGIN")
    reader.execute("SELECT n FROM t").fetchone()
    reader.execute("UPDATE t SET n = 2")
    assert reader.holds_turn
    reader.execute("ROLLBACK")
    assert not reader.holds_turn
    # Autocommit writes take it for the statement; a failed statement gives it back.
    reader.execute("UPDATE t SET n = 3")
    assert not reader.holds_turn
    with pytest.raises(sqlite3.IntegrityError):
        reader.execute("INSERT INTO t (pk, n) VALUES (1, 0)")
    assert not reader.holds_turn
    # A script is not parsed: it takes the turn while it runs.
    reader.executescript("UPDATE t SET n = 4; SELECT 1;")
    assert not reader.holds_turn
    # Sessions' write transactions (BEGIN IMMEDIATE through the engine's begin hook) too.
    with engine.connect() as conn:
        with conn.execution_options(**{WRITE_OPTION: True}).begin():
            assert conn.connection.dbapi_connection.holds_turn
        assert not conn.connection.dbapi_connection.holds_turn
    assert not _queue(engine)._busy


def test_threads_are_served_in_arrival_order(engine: sa.Engine) -> None:
    queue = _queue(engine)
    holder = _raw(engine)
    holder.execute("BEGIN IMMEDIATE")
    order: list[int] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            conn = _raw(engine)
            conn.execute("PRAGMA busy_timeout=0")  # no sleeping on the lock: only the queue waits
            conn.execute("BEGIN IMMEDIATE")
            order.append(i)
            (n,) = conn.execute("SELECT n FROM t").fetchone()
            conn.execute("UPDATE t SET n = ?", (n + 1,))
            conn.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = []
    for i in range(8):
        threads.append(threading.Thread(target=write, args=(i,)))
        threads[-1].start()
        _wait_for(lambda i=i: len(queue._waiters) == i + 1)  # queued in this order
    holder.commit()
    for t in threads:
        t.join(10)
    assert errors == []
    assert order == list(range(8))
    assert holder.execute("SELECT n FROM t").fetchone() == (8,)
    assert not queue._busy and not queue._waiters


def test_a_turn_not_given_in_time_is_database_locked_and_the_queue_goes_on(engine: sa.Engine) -> None:
    holder = _raw(engine)
    holder.execute("BEGIN IMMEDIATE")
    late = _raw(engine)
    late.queue_timeout = 0.05  # per connection here; the engine's is the busy timeout (60 s)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        late.execute("BEGIN IMMEDIATE")
    assert not late.holds_turn and not late.in_transaction
    holder.commit()
    late.execute("BEGIN IMMEDIATE")
    late.execute("UPDATE t SET n = 5")
    late.commit()
    assert not _queue(engine)._busy


_CHILD = """
import sys
from server.store.session import make_engine

engine = make_engine(sys.argv[1])
conn = engine.raw_connection().dbapi_connection
conn.execute("PRAGMA busy_timeout=0")  # no sleeping on the lock: only the queue may wait
print("queued", flush=True)
conn.execute("BEGIN IMMEDIATE")
(n,) = conn.execute("SELECT n FROM t").fetchone()
conn.execute("UPDATE t SET n = ?", (n + 1,))
conn.commit()
print("done", flush=True)
"""


def test_another_process_waits_for_the_turn_through_the_lock_file(engine: sa.Engine) -> None:
    holder = _raw(engine)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET n = 10")
    root = Path(__file__).resolve().parents[3]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(engine.url)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "queued\n"
        time.sleep(0.3)  # the child is waiting in the queue by now (not failing on the lock)
        assert child.poll() is None
        holder.commit()
        assert child.stdout.readline() == "done\n"
    finally:
        assert child.wait(30) == 0
    assert holder.execute("SELECT n FROM t").fetchone() == (11,)


def test_a_forked_child_has_a_queue_of_its_own(engine: sa.Engine) -> None:
    # A file description inherited at fork would share the parent's flock: the child's queue
    # starts afresh (no turn, no waiters, its own file) and waits for the parent's turn.
    queue = _queue(engine)
    holder = _raw(engine)
    holder.execute("BEGIN IMMEDIATE")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        answer = b"n"
        try:
            ok = not queue._busy and queue._file is None
            holder._give()  # the parent's connection, copied holding the turn: not the child's to give
            queue.acquire(10.0)
            answer = b"y" if ok else b"n"
        finally:
            os.write(write_end, answer)
            os._exit(0)
    os.close(write_end)
    try:
        time.sleep(0.3)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # blocked on the parent's lock
        holder.commit()
        assert os.read(read_end, 1) == b"y"
    finally:
        os.waitpid(pid, 0)
        os.close(read_end)
