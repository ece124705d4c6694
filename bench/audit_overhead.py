"""Audit overhead on reads: the same reads with the audit trail on and off (REHABFHIR_AUDIT).

    python bench/audit_overhead.py [--db sqlite|postgres|both] [--n 5000] [--concurrency 16]

Loads Patients and Observations once (audited), then serves the same database twice,
`REHABFHIR_AUDIT=on` (the default: every read appends an AuditEvent to the hash chain before
the response is sent) and `REHABFHIR_AUDIT=off` (benchmark-only switch), and reads every
Observation by id in random order. Prints reads/s, p50/p99, server CPU per read (all gunicorn
processes, from /proc; PostgreSQL's backends too on PostgreSQL), the load average during the
reads, and the overhead. On a shared machine the CPU per read is the figure to compare: the
rate follows whatever else runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bearer  # noqa: E402
import core
import loadgen
import orjson
import pt_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(database_url: str, audit: str, workers: int, workdir: Path) -> Iterator[tuple[int, int]]:
    """Run this checkout's `rehabfhir serve` with REHABFHIR_AUDIT=audit; yield its port and pid."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REHABFHIR_AUDIT": audit, "PYTHONPATH": str(REPO)}
    # The audit witness file goes to the temp directory, not into the checkout (cwd).
    witness = Path(tempfile.gettempdir()) / f"rehabfhir-bench-witness-{abs(hash(database_url))}.jsonl"
    env.setdefault("REHABFHIR_AUDIT_WITNESS", str(witness))
    log = (workdir / f"server-{audit}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for _ in range(400):
            if proc.poll() is not None:
                log.close()
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                raise SystemExit(f"server exited; {log.name} ends:\n{tail}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{HOST}:{port}/metadata", timeout=5):
                    break
            time.sleep(0.25)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _posts(type_: str, bodies: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    return [("POST", f"/{type_}", orjson.dumps(b)) for b in bodies]


def load(port: int, n: int, concurrency: int) -> list[str]:
    """Create n/10 Patients and n Observations; return the Observation ids."""
    spec, rng = ("http", HOST, port), random.Random(42)
    made = loadgen.run(
        spec, _posts("Patient", [pt_data.patient(rng, i) for i in range(max(10, n // 10))]), concurrency, 2
    )
    pids = [v for v in made.outputs.values() if v]
    if not pids:
        raise SystemExit(f"creates failed: {made.first_error}")
    bodies = [pt_data.observation(rng, rng.choice(pids)) for _ in range(n)]
    made = loadgen.run(spec, _posts("Observation", bodies), concurrency, 2)
    return [v for v in made.outputs.values() if v]


class Reads:
    """One read phase: the load generator's result, CPU ms per read and the load average."""

    def __init__(self, result: loadgen.PhaseResult, server_ms: float, pg_ms: float, load: float) -> None:
        self.result, self.server_ms, self.pg_ms, self.load = result, server_ms, pg_ms, load


def reads(port: int, pid: int, ids: list[str], args: argparse.Namespace, pg: bool) -> Reads:
    """Warm up, then read every id once in random order (server CPU measured over the reads)."""
    spec = ("http", HOST, port)
    jobs = [("GET", f"/Observation/{i}", None) for i in ids]
    loadgen.run(spec, jobs[: 20 * args.concurrency], args.concurrency, 1)
    random.Random(7).shuffle(jobs)
    s0, p0 = core._cpu_of(root=pid), core._cpu_of(comm="postgres") if pg else 0.0
    result = loadgen.run(spec, jobs, args.concurrency, args.client_procs)
    ok = max(1, result.n - result.errors)
    server_ms = (core._cpu_of(root=pid) - s0) / ok * 1000
    pg_ms = (core._cpu_of(comm="postgres") - p0) / ok * 1000 if pg else 0.0
    return Reads(result, server_ms, pg_ms, os.getloadavg()[0])


def audit_rows(database_url: str) -> tuple[int, int]:
    """How many audit records and signed heads (one per group commit) the database holds."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        count = int(conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one())
        heads = int(conn.execute(sa.text("SELECT count(*) FROM audit_checkpoint")).scalar_one())
    engine.dispose()
    return count, heads


@contextlib.contextmanager
def database(kind: str, workdir: Path, admin_url: str) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'audit-bench.db'}"
        return
    import psycopg

    name = f"rehabfhir_audit_bench_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_db(kind: str, args: argparse.Namespace) -> list[tuple[str, str, Reads, int]]:
    """Load once, then read with auditing on and off (on twice, before and after, to see drift)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), args.pg_admin) as url:
        with serve(url, "on", args.workers, Path(tmp)) as (port, _):
            bearer.authorize(port, url)
            ids = load(port, args.n, args.concurrency)
        for mode in ("on", "off", "on"):
            before = audit_rows(url)
            with serve(url, mode, args.workers, Path(tmp)) as (port, pid):
                bearer.authorize(port, url)
                r = reads(port, pid, ids, args, kind == "postgres")
            after = audit_rows(url)
            rows, groups = after[0] - before[0], after[1] - before[1]
            out.append((kind, mode, r, rows))
            res = r.result
            pg = f" + pg {r.pg_ms:5.2f}" if kind == "postgres" else ""
            print(
                f"  {kind:<9} audit={mode:<3} {res.rate:8.0f} reads/s  p50 {res.percentile(50):6.2f} ms"
                f"  p99 {res.percentile(99):6.2f} ms  cpu/read {r.server_ms:5.2f} ms{pg}  load {r.load:4.1f}"
                f"  errors={res.errors}  audit rows +{rows} in {groups} groups",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the overhead."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--n", type=int, default=5000, help="Observations (each read once per mode)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pg-admin", default=os.environ.get("BENCH_PG_ADMIN", PG_ADMIN_DEFAULT))
    args = p.parse_args(argv)
    print(
        f"audit overhead: n={args.n} concurrency={args.concurrency} workers={args.workers} cpus={os.cpu_count()}"  # noqa: E501
    )
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    for kind in kinds:
        rows = run_db(kind, args)
        on = sum(r[2].result.rate for r in rows if r[1] == "on") / 2
        off = next(r[2].result.rate for r in rows if r[1] == "off")
        cpu_on = sum(r[2].server_ms + r[2].pg_ms for r in rows if r[1] == "on") / 2
        cpu_off = next(r[2].server_ms + r[2].pg_ms for r in rows if r[1] == "off")
        print(
            f"  {kind}: reads/s audited {on:.0f} vs unaudited {off:.0f}"
            f" -> overhead {100 * (1 - on / off):.1f}%;"
            f" CPU/read {cpu_on:.2f} vs {cpu_off:.2f} ms -> +{100 * (cpu_on / cpu_off - 1):.1f}%"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
