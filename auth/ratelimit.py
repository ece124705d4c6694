"""Rate limits in the database: sign-in password checks and failed token-endpoint requests.

https://www.rfc-editor.org/rfc/rfc6585#section-4

`LoginLimiter` reserves before it checks: each sign-in first increments a counter per user and
per address for the current fixed window, in one atomic upsert each
(`INSERT ... ON CONFLICT DO UPDATE ... RETURNING count`, PostgreSQL and SQLite >= 3.35), and
the password is checked only if every count is still within its limit. The counters live in
`auth_login_attempt`, so all workers on all hosts share them, and concurrent guesses cannot
all pass a check before any of them is recorded. A successful sign-in gives its slot back.

`FailureLimiter` counts failed token-endpoint requests per address in the same table (keys
"token:<address>"), so they too are shared by all workers on all hosts. Only a failure writes (the
same upsert); every request first reads its address's row (client secrets and assertions are not
guessable the way passwords are, so a check that is not a reservation is enough: it slows down a
misbehaving client).
"""

from __future__ import annotations

import random
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import orm as so
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from auth.keys import now
from auth.models import AuthLoginAttempt
from server.store.session import begin_write

_T = AuthLoginAttempt.__table__
_LOGIN_PREFIXES = ("user:", "addr:")


def _prefixed(prefixes: tuple[str, ...]) -> sa.ColumnElement[bool]:
    return sa.or_(*(_T.c.key.startswith(p, autoescape=True) for p in prefixes))


def _forget(session: so.Session, prefixes: str | tuple[str, ...], age: float) -> None:
    """Delete the counters under `prefixes` whose window opened more than `age` seconds ago."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    old = _T.c.window_start < now() - timedelta(seconds=age)
    session.execute(sa.delete(_T).where(old, _prefixed(prefixes)))


def _upsert(session: so.Session, key: str, window: float) -> tuple[int, float]:
    """Count one more for `key` in its current window (a new window once it ended), atomically.

    Returns the count now and the seconds until the window ends (at least 1, at most `window`).
    """
    current = now()
    expired = _T.c.window_start <= current - timedelta(seconds=window)
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
    left = (start + timedelta(seconds=window) - current).total_seconds()
    return int(count), min(window, max(1.0, left))


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
            (_LOGIN_PREFIXES[0] + username.strip().lower()[:280], self.per_user),
            (_LOGIN_PREFIXES[1] + (address or "")[:280], self.per_address),
        ]

    def reserve(self, username: str, address: str | None) -> float:
        """Reserve one password check; return 0 if it may go ahead, else the seconds to wait."""
        with self.sessions() as session:
            begin_write(session)
            if random.random() < 0.02:  # keep the table small: forget long-finished windows
                _forget(session, _LOGIN_PREFIXES, self.window * 10)
            wait = 0.0
            for key, limit in self._keys(username, address):
                count, retry = _upsert(session, key, self.window)
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
        """Forget every sign-in counter (tests)."""
        with self.sessions() as session:
            begin_write(session)
            session.execute(sa.delete(_T).where(_prefixed(_LOGIN_PREFIXES)))
            session.commit()


class FailureLimiter:
    """At most `limit` failures per key in a fixed window of `window` seconds, in the database.

    Counted in the same table as sign-ins (keys "<prefix><name>", e.g. "token:10.0.0.7|<client id>"), so
    every worker on every host shares them. Only failures write: `blocked` is one SELECT by primary
    key, `fail` the atomic upsert. A check is not a reservation (unlike `LoginLimiter`), so requests
    racing past `blocked` at the same moment may each fail once more than the limit allows; a client
    secret or signed assertion is not guessed the way a password is, so that is enough to slow down
    a misbehaving client.
    """

    def __init__(
        self,
        sessions: so.sessionmaker[so.Session],
        limit: int = 10,
        window: float = 60.0,
        prefix: str = "token:",
    ) -> None:
        self.sessions = sessions
        self.limit, self.window, self.prefix = limit, window, prefix

    def _key(self, name: str) -> str:
        return (self.prefix + name)[:300]

    def blocked(self, name: str) -> float:
        """Return the seconds to wait before `name` (an address) may try again (0 when allowed)."""
        with self.sessions() as session:
            row = session.execute(
                sa.select(_T.c.count, _T.c.window_start).where(_T.c.key == self._key(name))
            ).one_or_none()
        if row is None or row.count < self.limit:
            return 0.0
        left = (row.window_start + timedelta(seconds=self.window) - now()).total_seconds()
        return 0.0 if left <= 0 else min(self.window, max(1.0, left))

    def fail(self, name: str) -> None:
        """Record a failed attempt."""
        with self.sessions() as session:
            begin_write(session)
            if random.random() < 0.02:  # keep the table small: forget long-finished windows
                _forget(session, self.prefix, self.window * 10)
            _upsert(session, self._key(name), self.window)
            session.commit()

    def reset(self) -> None:
        """Forget every failure (tests)."""
        with self.sessions() as session:
            begin_write(session)
            session.execute(sa.delete(_T).where(_T.c.key.startswith(self.prefix, autoescape=True)))
            session.commit()
