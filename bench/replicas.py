"""Read and search throughput with 1 or 2 app hosts, with and without a streaming read replica (issue 18).

    python bench/replicas.py [--n 1500] [--concurrency 8] [--client-procs 2] [--workers 2]
                             [--pg-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

A fresh database on the PostgreSQL cluster at --pg-admin-url, and a hot standby of that cluster
started on loopback (tests/functional/replica_cluster.py: pg_basebackup, its own port and data
directory, stopped and removed afterwards). One host loads n/10 Patients and n Observations
(n/200 patients, so each has ~100), then ANALYZE. Four configurations, each with fresh
`rehabfhir serve --workers W` processes (auth and audit on, one public base URL so one token
serves every host): 1 host, 1 host + replica, 2 hosts, 2 hosts + replica. Each runs
`GET /Patient/{id}` (n) and `GET /Observation?patient=…&code=…&_count=20` (n/3); with 2 hosts
the load is split evenly between them (one load generator per host, run at once).

Columns: ops/s; p50/p99 ms; `srv ms`, `primary ms`, `replica ms`: CPU per operation of all
gunicorn processes, of the primary cluster's postgres processes (which also serve everyone
else's work on a shared machine) and of the replica's; `on replica`: the share of reads the
hosts' /metrics count as served by the replica.

What one 2-core machine can show: where the work goes (per-operation CPU moving from the primary
to the replica; the replica adds no errors), not that a replica raises throughput. Here the app
hosts, both PostgreSQL clusters and the load generator share the same two cores, so a second
cluster or a second host only adds processes competing for them: throughput cannot grow, and
will usually fall. On separate machines the primary's per-read CPU is what a replica takes off it.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import concurrent.futures
import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.functional.replica_cluster

import bearer  # noqa: E402
import core  # noqa: E402
import loadgen  # noqa: E402
import pt_data  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from tests.functional.replica_cluster import streaming_replica  # noqa: E402

PAIN = "http%3A%2F%2Floinc.org%7C72514-3"
PUBLIC = "http://bench.clinic.test"
_READS = re.compile(r'^rehabfhir_db_reads_total\{reason="[^"]+",target="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _replica_reads(ports: list[int]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for port in ports:
        with urllib.request.urlopen(f"http://{core.HOST}:{port}/metrics", timeout=10) as resp:
            for target, value in _READS.findall(resp.read().decode()):
                counts["primary" if target == "primary" else "replica"] += int(float(value))
    return counts


def _postmaster_of(database_url: str) -> int:
    import psycopg

    with psycopg.connect(
        sa.make_url(database_url).set(drivername="postgresql").render_as_string(False)
    ) as conn:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _run_split(ports: list[int], jobs: list[Any], concurrency: int, procs: int) -> dict[str, float]:
    """Run the jobs over the hosts at once (an even share each); merged rate and latencies."""
    shares = [jobs[i :: len(ports)] for i in range(len(ports))]
    with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
        results = list(
            pool.map(
                lambda pair: loadgen.run(
                    ("http", core.HOST, pair[0]),
                    pair[1],
                    max(1, concurrency // len(ports)),
                    max(1, procs // len(ports)),
                ),
                zip(ports, shares, strict=True),
            )
        )
    latencies = sorted(x for r in results for x in r.latencies)
    ok = sum(r.n - r.errors for r in results)
    wall = max(r.wall for r in results)

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else float("nan")
        )

    errors = sum(r.errors for r in results)
    first = next((r.first_error for r in results if r.first_error), None)
    if first:
        print("   first error:", first)
    return {"ops": ok / wall if wall else 0.0, "p50": pct(0.5), "p99": pct(0.99), "err": errors}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = p.parse_args(argv)
    rng, n = random.Random(18), args.n
    workdir = Path(tempfile.mkdtemp(prefix="rehabfhir-bench-replicas-"))
    atexit.register(shutil.rmtree, workdir, True)  # the servers' logs (a failure prints their tail)
    argv_serve = [core._rehabfhir(), "serve", "--workers", str(args.workers)]
    print(f"load average before: {os.getloadavg()}", flush=True)
    with core._pg_database(args.pg_admin_url, f"rehabfhir_bench_{os.getpid()}_replicas") as url:
        base = {"DATABASE_URL": url, "REHABFHIR_BASE_URL": PUBLIC, "REHABFHIR_METRICS_OPEN": "true"}
        with core._serve(argv_serve, "/metadata", base, workdir) as (port, _pid):
            bearer.authorize(port, url)
            spec = ("http", core.HOST, port)
            patients = [pt_data.patient(rng, i) for i in range(max(100, n // 10))]
            made = loadgen.run(spec, core._posts("Patient", patients), args.concurrency, args.client_procs)
            ids = [made.outputs[i] for i in sorted(made.outputs)]
            owners = ids[: max(1, n // 200)]
            bodies = [pt_data.observation(rng, rng.choice(owners)) for _ in range(n)]
            loadgen.run(spec, core._posts("Observation", bodies), args.concurrency, args.client_procs)
            print(f"loaded {len(ids)} Patients, {n} Observations", flush=True)
        core._pg_admin(url, "ANALYZE")
        reads = [("GET", f"/Patient/{rng.choice(ids)}", None) for _ in range(n)]
        query = "/Observation?patient={}&code=" + PAIN + "&_count=20"
        searches = [("GET", query.format(rng.choice(owners)), None) for _ in range(max(100, n // 3))]
        primary_pm = _postmaster_of(url)
        rows = []
        with streaming_replica(url) as replica:
            replica_pm = int((replica.data / "postmaster.pid").read_text().split()[0])
            replica_url = replica.url(sa.make_url(url).database or "")
            for hosts, with_replica in ((1, False), (1, True), (2, False), (2, True)):
                env = {**base, "DATABASE_REPLICA_URLS": replica_url} if with_replica else base
                with contextlib.ExitStack() as stack:
                    served = [
                        stack.enter_context(core._serve(argv_serve, "/metadata", env, workdir))
                        for _ in range(hosts)
                    ]
                    ports = [port for port, _ in served]
                    bearer.authorize(ports[0], url)
                    warm = [("GET", f"/Patient/{ids[0]}", None)] * 40
                    _run_split(ports, warm, min(4, args.concurrency), 1)
                    for name, jobs in (("read Patient", reads), ("search Observation", searches)):
                        before = _replica_reads(ports)
                        cpu0 = (
                            [core._cpu_of(pid) for _, pid in served],
                            core._cpu_of(primary_pm),
                            core._cpu_of(replica_pm),
                        )
                        load = os.getloadavg()[0]
                        m = _run_split(ports, jobs, args.concurrency, args.client_procs)
                        cpu1 = (
                            [core._cpu_of(pid) for _, pid in served],
                            core._cpu_of(primary_pm),
                            core._cpu_of(replica_pm),
                        )
                        after = _replica_reads(ports) - before
                        k = len(jobs)
                        rows.append(
                            {
                                "phase": name,
                                "hosts": hosts,
                                "replica": "yes" if with_replica else "no",
                                **m,
                                "srv": (sum(cpu1[0]) - sum(cpu0[0])) * 1000 / k,
                                "primary": (cpu1[1] - cpu0[1]) * 1000 / k,
                                "replica_ms": (cpu1[2] - cpu0[2]) * 1000 / k,
                                "on_replica": after["replica"] / max(1, sum(after.values())),
                                "load": load,
                            }
                        )
                        r = rows[-1]
                        print(
                            f"{name:<20} hosts={hosts} replica={r['replica']:<3} {r['ops']:7.0f} ops/s "
                            f"p50 {r['p50']:6.1f} p99 {r['p99']:7.1f} err {r['err']}",
                            flush=True,
                        )
        loadgen.BEARER = ""
    print()
    columns = ("phase", "hosts", "replica", "ops/s", "p50 ms", "p99 ms", "err", "srv ms", "primary ms")
    columns += ("replica ms", "on replica", "load")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for r in rows:
        cells = (
            r["phase"],
            r["hosts"],
            r["replica"],
            f"{r['ops']:.0f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
        )
        cells += (r["err"], f"{r['srv']:.2f}", f"{r['primary']:.2f}", f"{r['replica_ms']:.2f}")
        cells += (f"{r['on_replica']:.0%}", f"{r['load']:.1f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\nload average after: {os.getloadavg()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
