"""Rate limits: sign-in password checks (in the database) and failed token requests (per worker).

https://www.rfc-editor.org/rfc/rfc6585#section-4

`LoginLimiter` reserves before it checks: each sign-in first increments a counter per user and
per address for the current fixed window, in one atomic upsert each
(`INSERT ... ON CONFLICT DO UPDATE ... RETURNING count`, PostgreSQL and SQLite >= 3.35), and
the password is checked only if every count is still within its limit. The counters live in
`auth_login_attempt`, so all workers on all hosts share them, and concurrent guesses cannot
all pass a check before any of them is recorded. A successful sign-in gives its slot back.

`FailureLimiter` counts failed token-endpoint requests per worker (client secrets and
assertions are not guessable the way passwords are; it only slows down a misbehaving client).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import orm as so
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from auth.keys import now
from auth.models import AuthLoginAttempt
from server.store.session import begin_write

_T = AuthLoginAttempt.__table__


class LoginLimiter:
    """At most `per_user` password checks per username and `per_address` per address per window."""

    def __init__(
        self,
        sessions: so.sessionmaker[so.Session],
        per_user: int = 5,
        per_address: int = 20,
        window: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.per_user, self.per_address, self.window = per_user, per_address, window

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        # Always the same order (user, then address): concurrent transactions lock rows alike.
        return [
            ("user:" + username.strip().lower()[:280], self.per_user),
            ("addr:" + (address or "")[:280], self.per_address),
        ]

    def _upsert(self, session: so.Session, key: str) -> tuple[int, float]:
        current = now()
        expired = _T.c.window_start <= current - timedelta(seconds=self.window)
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        stmt = insert(_T).values(key=key, window_start=current, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_T.c.key],
            set_={
                "count": sa.case((expired, 1), else_=_T.c.count + 1),
                "window_start": sa.case((expired, current), else_=_T.c.window_start),
            },
        ).returning(_T.c.count, _T.c.window_start)
        count, start = session.execute(stmt).one()
        # `current` was read before this row's lock was granted: another reservation may have
        # opened the window a moment later, so the wait is capped at one window.
        left = (start + timedelta(seconds=self.window) - current).total_seconds()
        return int(count), min(self.window, max(1.0, left))

    def reserve(self, username: str, address: str | None) -> float:
        """Reserve one password check; return 0 if it may go ahead, else the seconds to wait."""
        with self.sessions() as session:
            begin_write(session)
            if random.random() < 0.02:  # keep the table small: forget long-finished windows
                session.execute(
                    sa.delete(_T).where(_T.c.window_start < now() - timedelta(seconds=self.window * 10))
                )
            wait = 0.0
            for key, limit in self._keys(username, address):
                count, retry = self._upsert(session, key)
                if count > limit:
                    wait = retry
                    break
            session.commit()
        return wait

    def release(self, username: str, address: str | None) -> None:
        """Give a reserved check back (the password was right)."""
        keys = [k for k, _ in self._keys(username, address)]
        with self.sessions() as session:
            begin_write(session)
            session.execute(
                sa.update(_T).where(_T.c.key.in_(keys), _T.c.count > 0).values(count=_T.c.count - 1)
            )
            session.commit()

    def reset(self) -> None:
        """Forget every counter (tests)."""
        with self.sessions() as session:
            begin_write(session)
            session.execute(sa.delete(_T))
            session.commit()


class FailureLimiter:
    """Count failures per key over `window` seconds; `blocked` once `limit` is reached (per worker)."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, current: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= current - self.window:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> float:
        """Return the seconds to wait before `key` may try again (0 when allowed)."""
        current = time.monotonic()
        with self._lock:
            hits = self._prune(key, current)
            if len(hits) < self.limit:
                return 0.0
            return max(1.0, hits[0] + self.window - current)

    def fail(self, key: str) -> None:
        """Record a failed attempt."""
        current = time.monotonic()
        with self._lock:
            self._prune(key, current).append(current)
            if len(self._hits) > 100_000:  # bound memory under a spray of keys
                self._hits = {k: v for k, v in self._hits.items() if v}

    def reset(self) -> None:
        """Forget every failure (tests)."""
        with self._lock:
            self._hits.clear()
