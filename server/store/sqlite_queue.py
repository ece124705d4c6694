"""SQLite writers queue in arrival order behind one writer, instead of convoying on the lock.

SQLite lets one connection write at a time. A connection that finds the write lock taken sleeps
in the busy handler (1, 2, 5, 10, ... up to 100 ms between tries) and takes the lock whenever a
try happens to find it free: under 16 clients a write waited anywhere from nothing to a second
(bench/README.md, "SQLite writer queue"). Here a connection takes its turn in a queue before it
starts to write, so the lock is always free when it gets there:

- in the process, a FIFO hand-off lock (each waiter sleeps on its own event and the releasing
  thread hands the turn to the oldest one; nobody barges in);
- across processes, an exclusive `flock` on `<database>-writer.lock`, taken by the thread whose
  turn it is and released with the turn, so at most one thread per process waits in the kernel.

The hook is the DBAPI connection itself (`sqlite3.connect(factory=...)`, set by
session.make_engine), so it covers every connection of the engine: SQLAlchemy's sessions and
connections, and raw connections (`engine.raw_connection()`, as the audit group commit uses). A
connection takes its turn before a statement that starts a write: `BEGIN IMMEDIATE` /
`BEGIN EXCLUSIVE`, or a data or schema change (INSERT, UPDATE, DELETE, REPLACE, CREATE, DROP,
ALTER, ...) when it does not hold the turn yet -- inside a deferred (read) transaction that now
writes, or in autocommit. It gives the turn back as soon as it is no longer in a transaction
(COMMIT, ROLLBACK, a failed BEGIN, an error that rolled back, close). A script
(`executescript`) always takes the turn. Reads (SELECT, deferred BEGIN) never queue: under WAL
they go on while one connection writes. A connection copied into a forked child never gives
back a turn it took in the parent (the child's queue is its own).

A turn is waited for at most the busy timeout (then `sqlite3.OperationalError: database is
locked`, as SQLite itself would have answered), so a thread that holds a write and waits for
another one that wants to write fails as it did before instead of hanging. The busy timeout
stays set for writers outside the queue (the sqlite3 shell, another program).
"""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
import threading
import weakref
from typing import Any

# First words of statements that never need the write lock. Anything else that is not in a
# write transaction yet takes a turn first (a statement misread as a read just falls back to
# the busy handler, as before).
_READS = frozenset(
    {
        "SELECT",
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "PRAGMA",
        "EXPLAIN",
        "WITH",
        "VALUES",
    }
)


def _starts_write(sql: str) -> bool:
    head = sql.lstrip()[:16].upper()
    if head.startswith("BEGIN"):
        return "IMMEDIATE" in head or "EXCLUSIVE" in head
    words = head.split(None, 1)
    return bool(words) and words[0] not in _READS


class WriterQueue:
    """One database file's writer turn in this process: FIFO among threads, flock across processes."""

    def __init__(self, path: str) -> None:
        self.path = path + "-writer.lock"
        self._reset()
        self.turns = 0  # turns granted (for tests)
        self.waited = 0  # turns that had to wait (for tests)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (q := ref()) is not None and q._reset())

    def _reset(self) -> None:
        # A forked child starts with no turn held, no waiters and no file of its own: a file
        # description inherited from the parent would share the parent's flock.
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._busy = False
        self._file: Any = None

    def acquire(self, timeout: float) -> None:
        """Wait for this thread's turn (at most `timeout` seconds), then hold the file lock."""
        with self._mutex:
            if not self._busy:
                self._busy = True
                event = None
            else:
                event = threading.Event()
                self._waiters.append(event)
                self.waited += 1
        if event is not None and not event.wait(timeout):
            with self._mutex:
                try:
                    self._waiters.remove(event)
                except ValueError:  # handed the turn just as the wait ended: give it on
                    self._hand_on()
                raise sqlite3.OperationalError("database is locked (waited for the writer queue)")
        try:
            if self._file is None:
                self._file = open(self.path, "a+b")  # noqa: SIM115 -- kept open for the process
            fcntl.flock(self._file, fcntl.LOCK_EX)
        except BaseException:
            with self._mutex:
                self._hand_on()
            raise
        self.turns += 1

    def release(self) -> None:
        """Give up the file lock and hand the turn to the oldest waiting thread."""
        try:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            with self._mutex:
                self._hand_on()

    def _hand_on(self) -> None:  # under _mutex
        if self._waiters:
            self._waiters.popleft().set()  # the turn passes straight on: _busy stays True
        else:
            self._busy = False


_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


def queue_for(path: str) -> WriterQueue:
    """The process's queue of a database file (engines on the same file share it)."""
    key = os.path.realpath(path)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = WriterQueue(key)
        return queue


class QueuedCursor(sqlite3.Cursor):
    """A cursor whose statements take and give back their connection's writer turn."""

    connection: QueuedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> QueuedCursor:
        self.connection.before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection.settle()

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> QueuedCursor:
        self.connection.before(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self.connection.settle()

    def executescript(self, sql_script: str, /) -> QueuedCursor:
        self.connection.before("-- a script may write")  # not parsed: always takes the turn
        try:
            return super().executescript(sql_script)
        finally:
            self.connection.settle()


class QueuedConnection(sqlite3.Connection):
    """sqlite3 connection that queues for the writer turn (see the module docstring)."""

    writer_queue: WriterQueue  # set on the per-database subclass made by connection_factory
    queue_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holds_turn = False
        self._turn_pid = 0

    def before(self, sql: str) -> None:
        """Take the turn before a statement that starts to write (unless already held)."""
        if not self.holds_turn and _starts_write(sql):
            self.writer_queue.acquire(self.queue_timeout)
            self.holds_turn = True
            self._turn_pid = os.getpid()

    def settle(self) -> None:
        """Give the turn back once no transaction is open (committed, rolled back, failed)."""
        if self.holds_turn and not self.in_transaction:
            self._give()

    def _give(self) -> None:
        self.holds_turn = False
        if self._turn_pid == os.getpid():  # a forked child's copy never held the child's queue
            self.writer_queue.release()

    def cursor(self, factory: Any = QueuedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str, /) -> Any:  # type: ignore[override]
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.settle()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.settle()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.holds_turn:
                self._give()

    def __del__(self) -> None:  # dropped unclosed while holding the turn: the queue goes on
        if getattr(self, "holds_turn", False):
            self._give()


def connection_factory(path: str, timeout: float) -> type[QueuedConnection]:
    """The `factory` for sqlite3.connect: connections of `path` that share its writer queue."""
    return type(
        "QueuedConnection",
        (QueuedConnection,),
        {"writer_queue": queue_for(path), "queue_timeout": timeout, "__module__": __name__},
    )
