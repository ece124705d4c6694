"""PostgreSQL read replicas: how far behind each one is, which one a read may use, commit positions.

A monitor thread (one per process, started on first use so it survives gunicorn's fork) samples
the primary's WAL position (`pg_current_wal_lsn()`) and each replica's replayed position
(`pg_last_wal_replay_lsn()`) every `poll` seconds. A replica that has replayed the primary's
position of time t holds every commit made before t, so `now - t` (t: the newest primary sample it
has replayed) is an upper bound of its staleness: that is its lag, and a read may use it while
the lag is under `max_lag`. Unlike `now() - pg_last_xact_replay_timestamp()` it does not grow on
an idle primary, and unlike comparing received with replayed positions it does notice a replica
whose stream from the primary stopped.

Read-your-writes: a write's response carries the primary's position after its commit
(`commit_position`); a read naming a position uses only a replica that has replayed it (asking
the replica itself when the last sample is older than the write), else the primary.
A replica that cannot be reached is skipped (its engine pings connections on checkout) and the
read goes to the primary; the monitor takes it back when it answers again.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.session import is_connection_lost
from server.store.session import make_engine
from server.store.session import make_session_factory

log = logging.getLogger("rehabfhir.replicas")

_REPLAYED = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
)
_CURRENT = "SELECT pg_current_wal_lsn()::text"
_SAMPLES = 512  # primary samples kept: at 0.25 s a poll, two minutes of history


class ReplicaConfigError(ValueError):
    """Replicas configured where they cannot work (the primary is not PostgreSQL, or a URL is not)."""


def parse_position(text: str | None) -> int | None:
    """A WAL position ("16/B374D848", as PostgreSQL writes a pg_lsn) as a number; None if it is not one."""
    if not text:
        return None
    high, sep, low = text.strip().partition("/")
    if not sep or not (0 < len(high) <= 8 and 0 < len(low) <= 8):
        return None
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        return None


def format_position(position: int) -> str:
    """A WAL position as PostgreSQL writes it."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def commit_position(engine: sa.Engine) -> str:
    """The primary's current WAL position: after a write's commit, at or past that commit."""
    with engine.connect() as conn:
        return str(conn.exec_driver_sql(_CURRENT).scalar_one())


def replica_name(url: sa.URL) -> str:
    """host:port of a replica for logs and metrics (several, comma-separated, for a multi-host URL)."""
    if url.host:
        return f"{url.host}:{url.port or 5432}"
    hosts = url.query.get("host") or ()
    return ",".join([hosts] if isinstance(hosts, str) else hosts) or "localhost:5432"


@dataclass
class Replica:
    """One replica: its engine and sessions, and what the monitor last saw of it."""

    name: str
    engine: sa.Engine
    sessions: so.sessionmaker[so.Session]
    up: bool = False
    replayed: int | None = None
    caught_up_at: float | None = None  # monotonic time of the newest primary sample it has replayed


@dataclass(eq=False)  # hashable: the app's Prometheus registry keeps it as a collector
class Replicas:
    """The replicas of one primary, their lag, and the choice of one for a read."""

    primary: sa.Engine
    replicas: list[Replica]
    max_lag: float = 1.0
    poll: float = 0.25
    clock: Callable[[], float] = time.monotonic
    routed: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    _samples: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=_SAMPLES)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _routed_lock: threading.Lock = field(default_factory=threading.Lock)  # request threads count reads
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _pid: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def connect(cls, primary: sa.Engine, urls: Sequence[str], max_lag: float, poll: float) -> Replicas:
        """Engines for the replica URLs (PostgreSQL only, as the primary must be)."""
        if primary.dialect.name != "postgresql":
            raise ReplicaConfigError("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL")
        replicas = []
        for url in urls:
            # Pre-ping: a replica that went away is noticed when its connection is checked out, so
            # the read falls back to the primary instead of failing (one round trip per read).
            engine = make_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
            if engine.dialect.name != "postgresql":
                raise ReplicaConfigError(f"replica {engine.url.render_as_string()} is not PostgreSQL")
            name = replica_name(engine.url)
            replicas.append(Replica(name, engine, make_session_factory(engine)))
        return cls(primary, replicas, max_lag, poll)

    # -- the monitor ------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start this process's monitor thread (again after a fork), polling once first."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self.poll_once()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="rehabfhir-replicas", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(self.poll) and self._pid == pid:
            try:
                self.poll_once()
            except Exception:  # never let the monitor die: replicas look stale meanwhile
                log.warning("replica poll failed", exc_info=True)

    def stop(self) -> None:
        """Stop the monitor and close the replicas' connections."""
        self._stop.set()
        for replica in self.replicas:
            replica.engine.dispose()

    def poll_once(self) -> None:
        """Sample the primary's position, then each replica's replayed position."""
        try:
            sample = (self.clock(), self._position(self.primary, _CURRENT))
            self._samples.append(sample)
        except Exception as exc:  # the primary is away: no new sample, so the replicas' lag grows
            log.warning("replica monitor: primary position unavailable: %s", type(exc).__name__)
        for replica in self.replicas:
            try:
                self._saw(replica, self._position(replica.engine, _REPLAYED))
            except Exception as exc:
                if replica.up:
                    log.warning("replica %s unreachable: %s", replica.name, type(exc).__name__)
                replica.up = False

    @staticmethod
    def _position(engine: sa.Engine, sql: str) -> int:
        with engine.connect() as conn:
            position = parse_position(conn.exec_driver_sql(sql).scalar_one())
        if position is None:
            raise ValueError("no WAL position")
        return position

    def _saw(self, replica: Replica, replayed: int) -> None:
        replica.up = True
        replica.replayed = max(replayed, replica.replayed or 0)
        for at, position in reversed(self._samples):
            if position <= replayed:
                replica.caught_up_at = max(at, replica.caught_up_at or at)
                break

    def lag(self, replica: Replica) -> float | None:
        """Seconds the replica may be behind the primary now (None: unknown or unreachable)."""
        if not replica.up or replica.caught_up_at is None:
            return None
        return max(0.0, self.clock() - replica.caught_up_at)

    # -- choosing ---------------------------------------------------------------------------

    def read_session(self, position: int | None) -> tuple[so.Session | None, str]:
        """A session on a fresh replica that has replayed `position` (if given), and the reason.

        None (and why) when the read must go to the primary: no replica within the lag bound,
        none has replayed the position, or the chosen one cannot be reached.
        """
        session, reason, replica = self._choose(position)
        return self._count(session, reason, replica)

    def _choose(self, position: int | None) -> tuple[so.Session | None, str, Replica | None]:
        """read_session without counting the choice (a waiting export counts only its last try)."""
        self.ensure_started()
        fresh = [r for r in self.replicas if (lag := self.lag(r)) is not None and lag <= self.max_lag]
        if not fresh:
            return None, "stale", None
        start = next(self._turn)
        ordered = [fresh[(start + i) % len(fresh)] for i in range(len(fresh))]
        reason = "position"
        for replica in ordered:
            session = replica.sessions()
            try:
                if position is None or (replica.replayed or 0) >= position:
                    session.connection()  # checks out (and pings) a connection now
                    return session, "fresh", replica
                replayed = parse_position(session.execute(sa.text(_REPLAYED)).scalar_one())
                if replayed is not None and replayed >= position:
                    replica.replayed = max(replayed, replica.replayed or 0)
                    return session, "position", replica
            except Exception as exc:
                if not is_connection_lost(exc):
                    session.close()
                    raise
                log.warning("replica %s unreachable, reading from the primary", replica.name)
                replica.up = False
                reason = "unreachable"
            session.close()
        return None, reason, None

    def export_session(self) -> so.Session | None:
        """A session for an export job's reads: a fresh replica that has replayed the kick-off, else None.

        Called after the job is claimed, so the primary's position now is past the kick-off's commit.
        A replica just behind it is given up to the lag bound to catch up.
        """
        try:
            position = parse_position(commit_position(self.primary))
        except Exception:  # the primary is away: the claim's own session will say so
            return None
        deadline = self.clock() + self.max_lag
        while True:
            session, reason, replica = self._choose(position)
            if session is not None or reason != "position" or self.clock() >= deadline:
                return self._count(session, reason, replica)[0]  # one job, one counted read
            time.sleep(min(self.poll, 0.05))

    def _count(
        self, session: so.Session | None, reason: str, replica: Replica | None = None
    ) -> tuple[so.Session | None, str]:
        self.count_read(replica.name if replica else "primary", reason)
        return session, reason

    def count_read(self, target: str, reason: str) -> None:
        """Count one read served by `target` ("primary" or a replica's name) for `reason`.

        Under a lock: a worker's request threads count at once, and `+=` on a Counter is a
        read-modify-write that would lose counts between them.
        """
        with self._routed_lock:
            self.routed[(target, reason)] += 1

    def routed_counts(self) -> dict[tuple[str, str], int]:
        """A copy of the read counts (safe to iterate while requests go on counting)."""
        with self._routed_lock:
            return dict(self.routed)

    # -- metrics (a Prometheus collector: the app's registry calls collect at scrape time) -------

    def collect(self) -> Iterator[Any]:
        """Replica lag and up, and reads by where they went and why."""
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.core import GaugeMetricFamily

        lag = GaugeMetricFamily(
            "rehabfhir_db_replica_lag_seconds",
            "Upper bound of how far each read replica is behind the primary (absent: unknown)",
            labels=["replica"],
        )
        up = GaugeMetricFamily(
            "rehabfhir_db_replica_up", "1 if the replica answered the last poll", labels=["replica"]
        )
        for replica in self.replicas:
            seconds = self.lag(replica)
            if seconds is not None:
                lag.add_metric([replica.name], seconds)
            up.add_metric([replica.name], 1 if replica.up else 0)
        yield lag
        yield up
        reads = CounterMetricFamily(
            "rehabfhir_db_reads",
            "Reads (read, vread, search, history, $everything, export jobs) by the database that served"
            " them and why",
            labels=["target", "reason"],
        )
        for (target, reason), count in sorted(self.routed_counts().items()):
            reads.add_metric([target, reason], count)
        yield reads
