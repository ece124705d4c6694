"""Core-interaction benchmark: create / read / update of PT Observations against floors.

    python bench/core.py [--db sqlite|postgres|both] [--n 10000] [--concurrency 16]

Starts `rehabfhir serve --workers 2` on a fresh SQLite file and a fresh PostgreSQL database
(both dropped afterwards), drives it from separate load-generator processes, and prints one
table: rates, p50/p99 latency, and ratios to the floors measured in the same run (a constant
1 KB Flask route under the same gunicorn, and raw single-row INSERT / SELECT by primary key).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bearer
import loadgen
import orjson
import pt_data
from validation_stages import rehab_finding

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
ROW_1KB = orjson.dumps({"resourceType": "Basic", "text": "x" * 980}).decode()
GOAL_READ_VS_FLOOR = 0.5
GOAL_PG_CREATES = 500.0
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Row:
    """One line of the table."""

    phase: str
    db: str
    result: loadgen.PhaseResult
    server_ms: float | None = None  # server CPU (all gunicorn processes) per operation
    pg_ms: float | None = None  # PostgreSQL CPU (all postgres processes) per operation
    ratio: float | None = None
    ratio_to: str = ""


# -- process CPU from /proc -------------------------------------------------------------------


def _proc_stats() -> Iterator[tuple[int, int, str, float]]:
    """Yield (pid, ppid, comm, cpu seconds) of every readable process."""
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        # utime + stime, plus cutime + cstime: children already reaped (postgres backends that
        # closed during the phase) are counted in their parent.
        yield int(entry.name), int(fields[1]), comm, sum(int(f) for f in fields[11:15]) / tick


def _cpu_of(root: int | None = None, comm: str | None = None) -> float:
    """CPU seconds of the process tree under `root`, or of every process named `comm`."""
    stats = list(_proc_stats())
    if comm is not None:
        return sum(cpu for _, _, c, cpu in stats if c == comm)
    tree, grew = {root}, True
    while grew:
        before = len(tree)
        tree |= {pid for pid, ppid, _, _ in stats if ppid in tree}
        grew = len(tree) != before
    return sum(cpu for pid, _, _, cpu in stats if pid in tree)


# -- servers and databases -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.25)
    raise SystemExit(f"server not ready after {timeout}s; see {log}")


@contextlib.contextmanager
def _serve(argv: list[str], ready_path: str, env: dict[str, str], workdir: Path) -> Iterator[tuple[int, int]]:
    """Start a server process on a free port; yield (port, pid); stop it (SIGTERM, then SIGKILL)."""
    port = _free_port()
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--host", HOST, "--port", str(port)],
            env={**os.environ, **env},
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(f"http://{HOST}:{port}{ready_path}", proc, log)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pg_admin(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def _pg_database(admin_url: str, name: str) -> Iterator[str]:
    """Create a fresh database; yield its URL; drop it."""
    _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- phases ---------------------------------------------------------------------------------


class Runner:
    """Runs phases with the run's concurrency and collects table rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[Row] = []
        self._auth: tuple[int, str] | None = None  # (port, database URL) of the FHIR server under test

    def phase(
        self,
        name: str,
        db: str,
        spec: tuple[Any, ...],
        jobs: list[Any],
        *,
        server_pid: int | None = None,
        pg: bool = False,
    ) -> Row:
        """Run jobs, sampling server and PostgreSQL CPU around them; record and return the row."""
        if self._auth is not None and server_pid:
            bearer.authorize(*self._auth)  # a fresh token per phase (backend tokens live 5 minutes)
        print(f"  {name:<28} {db:<9} n={len(jobs):<6}", end=" ", flush=True)
        s0 = _cpu_of(root=server_pid) if server_pid else 0.0
        p0 = _cpu_of(comm="postgres") if pg else 0.0
        result = loadgen.run(spec, jobs, self.args.concurrency, self.args.client_procs)
        ok = max(1, result.n - result.errors)
        row = Row(name, db, result)
        if server_pid:
            row.server_ms = (_cpu_of(root=server_pid) - s0) / ok * 1000
        if pg:
            row.pg_ms = (_cpu_of(comm="postgres") - p0) / ok * 1000
        print(f"{result.rate:9.0f}/s  errors={result.errors}")
        if result.first_error:
            print(f"    first error: {result.first_error[:300]}")
        self.rows.append(row)
        return row

    def floor_http(self, workdir: Path) -> None:
        """Constant 1 KB Flask route under the FHIR server's gunicorn config."""
        argv = [sys.executable, str(HERE / "floor_app.py"), "--workers", str(self.args.workers)]
        with _serve(argv, "/floor", {}, workdir) as (port, pid):
            spec = ("http", HOST, port)
            loadgen.run(spec, [("GET", "/floor", None)] * 500, self.args.concurrency, self.args.client_procs)
            jobs = [("GET", "/floor", None)] * self.args.n
            self.phase("floor: GET 1 KB Flask", "-", spec, jobs, server_pid=pid)

    def floor_raw(self, db: str, spec: tuple[Any, ...], pg: bool) -> None:
        """Single-row INSERT of a ~1 KB JSON text row, then SELECT of each by primary key."""
        inserted = self.phase("floor: raw INSERT 1 KB", db, spec, [("insert", ROW_1KB)] * self.args.n, pg=pg)
        pks = [pk for pk in inserted.result.outputs.values() if pk is not None]
        random.Random(1).shuffle(pks)
        self.phase("floor: raw SELECT by pk", db, spec, [("select", pk) for pk in pks], pg=pg)

    def fhir(self, db: str, database_url: str, workdir: Path) -> None:
        """Create Patients, then create, read and update Observations on a fresh server."""
        argv = [_rehabfhir(), "serve", "--workers", str(self.args.workers)]
        pg = db == "postgres"
        with _serve(argv, "/metadata", {"DATABASE_URL": database_url}, workdir) as (port, pid):
            spec, rng, n = ("http", HOST, port), random.Random(42), self.args.n
            self._auth = (port, database_url)
            bearer.authorize(port, database_url)
            self._warm_up(spec, rng)
            patients = [pt_data.patient(rng, i) for i in range(max(self.args.concurrency, n // 10))]
            made = self.phase("create Patient", db, spec, _posts("Patient", patients), server_pid=pid, pg=pg)
            pids = [made.result.outputs[i] for i in sorted(made.result.outputs)]
            bodies = [pt_data.observation(rng, rng.choice(pids)) for _ in range(n)]
            posts = _posts("Observation", bodies)
            made = self.phase("create Observation", db, spec, posts, server_pid=pid, pg=pg)
            ids = {i: oid for i, oid in made.result.outputs.items() if oid}
            if self.args.profiled:
                findings = [rehab_finding(rng, rng.choice(pids)) for _ in range(n)]
                self.phase(
                    "create rehab Observation",
                    db,
                    spec,
                    _posts("Observation", findings),
                    server_pid=pid,
                    pg=pg,
                )
            order = list(ids)
            rng.shuffle(order)
            reads = [("GET", f"/Observation/{ids[i]}", None) for i in order]
            self.phase("read Observation", db, spec, reads, server_pid=pid, pg=pg)
            puts = [
                ("PUT", f"/Observation/{ids[i]}", orjson.dumps(pt_data.revised(bodies[i], ids[i], rng)))
                for i in order
            ]
            self.phase("update Observation", db, spec, puts, server_pid=pid, pg=pg)
            self._auth, loadgen.BEARER = None, ""

    def _warm_up(self, spec: tuple[Any, ...], rng: random.Random) -> None:
        # First requests per worker import and build the R4B models; keep that out of p99.
        k = 4 * self.args.concurrency
        made = loadgen.run(spec, _posts("Patient", [pt_data.patient(rng, -1)] * k), self.args.concurrency, 1)
        pid = next(v for v in made.outputs.values() if v)
        obs = [pt_data.observation(rng, pid) for _ in range(k)]
        made = loadgen.run(spec, _posts("Observation", obs), self.args.concurrency, 1)
        reads = [("GET", f"/Observation/{v}", None) for v in made.outputs.values() if v]
        loadgen.run(spec, reads, self.args.concurrency, 1)


def _posts(type_: str, bodies: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    return [("POST", f"/{type_}", orjson.dumps(b)) for b in bodies]


def _rehabfhir() -> str:
    found = shutil.which("rehabfhir", path=str(Path(sys.executable).parent)) or shutil.which("rehabfhir")
    if not found:
        raise SystemExit("rehabfhir is not installed in this Python's environment (pip install -e .)")
    return found


def _sqlite_floor_db(path: Path) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE floor_row (pk INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        conn.commit()


# -- report -----------------------------------------------------------------------------------


def _add_ratios(rows: list[Row]) -> None:
    """Reads against the HTTP floor; writes against the same database's raw INSERT."""
    rate = {(r.phase, r.db): r.result.rate for r in rows}
    floor_get = rate.get(("floor: GET 1 KB Flask", "-"))
    for row in rows:
        if row.phase.startswith("read") and floor_get:
            row.ratio, row.ratio_to = row.result.rate / floor_get, "floor GET"
        elif row.phase.startswith(("create", "update")):
            raw = rate.get(("floor: raw INSERT 1 KB", row.db))
            if raw:
                row.ratio, row.ratio_to = row.result.rate / raw, "raw INSERT"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    """Print every row, then the goals."""
    _add_ratios(rows)
    head = (
        f"{'phase':<26} {'db':<9} {'n':>6} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
        f"  {'ratio':>6} {'to':<10} {'client':>6} {'srv ms':>6} {'pg ms':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        res = r.result
        print(
            f"{r.phase:<26} {r.db:<9} {res.n:>6} {res.rate:>8.0f} {res.percentile(50):>7.1f}"
            f" {res.percentile(99):>7.1f} {res.errors:>4}  {_fmt(r.ratio, '>6.0%')} {r.ratio_to:<10}"
            f" {res.client_cpu / res.wall if res.wall else 0:>6.2f} {_fmt(r.server_ms, '>6.2f')}"
            f" {_fmt(r.pg_ms, '>6.2f')}"
        )
    print(
        "\nclient = load-generator CPU cores busy; srv ms / pg ms = CPU milliseconds per operation"
        "\nspent in all gunicorn processes / all postgres processes (from /proc)."
    )
    _print_goals(rows)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _print_goals(rows: list[Row]) -> None:
    print("\nGoals")
    for r in rows:
        if r.phase == "read Observation" and r.ratio is not None:
            verdict = "PASS" if r.ratio >= GOAL_READ_VS_FLOOR else "FAIL"
            print(f"  {verdict}  reads on {r.db}: {r.ratio:.0%} of the floor's request rate (goal >= 50%)")
        if r.phase in ("create Observation", "create rehab Observation") and r.db == "postgres":
            verdict = "PASS" if r.result.rate >= GOAL_PG_CREATES else "FAIL"
            goal = f"goal >= {GOAL_PG_CREATES:.0f}/s"
            print(f"  {verdict}  {r.phase} on postgres: {r.result.rate:.0f}/s ({goal})")


def _print_header(args: argparse.Namespace) -> None:
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = " (+ uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    print(
        f"rehabfhir core benchmark — commit {git('rev-parse', '--short', 'HEAD')}{dirty}\n"
        f"  {os.cpu_count()} CPUs, Python {platform.python_version()}, n={args.n},"
        f" concurrency={args.concurrency} ({args.client_procs} client processes),"
        f" gunicorn gthread workers={args.workers} (threads as `rehabfhir serve` defaults)\n"
        f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="rehabfhir create/read/update benchmark with floors")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--n", type=int, default=10_000, help="Observations created, read and updated")
    p.add_argument("--concurrency", type=int, default=16, help="client connections in flight")
    p.add_argument("--client-procs", type=int, default=4, help="load-generator processes")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument(
        "--profiled",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also create Observations as /rehab writes them, claiming the rehab-finding profile",
    )
    p.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BENCH_PG_ADMIN_URL", PG_ADMIN_DEFAULT),
        help="PostgreSQL URL allowed to CREATE/DROP DATABASE (env BENCH_PG_ADMIN_URL)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the floors, then each database's FHIR phases; print the table."""
    args = parse_args(argv)
    runner = Runner(args)
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    _print_header(args)
    with tempfile.TemporaryDirectory(prefix="rehabfhir-bench-") as tmp:
        workdir = Path(tmp)
        steps: list[tuple[str, Callable[[], None]]] = [("floor HTTP", lambda: runner.floor_http(workdir))]
        for db in dbs:
            steps += _db_steps(db, args, runner, workdir)
        for title, step in steps:
            print(f"\n[{title}]", flush=True)
            step()
    print_table(runner.rows)


def _db_steps(
    db: str, args: argparse.Namespace, runner: Runner, workdir: Path
) -> list[tuple[str, Callable[[], None]]]:
    tag = f"rehabfhir_bench_{os.getpid()}"
    if db == "sqlite":

        def raw_sqlite() -> None:
            path = workdir / "floor.db"
            _sqlite_floor_db(path)
            runner.floor_raw("sqlite", ("sqlite", str(path)), pg=False)

        fhir_url = f"sqlite:///{workdir / 'fhir.db'}"

        def fhir_sqlite() -> None:
            runner.fhir("sqlite", fhir_url, workdir)

        return [("floor raw sqlite3", raw_sqlite), ("FHIR on SQLite", fhir_sqlite)]

    def raw_pg() -> None:
        with _pg_database(args.pg_admin_url, tag + "_floor") as url:
            _pg_admin(url, "CREATE TABLE floor_row (pk bigserial PRIMARY KEY, body text NOT NULL)")
            runner.floor_raw("postgres", ("pg", url), pg=True)

    def fhir_pg() -> None:
        with _pg_database(args.pg_admin_url, tag + "_fhir") as url:
            runner.fhir("postgres", url, workdir)

    return [("floor raw psycopg", raw_pg), ("FHIR on PostgreSQL", fhir_pg)]


if __name__ == "__main__":
    main()
