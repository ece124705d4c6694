"""The witness: every signed chain head, appended to a file outside the database after its commit.

Someone who holds the database but not the key can delete a tail of records together with its
signed heads, and the chain that is left still verifies. The witness is what remembers: after
each audit commit (one per group commit, or per clinical write on SQLite) its signed head (sequence
number, link, time, key id) is appended as one JSON line and fsync'd before the requests of
that group are answered. Heads go out only after the commit, so after a crash the witness can
trail the database by the last group, never lead it. A timer republishes the newest head of
the database every `interval` seconds (the group a crash left unpublished, or heads committed by
other hosts), and an optional second sink (syslog, or an HTTP endpoint) gets the newest head
for operators who keep it elsewhere. Several processes append to one file: each line is one
write() under flock(), and the file is rotated to `<path>.<seq>` past `max_bytes`.
RFC 9162 §4.10 (signed tree heads), §8.2 (monitors).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from logging.handlers import SysLogHandler
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import orm as so

from server.audit.chain import PENDING_HEAD
from server.audit.chain import Head
from server.audit.chain import latest_head

log = logging.getLogger("rehabfhir.audit")
# session.info entry: a committed head that could not be written to the witness.
PUBLISH_ERROR = "rehabfhir.audit_publish_error"
_ROTATED = re.compile(r"\.(\d+)$")


def default_path(database_url: str) -> str:
    """Next to the SQLite file; in the working directory (one per database name) for PostgreSQL."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            return os.path.abspath(url.database) + "-audit-witness.jsonl"
        return os.path.join(tempfile.gettempdir(), f"rehabfhir-audit-witness-memory-{os.getpid()}.jsonl")
    return os.path.join(os.getcwd(), f"rehabfhir-audit-witness-{url.database or 'default'}.jsonl")


def files(path: str) -> list[str]:
    """The witness files, oldest first: rotated `<path>.<seq>` then `<path>`."""
    folder, name = os.path.split(os.path.abspath(path))
    rotated = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(folder):
            match = _ROTATED.search(entry)
            if entry.startswith(name + ".") and match and entry == f"{name}.{match.group(1)}":
                rotated.append((int(match.group(1)), os.path.join(folder, entry)))
    return [p for _, p in sorted(rotated)] + ([path] if os.path.exists(path) else [])


def read_heads(path: str) -> Iterator[Head]:
    """Every head in the witness files (a torn last line from a crash is skipped)."""
    for name in files(path):
        with open(name, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip() or (number == len(lines) - 1 and not data.endswith(b"\n")):
                continue
            try:
                yield Head.parse(line)
            except ValueError:
                yield Head(0, "", "", "", "")  # verify names it: not a signed head


class Witness:
    """Append-only, fsync'd, rotated file of signed heads, plus an optional second sink."""

    def __init__(self, path: str, max_bytes: int = 64 * 1024 * 1024, sink: str = "") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.last_seq = 0  # newest head this process published
        self._lock = threading.Lock()  # the file descriptor and the write counter
        self._sync_lock = threading.Lock()  # one fsync at a time; it covers every line written before it
        self._fd, self._pid = -1, 0
        self._written = 0  # lines this process wrote
        self._synced = 0  # of which this many are known durable
        self._sink = _Sink(sink) if sink else None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))  # fail at start, not later

    def publish(self, head: Head) -> None:
        """Append one head and fsync it; raise if it could not be made durable."""
        self.sync(self.write(head))

    def write(self, head: Head) -> int:
        """Append one head's line (in the OS's cache: it survives a killed process, not a power cut).

        Returns a ticket for sync(). The file stays open between heads (one descriptor per
        process); it is reopened when another process rotated it or it was removed.
        """
        line = orjson.dumps(head.as_dict()) + b"\n"
        with self._lock:
            while True:
                fd = self._open()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = _same_file(fd, self.path)
                    if current:
                        os.write(fd, line)
                        if os.fstat(fd).st_size >= self.max_bytes:
                            os.fsync(fd)  # a rotated file is complete and durable
                            os.rename(self.path, f"{self.path}.{head.seq:015d}")
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if current:
                    break
                self._reopen()  # rotated (or removed) before the lock: append to the new file
            self._written += 1
            self.last_seq = max(self.last_seq, head.seq)
            ticket = self._written
        if self._sink is not None:
            self._sink.offer(head)
        return ticket

    def sync(self, ticket: int) -> None:
        """Make the lines up to `ticket` durable: one fsync covers every line written before it.

        Threads that wrote while an fsync ran share the next one (group fsync), so a burst of
        heads costs far fewer fsyncs than heads. Lines of a file rotated meanwhile were
        fsync'd before the rotation.
        """
        if self._synced >= ticket:
            return
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                target, fd = self._written, os.dup(self._open())
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced = max(self._synced, target)

    def _open(self) -> int:
        """This process's descriptor of the file (opened again after a fork)."""
        if self._fd < 0 or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._pid = os.getpid()
        return self._fd

    def _reopen(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def close(self) -> None:
        """Close the file and stop the second sink's thread."""
        with self._lock:
            self._reopen()
        if self._sink is not None:
            self._sink.stop()


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class _Sink:
    """Ship the newest head to syslog or an HTTP endpoint from a thread (best effort, never blocks)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._latest: Head | None = None
        self._wake = threading.Event()
        self._stopped = False
        self._syslog = (
            SysLogHandler(address=target[7:] or "/dev/log") if target.startswith("syslog") else None
        )
        self._thread = threading.Thread(target=self._run, name="audit-head-sink", daemon=True)
        self._thread.start()

    def offer(self, head: Head) -> None:
        if self._latest is None or head.seq >= self._latest.seq:
            self._latest = head
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(5)

    def _run(self) -> None:
        sent = 0
        while not self._stopped:
            self._wake.wait()
            self._wake.clear()
            head = self._latest
            if head is None or head.seq <= sent:
                continue
            try:
                self._send(orjson.dumps(head.as_dict()))
                sent = head.seq
            except Exception:
                log.warning("audit head %s could not be sent to %s", head.seq, self.target, exc_info=True)

    def _send(self, body: bytes) -> None:
        if self._syslog is not None:
            record = logging.LogRecord("rehabfhir.audit.head", logging.INFO, "", 0, body.decode(), None, None)
            self._syslog.emit(record)
            return
        request = urllib.request.Request(
            self.target, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - operator's URL
            response.read()


class HeadTimer:
    """Republish the database's newest signed head every `interval` seconds if the witness lacks it."""

    def __init__(
        self,
        witness: Witness,
        sessions: Callable[[], Any],
        interval: float,
        sweep: Callable[[], Any] | None = None,
    ) -> None:
        self.witness, self.sessions, self.interval = witness, sessions, interval
        self.sweep = sweep  # links the records of writes a crash left unlinked (PostgreSQL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-head-timer", daemon=True)

    def start(self) -> HeadTimer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def tick(self) -> Head | None:
        """Link what crashed requests left unlinked, then publish the newest head if this process has not."""
        if self.sweep is not None:
            try:
                self.sweep()
            except Exception:
                log.warning("audit head timer: could not link the pending write records", exc_info=True)
        session = self.sessions()
        try:
            head = latest_head(session)
        finally:
            session.close()
        if head is not None and head.seq > self.witness.last_seq:
            self.witness.publish(head)
        return head

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.warning("audit head timer: could not republish the head", exc_info=True)
            self._stop.wait(self.interval)


@sa.event.listens_for(so.Session, "after_commit")
def _publish_after_commit(session: so.Session) -> None:
    """The committed append's head goes to the witness (errors are kept for the caller to raise)."""
    pending = session.info.pop(PENDING_HEAD, None)
    if pending is None:
        return
    witness, head = pending
    try:
        witness.publish(head)
    except Exception as exc:  # the commit is done; the timer republishes the head
        log.error(
            "audit head %s committed but not written to the witness %s", head.seq, witness.path, exc_info=True
        )
        session.info[PUBLISH_ERROR] = exc


@sa.event.listens_for(so.Session, "after_transaction_end")
def _forget_uncommitted(session: so.Session, transaction: so.SessionTransaction) -> None:
    """A head whose transaction rolled back must never reach the witness."""
    if transaction.parent is None:
        session.info.pop(PENDING_HEAD, None)
