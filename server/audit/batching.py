"""Group commit for the audit events of reads: many requests' events, one chain append and commit.

Every read, search and failure writes its AuditEvents before the response leaves (fail closed).
Appending to the hash chain is serialised (one lock, then a commit that waits for the disk), so
one transaction per request caps a worker's read rate at one disk flush per request. Here the
request threads of a process hand their events to a leader: the first thread to arrive writes
everything queued so far in one transaction while the others wait on their own ticket; when
it is done, any thread still waiting finds its events either written or taken by the next
leader. No extra thread, no buffering past the response: each request still returns only
after its own events are committed, and gets the exception if they were not.

Writes (create, update, delete) do not come here: their events commit in the write's own
transaction (hook.AuditedRepository).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from server.audit.events import AuditFacts


@dataclass
class _Ticket:
    facts: Sequence[AuditFacts]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit:
    """Append the events of concurrent requests in shared transactions (leader/follower)."""

    def __init__(self, write: Callable[[Any, list[AuditFacts]], None], sessions: Callable[[], Any]) -> None:
        self._write = write  # (session, facts) -> None: one transaction, commit or raise
        self._sessions = sessions
        self._lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._leading = False
        self.batches = 0  # transactions written (for tests and benchmarks)

    def write(self, facts: Sequence[AuditFacts]) -> None:
        """Return once `facts` are committed to the chain; raise if they could not be."""
        ticket = _Ticket(facts)
        with self._lock:
            self._queue.append(ticket)
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            error: BaseException | None = None
            try:
                session = self._sessions()
                try:
                    self._write(session, [f for t in batch for f in t.facts])
                finally:
                    session.close()
                self.batches += 1
            except BaseException as exc:  # every request of the batch fails closed
                error = exc
            for ticket in batch:
                ticket.error = error
                ticket.done.set()
