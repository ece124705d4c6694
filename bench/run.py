"""One command for issue 15: floor, read, search, create, ingest and export on SQLite and PostgreSQL.

    python bench/run.py [--db sqlite|postgres|both] [--n 3000] [--concurrency 8] [--bundles N] [--profile DIR]

Each database gets a fresh `rehabfhir serve --workers 2` with auth and audit on, as deployed
(a system/*.cruds backend token on every request). Phases: create Patient, create Observation
(spread over n/200 patients so a patient has ~100 pain scores), read `GET /Patient/{id}`,
search `GET /Observation?patient=…&code=…&_count=20`, ingest (`POST /` of the Synthea transaction
bundles in --synthea, default /work/shared/data/synthea-r4) and a system `$export` of everything
(kick-off, status polled every 50 ms, files deleted after); ingest and export rows are per
resource, and the export's RSS is printed under the table. Every row is shown against the HTTP
floor (bench/floor_app.py, same gunicorn) measured in the same run, twice: as a share of its
request rate and as a multiple of its server CPU per request. CPU (from /proc, all gunicorn
processes) is the figure to trust on a shared machine; rates move with everyone else's load.
`--profile DIR` attaches py-spy to the workers during each phase and writes DIR/<phase>-<db>.svg
(and .folded, the collapsed stacks)
(the sampling costs CPU too: compare numbers from runs without it). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import bearer
import core
import ingest_export
import loadgen
import pt_data

PAIN = "http%3A%2F%2Floinc.org%7C72514-3"
GOAL_INGEST_PG = ingest_export.GOAL_INGEST_PG  # resources/s, Synthea through HTTP, 2 workers
GOAL_EXPORT = ingest_export.GOAL_EXPORT  # resources/s
# Rows whose operation moves several resources (a Synthea bundle): resources per operation, so the
# table shows resources/s and CPU per resource. Keyed by (phase, db).
UNITS: dict[tuple[str, str], float] = {}
MEMORY: list[str] = []
_PY_SPY = ("py-spy", "record", "--subprocesses", "--nonblocking", "--rate", "100")


class Run(core.Runner):
    """core.Runner with the issue-15 phases and optional py-spy profiles."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.profile_dir: Path | None = Path(args.profile).resolve() if args.profile else None
        self.rss_start = 0

    def profiled(
        self, name: str, db: str, spec: tuple[Any, ...], jobs: list[Any], pid: int, pg: bool
    ) -> core.Row:
        """Run a phase; with --profile, under py-spy attached to every gunicorn process."""
        spies: list[subprocess.Popen[bytes]] = []
        if self.profile_dir is not None and shutil.which("py-spy"):
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self.profile_dir / f"{name.split()[0]}-{name.split()[-1].lower()}-{db}.svg"
            spies = [
                subprocess.Popen(
                    [*_PY_SPY, "--pid", str(pid), "--format", fmt, "-o", str(out.with_suffix(suffix))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".folded"))
            ]
            time.sleep(1.5)  # attached before the load starts
        try:
            return self.phase(name, db, spec, jobs, server_pid=pid, pg=pg)
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(timeout=60)

    def fhir(self, db: str, database_url: str, workdir: Path) -> None:
        """Create Patients and Observations, then read Patients and search Observations."""
        argv = [core._rehabfhir(), "serve", "--workers", str(self.args.workers)]
        pg = db == "postgres"
        with core._serve(argv, "/metadata", {"DATABASE_URL": database_url}, workdir) as (port, pid):
            spec, rng, n = ("http", core.HOST, port), random.Random(42), self.args.n
            self._auth = (port, database_url)
            bearer.authorize(port, database_url)
            self.rss_start = ingest_export.rss_kib(pid)[0]
            self._warm_up(spec, rng)
            patients = [pt_data.patient(rng, i) for i in range(max(self.args.concurrency, n // 10))]
            made = self.profiled("create Patient", db, spec, core._posts("Patient", patients), pid, pg)
            pids = [made.result.outputs[i] for i in sorted(made.result.outputs)]
            owners = pids[: max(1, n // 200)]
            bodies = [pt_data.observation(rng, rng.choice(owners)) for _ in range(n)]
            self.profiled("create Observation", db, spec, core._posts("Observation", bodies), pid, pg)
            reads = [("GET", f"/Patient/{rng.choice(pids)}", None) for _ in range(n)]
            self.profiled("read Patient", db, spec, reads, pid, pg)
            if pg:  # planner statistics as a database in service has them (bench/search.py does the same)
                core._pg_admin(database_url, "ANALYZE")
            query = "/Observation?patient={}&code=" + PAIN + "&_count=20"
            searches = [("GET", query.format(rng.choice(owners)), None) for _ in range(max(100, n // 3))]
            self.profiled("search Observation", db, spec, searches, pid, pg)
            self.bulk(db, spec, pid, pg)
            self._auth, loadgen.BEARER = None, ""

    def ingest(self, db: str, spec: tuple[Any, ...], jobs: list[Any], pid: int, pg: bool) -> None:
        """Post the bundles 16 at a time, each slice with a fresh token (a slow ingest outlives one)."""
        print(f"  {'ingest Synthea':<28} {db:<9} n={len(jobs):<6}", end=" ", flush=True)
        s0, p0 = core._cpu_of(root=pid), core._cpu_of(comm="postgres") if pg else 0.0
        parts = []
        for start in range(0, len(jobs), 16):
            if self._auth is not None:
                bearer.authorize(*self._auth)
            parts.append(
                loadgen.run(spec, jobs[start : start + 16], self.args.concurrency, self.args.client_procs)
            )
        errors = sum(p.errors for p in parts)
        result = loadgen.PhaseResult(
            sum(p.n for p in parts),
            sum(p.wall for p in parts),
            [x for p in parts for x in p.latencies],
            {},
            errors,
            next((p.first_error for p in parts if p.first_error), None),
            sum(p.client_cpu for p in parts),
        )
        ok = max(1, result.n - errors)
        row = core.Row("ingest Synthea", db, result)
        row.server_ms = (core._cpu_of(root=pid) - s0) / ok * 1000
        row.pg_ms = (core._cpu_of(comm="postgres") - p0) / ok * 1000 if pg else None
        self.rows.append(row)
        print(f"{result.rate:9.2f} bundles/s  errors={errors}")
        if result.first_error:
            print(f"    first error: {result.first_error[:300]}")

    def bulk(self, db: str, spec: tuple[Any, ...], pid: int, pg: bool) -> None:
        """Ingest Synthea transaction bundles through HTTP, then a system $export of everything."""
        synthea = Path(self.args.synthea)
        if synthea.is_dir():
            jobs, entries = ingest_export.synthea_posts(synthea, self.args.bundles)
            UNITS[("ingest Synthea", db)] = entries / max(1, len(jobs))
            self.ingest(db, spec, jobs, pid, pg)
        else:
            print(f"  (no Synthea bundles in {synthea}: ingest skipped)")
        bearer.authorize(spec[2], self._auth[1] if self._auth else "")
        s0, p0 = core._cpu_of(root=pid), core._cpu_of(comm="postgres") if pg else 0.0
        print(f"  {'export (system $export)':<28} {db:<9}", end=" ", flush=True)
        count, secs = ingest_export.http_export(spec[2])
        ok = max(1, count)
        result = loadgen.PhaseResult(count, secs, [secs], {}, 0, None, 0.0)
        row = core.Row("export (system)", db, result)
        row.server_ms = (core._cpu_of(root=pid) - s0) / ok * 1000
        row.pg_ms = (core._cpu_of(comm="postgres") - p0) / ok * 1000 if pg else None
        self.rows.append(row)
        rss, hwm = ingest_export.rss_kib(pid)
        print(f"{count / secs:9.0f}/s  ({count} resources)")
        MEMORY.append(
            f"{db}: after the export the largest server process holds {rss / 1024:.0f} MiB RSS"
            f" (its peak over the run {hwm / 1024:.0f} MiB; {self.rss_start / 1024:.0f} MiB after start-up)"
        )


def print_table(rows: list[core.Row]) -> None:
    """One table: rate and CPU per request, each against the floor of the same run."""
    floor = next(r for r in rows if r.phase.startswith("floor: GET"))
    f_rate, f_cpu = floor.result.rate, floor.server_ms or float("nan")
    head = (
        f"{'phase':<22} {'db':<9} {'n':>6} {'ops/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
        f" {'x floor rate':>12} {'srv ms':>7} {'x floor CPU':>11} {'pg ms':>6} {'client':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        res, units = r.result, UNITS.get((r.phase, r.db), 1.0)
        cpu = r.server_ms / units if r.server_ms is not None else None
        pg_ms = r.pg_ms / units if r.pg_ms is not None else None
        rate = res.rate * units
        print(
            f"{r.phase:<22} {r.db:<9} {res.n:>6} {rate:>7.0f} {res.percentile(50):>7.1f}"
            f" {res.percentile(99):>7.1f} {res.errors:>4} {rate / f_rate:>12.2f}"
            f" {core._fmt(cpu, '>7.2f')} {core._fmt(cpu / f_cpu if cpu else None, '>11.1f')}"
            f" {core._fmt(pg_ms, '>6.2f')} {res.client_cpu / res.wall if res.wall else 0:>6.2f}"
        )
    print(
        "\nx floor rate = ops/s / floor GET ops/s; srv ms = CPU ms per request in all gunicorn processes"
        "\n(/proc); x floor CPU = srv ms / floor srv ms; pg ms = CPU ms per request in all postgres"
        "\nprocesses; client = load-generator CPU cores busy. Load average at the end: "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
        + "\ningest and export rows: ops/s, srv ms and pg ms are per resource (n and p50/p99: per bundle;"
        "\nexport: n resources, p50 = the whole export)."
    )
    for line in MEMORY:
        print(line)
    for r in rows:
        rate = r.result.rate * UNITS.get((r.phase, r.db), 1.0)
        if r.phase == "ingest Synthea" and r.db == "postgres":
            verdict = "PASS" if rate >= GOAL_INGEST_PG else "FAIL"
            print(f"goal ingest >= {GOAL_INGEST_PG:.0f} resources/s on PostgreSQL: {rate:.0f}/s {verdict}")
        if r.phase == "export (system)":
            verdict = "PASS" if rate >= GOAL_EXPORT else "FAIL"
            print(f"goal export >= {GOAL_EXPORT:.0f} resources/s ({r.db}): {rate:.0f}/s {verdict}")


def main(argv: list[str] | None = None) -> None:
    """Run the floor, then each database's phases; print the table."""
    p = argparse.ArgumentParser(description="rehabfhir floor/read/search/create benchmark")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--n", type=int, default=3000, help="Observations created and Patients read")
    p.add_argument("--concurrency", type=int, default=8, help="client connections in flight")
    p.add_argument("--client-procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--synthea", default=str(ingest_export.SYNTHEA_DIR), help="Synthea transaction bundles")
    p.add_argument("--bundles", type=int, default=None, help="ingest at most this many Synthea bundles")
    p.add_argument("--profile", metavar="DIR", help="write py-spy flame graphs of each phase here")
    p.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", core.PG_ADMIN_DEFAULT))
    args = p.parse_args(argv)
    runner = Run(args)
    core._print_header(args)
    print(f"  load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="rehabfhir-run-") as tmp:
        workdir = Path(tmp)
        print("\n[floor HTTP]", flush=True)
        runner.floor_http(workdir)
        for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
            print(f"\n[FHIR on {db}]", flush=True)
            if db == "sqlite":
                runner.fhir(db, f"sqlite:///{workdir / 'fhir.db'}", workdir)
            else:
                with core._pg_database(args.pg_admin_url, f"rehabfhir_run_{os.getpid()}") as url:
                    runner.fhir(db, url, workdir)
    print_table(runner.rows)


if __name__ == "__main__":
    main()
