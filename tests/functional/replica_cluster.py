"""A streaming replica of the test PostgreSQL cluster, on loopback, for tests and benchmarks.

`streaming_replica()` takes a base backup of the cluster at TEST_DATABASE_URL's host and port
(`pg_basebackup --write-recovery-conf`), starts it as a hot standby on a free port with its own
data directory in a temporary directory, and stops and removes it afterwards. PostgreSQL refuses
to run as root: when the tests run as root, the server programs run as the `postgres` OS user
(`runuser -u postgres --`).

Replication connections need a `replication` line in the primary's pg_hba.conf (`all` does not
cover them). When the cluster refuses one from 127.0.0.1, `allow_replication()` adds
`host replication all 127.0.0.1/32 trust` to its hba_file and reloads (as root or the file's
owner, as CI runs); without the right to do that it fails saying which line is missing.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import psycopg
import sqlalchemy as sa

BIN = pathlib.Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
BASEBACKUP = (
    "/usr/bin/pg_basebackup" if os.path.exists("/usr/bin/pg_basebackup") else str(BIN / "pg_basebackup")
)
REPLICATION_LINE = "host replication all 127.0.0.1/32 trust"
# Hot standby needs these at least as high as on the primary.
_AT_LEAST_PRIMARY = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _conninfo(url: sa.URL, **extra: str) -> str:
    parts = {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "user": url.username or "postgres",
    }
    return " ".join(f"{k}={v}" for k, v in {**parts, **extra}.items())


def _replication_allowed(url: sa.URL) -> bool:
    try:
        psycopg.connect(_conninfo(url, replication="true", dbname="replication"), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        if "pg_hba.conf" in str(exc):
            return False
        raise
    return True


def allow_replication(url: sa.URL) -> None:
    """Make sure the cluster takes replication connections from 127.0.0.1 (adding the hba line if not)."""
    if _replication_allowed(url):
        return
    with psycopg.connect(_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        hba_file = str(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        try:
            with open(hba_file, "a", encoding="utf-8") as handle:
                handle.write(f"\n# rehabfhir tests: streaming replica on loopback\n{REPLICATION_LINE}\n")
        except OSError as exc:
            raise RuntimeError(
                f"PostgreSQL refuses replication connections from 127.0.0.1: add `{REPLICATION_LINE}` to"
                f" {hba_file} and reload (SELECT pg_reload_conf()); this process cannot write it ({exc})"
            ) from exc
        conn.execute("SELECT pg_reload_conf()")
    for _ in range(50):  # the postmaster rereads the file right after the signal
        if _replication_allowed(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"added `{REPLICATION_LINE}` to {hba_file} but replication is still refused")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def streaming_replica(primary_url: str) -> Iterator[Replica]:
    """Start a hot standby of primary_url's cluster on a free loopback port; stop and remove it afterwards."""
    url = sa.make_url(primary_url)
    allow_replication(url)
    root = pathlib.Path(tempfile.mkdtemp(prefix="rehabfhir-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    replica = Replica(root, _free_port())
    try:
        subprocess.run(
            _as_postgres(
                [BASEBACKUP, "-d", _conninfo(url), "-D", str(replica.data), "--wal-method=stream"]
                + ["--write-recovery-conf", "--checkpoint=fast", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        replica.configure(url)
        replica.start()
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(root, ignore_errors=True)


class Replica:
    """A standby cluster in a temporary directory."""

    def __init__(self, root: pathlib.Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.log = root / "server.log"

    def url(self, database: str) -> str:
        """A psycopg URL for a database on this replica."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def configure(self, primary: sa.URL) -> None:
        """Its own postgresql.conf and pg_hba.conf (Debian keeps the primary's outside the data directory)."""
        with psycopg.connect(_conninfo(primary, dbname="postgres")) as conn:
            floors = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in _AT_LEAST_PRIMARY}  # type: ignore[index]
        lines = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            f"hba_file = '{self.data / 'pg_hba.conf'}'",
            f"ident_file = '{self.data / 'pg_ident.conf'}'",
            "hot_standby = on",
            "shared_buffers = 32MB",
            "fsync = off",
            "hot_standby_feedback = on",
            "logging_collector = off",
            *(f"{name} = {value}" for name, value in floors.items()),
        ]
        files = {
            "postgresql.conf": "\n".join(lines) + "\n",
            "pg_hba.conf": "local all all trust\nhost all all 127.0.0.1/32 trust\n",
            "pg_ident.conf": "",
        }
        for name, text in files.items():
            path = self.data / name
            path.write_text(text, encoding="utf-8")
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        self._ctl("-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop it now (no-op when it is not running)."""
        if (self.data / "postmaster.pid").exists():
            self._ctl("-m", "immediate", "-w", "stop")

    def replayed(self) -> str:
        """Its replayed WAL position."""
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres") as conn:
            return str(conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0])  # type: ignore[index]
