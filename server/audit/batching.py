"""Group commit for the audit events of reads: many requests' events, one chain append and commit.

Every read, search and failure writes its AuditEvents before the response leaves (fail closed).
Appending to the hash chain is serialised (one lock, then a commit), and each append's signed
head is fsync'd to the witness, so one transaction per request would cap a worker's read rate
and cost a commit, a head and an fsync per request. Here the request threads of a process hand
their events to a leader: the first thread to arrive takes everything queued so far and writes
it in one transaction (appender.py). As soon as that transaction has committed and its head is
written to the witness, the leader hands leadership on (a waiting thread takes the next batch,
whose events queued meanwhile) and only then waits for the witness fsync (witness.Witness.sync,
shared by the heads written while the previous fsync ran). Its requests are answered once their
records are committed and their head is durable; each gets the exception if either failed.

No extra thread and no buffering past the response. After a crash the witness trails the
database by at most the groups committed but not yet answered: the one between its commit and
its witness line (kill -9), or also the one or two whose fsync was running (power cut). The
timer (witness.HeadTimer) republishes the newest head after a restart.

Writes (create, update, delete) do not come here: their events commit in the write's own
transaction (hook.AuditedRepository).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from server.audit.events import AuditFacts

# How long a new leader waits for requests of its process that are still in progress (their
# events join its batch). It waits only while such requests exist, and at most this long.
WINDOW = 0.002
MAX_GROUP = 256


@dataclass
class _Ticket:
    facts: Sequence[AuditFacts]
    wake: threading.Event = field(default_factory=threading.Event)  # done, or promoted to leader
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Append the events of concurrent requests in shared transactions (leader/follower).

    Each waiting thread sleeps on its own ticket and is woken once: when its batch is done, or
    when it is promoted to lead the next batch (the first ticket queued after the previous
    leader took its batch). No thread is woken only to go back to sleep.
    """

    def __init__(
        self,
        write: Callable[[Any, list[AuditFacts]], Any],
        sessions: Callable[[], Any],
        durable: Callable[[Any], None] | None = None,
        window: float = WINDOW,
    ) -> None:
        self._write = write  # (session, facts) -> token: one transaction, committed, or raise
        self._sessions = sessions
        self._durable = durable  # (token) -> None: wait until the batch's head is durable, or raise
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a leader gathering its batch waits here
        self._queue: list[_Ticket] = []
        self._leading = False
        self._expected = 0  # requests in progress that have not queued their events yet
        self.window = window
        self.batches = 0  # transactions written (for tests and benchmarks)
        self.records = 0  # events written (for tests and benchmarks)

    @property
    def waiting(self) -> int:
        """Requests whose events are queued for the next group, not yet taken by a leader (/metrics)."""
        return len(self._queue)

    def expect(self) -> None:
        """A request has started: a leader may wait (up to `window`) for its events."""
        with self._lock:
            self._expected += 1

    def unexpect(self) -> None:
        """A request that was expected will not queue events."""
        with self._lock:
            self._expected = max(0, self._expected - 1)
            self._arrived.notify()

    def write(self, facts: Sequence[AuditFacts], expected: bool = False) -> None:
        """Return once `facts` are committed to the chain; raise if they could not be.

        `expected`: this request was announced with expect() (its arrival ends that).
        """
        ticket = _Ticket(facts)
        with self._lock:
            self._queue.append(ticket)
            if expected:
                self._expected = max(0, self._expected - 1)
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._arrived.notify()
        if not lead:
            ticket.wake.wait()
        if not ticket.done:  # nobody led, or promoted: lead the next batch, this ticket in it
            self._lead()
        if ticket.error is not None:
            raise ticket.error

    def _lead(self) -> None:
        with self._lock:
            # Requests still in progress will queue soon: wait a little for them, so that one
            # transaction, head and fsync serve more of them (never when none is coming).
            deadline = time.monotonic() + self.window
            while self._expected > 0 and len(self._queue) < MAX_GROUP:
                left = deadline - time.monotonic()
                if left <= 0 or not self._arrived.wait(left):
                    break
            batch, self._queue = self._queue, []
        error: BaseException | None = None
        token: Any = None
        try:
            session = self._sessions()
            try:
                token = self._write(session, [f for t in batch for f in t.facts])
            finally:
                session.close()
            self.batches += 1
            self.records += sum(len(t.facts) for t in batch)
        except BaseException as exc:  # every request of the batch fails closed
            error = exc
        with self._lock:  # the next batch may start its transaction while this one's head is synced
            if self._queue:
                self._queue[0].wake.set()  # promoted (still "leading": no newcomer leads meanwhile)
            else:
                self._leading = False
        if error is None and self._durable is not None:
            try:
                self._durable(token)
            except BaseException as exc:
                error = exc
        for ticket in batch:
            ticket.error = error
            ticket.done = True
            ticket.wake.set()
