"""Audit overhead on reads: the same reads with the audit trail on and off (REHABFHIR_AUDIT).

    python bench/audit_overhead.py [--db sqlite|postgres|both] [--n 5000] [--concurrency 16]

Loads Patients and Observations once (audited), then serves the same database twice,
`REHABFHIR_AUDIT=on` (the default: every read appends an AuditEvent to the hash chain before
the response is sent) and `REHABFHIR_AUDIT=off` (benchmark-only switch), and reads every
Observation by id in random order. Prints reads/s, p50/p99 and the overhead. See bench/README.md.
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
def serve(database_url: str, audit: str, workers: int, workdir: Path) -> Iterator[int]:
    """Run this checkout's `rehabfhir serve` with REHABFHIR_AUDIT=audit; yield its port."""
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
                raise SystemExit(f"server exited; see {log.name}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{HOST}:{port}/metadata", timeout=5):
                    break
            time.sleep(0.25)
        yield port
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


def reads(port: int, ids: list[str], args: argparse.Namespace) -> loadgen.PhaseResult:
    """Warm up, then read every id once in random order."""
    spec = ("http", HOST, port)
    jobs = [("GET", f"/Observation/{i}", None) for i in ids]
    loadgen.run(spec, jobs[: 20 * args.concurrency], args.concurrency, 1)
    random.Random(7).shuffle(jobs)
    return loadgen.run(spec, jobs, args.concurrency, args.client_procs)


def audit_rows(database_url: str) -> int:
    """How many audit records the database holds."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        count = int(conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one())
    engine.dispose()
    return count


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


def run_db(kind: str, args: argparse.Namespace) -> list[tuple[str, str, loadgen.PhaseResult, int]]:
    """Load once, then read with auditing on and off (on twice, before and after, to see drift)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), args.pg_admin) as url:
        with serve(url, "on", args.workers, Path(tmp)) as port:
            bearer.authorize(port, url)
            ids = load(port, args.n, args.concurrency)
        for mode in ("on", "off", "on"):
            before = audit_rows(url)
            with serve(url, mode, args.workers, Path(tmp)) as port:
                bearer.authorize(port, url)
                result = reads(port, ids, args)
            out.append((kind, mode, result, audit_rows(url) - before))
            print(
                f"  {kind:<9} audit={mode:<3} {result.rate:8.0f} reads/s  p50 {result.percentile(50):6.2f} ms"
                f"  p99 {result.percentile(99):6.2f} ms  errors={result.errors}  audit rows +{out[-1][3]}",
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
        on = sum(r[2].rate for r in rows if r[1] == "on") / 2
        off = next(r[2].rate for r in rows if r[1] == "off")
        print(
            f"  {kind}: reads/s audited {on:.0f} vs unaudited {off:.0f} -> overhead {100 * (1 - on / off):.1f}%"  # noqa: E501
        )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
