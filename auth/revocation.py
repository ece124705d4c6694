"""Verified bearer tokens remembered per worker, and revocations pushed to every worker.

https://www.rfc-editor.org/rfc/rfc7009
https://www.postgresql.org/docs/current/sql-notify.html
https://www.sqlite.org/isolation.html

A FHIR request used to check its token's signature and claims and then query `auth_revocation`.
Now each worker keeps a `TokenCache`: an LRU of verified tokens keyed by a SHA-256 of the base
URL and the token (the token itself is never kept), bounded in size, an entry never used past
its token's `exp` nor once its signing key is retired. An entry holds what the request needs
(the AccessContext built from the claims). It is used without asking the database only while
the worker is sure it has heard of every revocation since the entry's revocation check:

- every revocation (RFC 7009 revoke, a replayed code or refresh token revoking its family) bumps
  `auth_revocation_generation` in its own transaction (`bump`), and on PostgreSQL also sends
  NOTIFY on `rehabfhir_revocation`, delivered when it commits;
- PostgreSQL (`PgWatch`): a listener thread per worker on its own connection (DATABASE_URL, or
  REHABFHIR_REVOCATION_LISTEN_URL) LISTENs and drops the whole cache on each notification; it
  proves delivery by a NOTIFY to itself on connecting and every 10 s (LISTEN through a
  transaction-mode pooler runs but delivers nothing); while it is not connected or its probe
  did not come back, the cache is not trusted (every request checks revocation in the database
  as before), and on every (re)connect the whole cache is dropped, since notifications may have
  been missed;
- SQLite (`SqliteWatch`): every request reads the counter with one tiny statement on its own
  connection (the first of its transaction, so the rest of the request sees the same snapshot);
  any change drops the cache.

Races: a request checks revocation at cache epoch E and stores its entry only if the cache was
not dropped meanwhile (epoch still E), so a revocation that commits during the check cannot
leave a stale entry behind. On SQLite a revocation takes effect at the next request of every
worker on the host; on PostgreSQL when the notification reaches the worker (it is sent at
commit; loopback and LAN delivery take well under a millisecond of network time, the listener
thread then has to be scheduled).
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from auth.models import AuthRevocationGeneration
from server.fhir.access import AccessContext

log = logging.getLogger("rehabfhir.auth.revocation")

CHANNEL = "rehabfhir_revocation"
APPLICATION_NAME = "rehabfhir-revocation-listener"  # the listener's connection in pg_stat_activity
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
PROBE_PREFIX = "probe:"
_WAKE_SECONDS = 1.0  # the listener looks at its stop flag this often
_PROBE_SECONDS = 10.0  # and proves delivery this often (a NOTIFY to itself; also notices a lost link)
_PROBE_TIMEOUT = 3.0  # a probe not back by then: the connection is dropped and nothing trusted
_GENERATION_SQL = "SELECT generation FROM auth_revocation_generation WHERE id = 1"
_BUMP = (
    sa.update(AuthRevocationGeneration)
    .where(AuthRevocationGeneration.id == 1)
    .values(generation=AuthRevocationGeneration.generation + 1)
    .returning(AuthRevocationGeneration.generation)
)


def bump(session: so.Session) -> None:
    """Count a revocation in the caller's write transaction (and NOTIFY every PostgreSQL listener)."""
    generation = session.execute(_BUMP).scalar()
    if generation is None:  # the row is gone (an emptied table): start again
        session.add(AuthRevocationGeneration(id=1, generation=1))
        session.flush()
        generation = 1
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_notify(CHANNEL, str(generation))))


def token_key(base: str, token: str) -> bytes:
    """The cache key of a token: SHA-256 of the base URL and the token (never the token itself)."""
    return hashlib.sha256(base.encode() + b"\0" + token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token gives a request, and what bounds how long it may be remembered."""

    context: AccessContext  # remote_addr is the request's, set per request
    kid: str
    exp: float
    jti: str
    family: str | None


class _Entry:
    __slots__ = ("epoch", "grant")

    def __init__(self, grant: Grant, epoch: int | None) -> None:
        self.grant, self.epoch = grant, epoch


class TokenCache:
    """A worker's LRU of verified tokens; `clear` drops all of them and starts a new epoch."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.epoch = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> tuple[Grant, int | None] | None:
        """The remembered grant and the epoch of its revocation check; None if absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.grant.exp <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.grant, entry.epoch

    def put(self, key: bytes, grant: Grant, epoch: int | None) -> None:
        """Remember a grant; `epoch` is the one its revocation check ran in (None: not to be trusted).

        A check from an epoch the cache has left (a revocation came in meanwhile) is not trusted.
        """
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                epoch = None
            self._entries[key] = _Entry(grant, epoch)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, key: bytes) -> None:
        """Drop one token."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every token and start a new epoch."""
        with self._lock:
            self._entries.clear()
            self.epoch += 1


class Watch:
    """How a worker hears of revocations. The base class never vouches: revocation is always queried."""

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache

    def sync(self, session: so.Session | None) -> int | None:
        """Bring the cache up to date; return the epoch a cache entry must carry to be trusted now."""
        return None

    def stop(self) -> None:
        """Stop listening (tests; a worker simply exits)."""


class SqliteWatch(Watch):
    """Read the generation counter on the request's connection; a change drops the cache."""

    def __init__(self, cache: TokenCache) -> None:
        super().__init__(cache)
        self.seen: int | None = None
        self._lock = threading.Lock()

    def sync(self, session: so.Session | None) -> int | None:
        if session is None:
            return None
        raw = session.connection().connection.driver_connection  # the transaction is begun
        row = raw.execute(_GENERATION_SQL).fetchone()  # type: ignore[union-attr]
        generation = int(row[0]) if row else 0
        with self._lock:
            if generation != self.seen:
                self.cache.clear()
                self.seen = generation
            return self.cache.epoch


def libpq_hosts(url: sa.URL) -> sa.URL:
    """SQLAlchemy's multi-host URL (`?host=pg-a:5432&host=pg-b:5432`) in libpq's form (`host=a,b port=p,p`).

    The listener connects with psycopg directly, and libpq reads `host=pg-b:5432` as a host name
    (docs/deploy.md suggests the multi-host form for pg_auto_failover). Other URLs are unchanged.
    """
    hosts = url.query.get("host")
    hosts = (hosts,) if isinstance(hosts, str) else tuple(hosts or ())
    split = [_host_port(h) for h in hosts]
    if all(port is None for _, port in split):
        return url
    default = str(url.port or 5432)
    return url.difference_update_query(["host", "port"]).update_query_dict(
        {"host": ",".join(h for h, _ in split), "port": ",".join(p or default for _, p in split)}
    )


def _host_port(host: str) -> tuple[str, str | None]:
    """`pg-a:5432` -> (pg-a, 5432); `[::1]:5432` -> (::1, 5432); `pg-a`, `::1`, a socket dir -> no port."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") and rest[1:].isdigit() else None
    name, sep, port = host.rpartition(":")
    if not sep or host.startswith("/") or ":" in name or not port.isdigit():
        return host, None  # no port, a bare IPv6 address, or a Unix socket directory
    return name, port


class PgWatch(Watch):
    """A listener thread per worker (started on first use in the process) on its own connection."""

    def __init__(self, cache: TokenCache, database_url: str | sa.URL) -> None:
        super().__init__(cache)
        url = libpq_hosts(sa.make_url(database_url).set(drivername="postgresql"))
        url = url.update_query_dict({"application_name": APPLICATION_NAME})
        self._conninfo = url.render_as_string(hide_password=False)
        self.listen_channel = CHANNEL
        self._failures = 0
        self.live = False
        self.notifications = 0
        self.connects = 0
        self._pid: int | None = None
        self._stop = threading.Event()
        self._connected = threading.Condition()
        self._fd: int | None = None

    def sync(self, session: so.Session | None) -> int | None:
        if self._pid != os.getpid():
            self._start()
        if not self.live or self._pending():
            return None
        return self.cache.epoch

    def _pending(self) -> bool:
        """Whether the listener's socket holds something not read yet (a notification on its way).

        One non-blocking select, no round trip: the request that arrives between the bytes and the
        listener thread's turn asks the database instead of trusting the cache.
        """
        fd = self._fd
        if fd is None:
            return True
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):  # closed meanwhile: the listener is reconnecting
            return True

    def _start(self) -> None:
        with self._connected:
            if self._pid == os.getpid():
                return
            self._pid, self.live = os.getpid(), False
            self._stop.clear()
            threading.Thread(target=self._run, name="rehabfhir-revocation-listener", daemon=True).start()

    def wait_live(self, timeout: float) -> bool:
        """Start the listener if needed and wait until it listens (tests, start-up)."""
        self.sync(None)
        with self._connected:
            return self._connected.wait_for(lambda: self.live, timeout)

    def stop(self) -> None:
        self._stop.set()  # the thread sees it within _WAKE_SECONDS and closes its connection
        self._set_live(False)

    def _set_live(self, live: bool) -> None:
        with self._connected:
            # Dropped both ways: before trusting again (notifications may have been missed) and
            # when the connection is lost (nothing is trusted until it is back).
            self.cache.clear()
            self.live = live
            self._connected.notify_all()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            say = log.warning if self._failures == 0 else log.debug  # once per outage, not every retry
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
            except Exception as exc:  # noqa: BLE001 - unreachable: retry, nothing trusted meanwhile
                if getattr(exc, "sqlstate", None) == "3D000" or "does not exist" in str(exc):
                    log.info("revocation listener stops: the database no longer exists")
                    break
                say("revocation listener cannot connect (%s); token cache not trusted", exc)
            else:
                try:
                    self._listen(conn)
                except Exception as exc:  # noqa: BLE001 - any failure: drop everything, reconnect
                    if not self._stop.is_set():
                        say("revocation listener lost its connection (%s); token cache not trusted", exc)
                finally:
                    self._fd = None  # distrusted before the socket is closed
                    self._set_live(False)
                    conn.close()
            self._stop.wait(_RETRY_SECONDS[min(self._failures, len(_RETRY_SECONDS) - 1)])
            self._failures += 1

    def _listen(self, conn: Any) -> None:
        conn.execute(f"LISTEN {self.listen_channel}")
        self._fd = conn.fileno()
        self._probe(conn)  # delivery proven before anything is trusted
        self.connects += 1
        self._failures = 0
        self._set_live(True)  # dropped first: notifications may have been missed while away
        last = time.monotonic()
        while not self._stop.is_set():
            self._receive(conn, _WAKE_SECONDS)
            if time.monotonic() - last >= _PROBE_SECONDS:
                self._probe(conn)
                last = time.monotonic()

    def _receive(self, conn: Any, timeout: float, probe: str | None = None) -> bool:
        """Handle what arrives within `timeout`; return whether `probe` came back."""
        back = False
        for note in conn.notifies(timeout=max(0.0, timeout), stop_after=1 if probe else None):
            if note.payload.startswith(PROBE_PREFIX):  # a listener's probe (another worker's: ignored)
                back = back or note.payload == probe
            else:
                self.notifications += 1
                self.cache.clear()
        return back

    def _probe(self, conn: Any) -> None:
        """NOTIFY ourselves and wait for it: LISTEN through a transaction-mode pooler runs but never
        delivers, and a cache trusted on such a connection would miss every revocation."""
        probe = PROBE_PREFIX + uuid.uuid4().hex
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, probe))
        deadline = time.monotonic() + _PROBE_TIMEOUT
        while time.monotonic() < deadline and not self._stop.is_set():
            if self._receive(conn, min(_WAKE_SECONDS, deadline - time.monotonic()), probe):
                return
        raise ConnectionError(
            f"the listener's own NOTIFY did not come back within {_PROBE_TIMEOUT:g} s: notifications"
            " are not delivered on this connection (through a transaction-mode pool? set"
            " REHABFHIR_REVOCATION_LISTEN_URL to a direct or session-mode URL)"
        )


def watch_for(cache: TokenCache, engine: sa.Engine, listen_url: str = "") -> Watch:
    """The watch that fits the database (PostgreSQL: listening on `listen_url`, else the engine's)."""
    if engine.dialect.name == "postgresql":
        return PgWatch(cache, listen_url or engine.url)
    if engine.dialect.name == "sqlite":
        return SqliteWatch(cache)
    return Watch(cache)
