"""Ingestion and Bulk $export benchmark: transaction bundles in, NDJSON out, peak memory.

    python bench/ingest_export.py [--db sqlite|postgres|both] [--sizes 20000,50000,100000] [--procs 4]

For each database (a fresh SQLite file and a fresh PostgreSQL database, dropped afterwards):
1. ingestion: `--procs` processes each post 100-entry transaction Bundles of realistic PT data
   (10 Patients + 90 Observations with LOINC/UCUM values, urn:uuid references) through the
   server's own transaction path (server.fhir.interactions.bundle.process_bundle on a
   SqlRepository: validation, indexing, one database transaction per Bundle). No HTTP: this
   is the server's work per Bundle, as each gunicorn worker does it.
2. export: at each size, a fresh process queues a system-level $export job and runs it with
   the export worker (streaming query, NDJSON written line by line), and reports resources/s
   and its peak RSS (ru_maxrss). Flat RSS across sizes = memory does not grow with the data.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import pt_data  # noqa: E402

PG_ADMIN_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BUNDLE = 100
PATIENTS_PER_BUNDLE = 10
GOAL_INGEST_PG = 2000.0  # issue 15 item 5
GOAL_EXPORT = 20_000.0


def bundle(rng: random.Random, seq: int) -> dict[str, Any]:
    """One transaction of 10 Patients and 90 Observations referencing them by urn:uuid."""
    entries = []
    per = BUNDLE // PATIENTS_PER_BUNDLE - 1
    for p in range(PATIENTS_PER_BUNDLE):
        urn = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
        patient = pt_data.patient(rng, seq * PATIENTS_PER_BUNDLE + p)
        patient.pop("id", None)
        entries.append({"fullUrl": urn, "resource": patient, "request": {"method": "POST", "url": "Patient"}})
        for _ in range(per):
            obs = pt_data.observation(rng, "x")
            obs["subject"] = {"reference": urn}
            entries.append({"resource": obs, "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _ingest_worker(args: tuple[str, int, int]) -> tuple[int, float]:
    url, first, count = args
    from server.fhir.access import SYSTEM
    from server.fhir.http import FhirRequest
    from server.fhir.interactions.bundle import process_bundle
    from server.store.repository import SqlRepository
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    engine = make_engine(url)
    factory = make_session_factory(engine)
    stored = 0
    busy = 0.0
    for seq in range(first, first + count):
        body = bundle(random.Random(seq), seq)
        req = FhirRequest(
            method="POST", base_url="http://bench", body=body, headers={"prefer": "return=minimal"}
        )
        start = time.perf_counter()
        with factory() as session:
            resp = process_bundle(SqlRepository(session), SYSTEM, req)
        busy += time.perf_counter() - start
        assert resp.status == 200
        stored += len(body["entry"])
    engine.dispose()
    return stored, busy


def ingest(url: str, first_bundle: int, bundles: int, procs: int) -> tuple[int, float]:
    """Ingest `bundles` bundles from `procs` processes; return (resources, seconds of the busiest process).

    Process start-up and imports are left out: the clock is each process's time in process_bundle.
    """
    share = [bundles // procs + (1 if i < bundles % procs else 0) for i in range(procs)]
    jobs, start = [], first_bundle
    for n in share:
        jobs.append((url, start, n))
        start += n
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(_ingest_worker, jobs)
    return sum(r[0] for r in results), max(r[1] for r in results)


def _export_child(url: str, export_dir: str, queue: Any) -> None:
    from server.bulk.config import BulkConfig
    from server.bulk.worker import ExportWorker
    from server.fhir.operations.export import ExportRequest
    from server.store import jobs
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    engine = make_engine(url)
    factory = make_session_factory(engine)
    request = ExportRequest(
        level="system",
        types=("Patient", "Observation"),
        type_filters=(),
        since=None,
        output_format="application/fhir+ndjson",
        request_url="http://bench/$export",
        base_url="http://bench",
        client_id=None,
        scopes="system/*.rs",  # the worker exports what this grant permits
    )
    with factory() as session:
        job_id = jobs.submit(session, request)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker = ExportWorker(factory, BulkConfig(export_dir=export_dir, worker=False))
    t0 = time.perf_counter()
    assert worker.run_once()
    elapsed = time.perf_counter() - t0
    with factory() as session:
        job = jobs.get(session, job_id)
    assert job is not None and job.status == jobs.COMPLETED, job
    count = sum(o["count"] for o in job.output)
    size = sum(f.stat().st_size for f in (Path(export_dir) / job_id).iterdir())
    queue.put((count, elapsed, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, size))
    engine.dispose()


def export(url: str, export_dir: str) -> tuple[int, float, int, int, int]:
    """Run one system export in a fresh process: (resources, seconds, RSS before, peak RSS KiB, bytes)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_export_child, args=(url, export_dir, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result  # type: ignore[no-any-return]


# -- through HTTP: Synthea transaction bundles in, $export out (also used by bench/run.py) --------

SYNTHEA_DIR = HERE.parent.parent / "shared" / "data" / "synthea-r4"


def synthea_posts(directory: Path, limit: int | None = None) -> tuple[list[tuple[str, str, bytes]], int]:
    """POST / jobs for the Synthea transaction bundles (`*.json` or `*.json.gz`) and their entry count."""
    import gzip

    import orjson

    jobs, entries = [], 0
    files = sorted(p for p in directory.iterdir() if p.name.endswith((".json", ".json.gz")))
    for path in files[:limit]:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        entries += len(orjson.loads(raw).get("entry", ()))
        jobs.append(("POST", "/", raw))
    return jobs, entries


def _http(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    import loadgen

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers)
    if loadgen.BEARER:
        req.add_header("Authorization", f"Bearer {loadgen.BEARER}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def rss_kib(root: int) -> tuple[int, int]:
    """(largest VmRSS, largest VmHWM) in KiB over the server's processes (the root and its children)."""
    pids = [root]
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields.get("PPid", "0")) == root:
                pids.append(int(status.parent.name))
    rss = hwm = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = max(rss, int(line.split()[1]))
                elif line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
    return rss, hwm


def http_export(port: int, types: str = "", timeout: float = 3600) -> tuple[int, float]:
    """Kick off a system $export and poll it to completion: (resources exported, seconds)."""
    import orjson

    query = f"?_type={types}" if types else ""
    start = time.perf_counter()
    status, headers, body = _http(port, "GET", f"/$export{query}", {"Prefer": "respond-async"})
    assert status == 202, (status, body[:300])
    location = headers["Content-Location"]
    path = "/" + location.split("://", 1)[-1].split("/", 1)[1]
    base_path = path[: path.index("/bulk/status/")]
    path = path[len(base_path) :]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = _http(port, "GET", path, {"Accept": "application/json"})
        if status != 202:
            assert status == 200, (status, body[:300])
            elapsed = time.perf_counter() - start
            manifest = orjson.loads(body)
            _http(port, "DELETE", path, {})  # remove the files
            return sum(o["count"] for o in manifest["output"]), elapsed
        time.sleep(0.05)
    raise TimeoutError("export did not finish")


@contextlib.contextmanager
def database(kind: str, workdir: Path, admin_url: str) -> Iterator[str]:
    """A fresh, migrated database URL, dropped afterwards."""
    import sqlalchemy as sa

    from server.store.migrate import upgrade
    from server.store.session import make_engine

    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        name = f"rehabfhir_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if kind != "sqlite":
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def copy_rows(url: str, base: int, want: int) -> float:
    """Grow the `resource` table to `want` rows by copying the first `base` (ingested) rows under new
    ids (body "id" rewritten): export reads only that table, so this sizes it in seconds where the
    transaction path would take hours. Returns the seconds spent."""
    import sqlalchemy as sa

    from server.store.session import make_engine

    engine = make_engine(url)
    start = time.perf_counter()
    with engine.begin() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM resource")).scalar_one()
        last = conn.execute(  # the last of the ingested rows (copies come after them)
            sa.text("SELECT pk FROM resource ORDER BY pk LIMIT 1 OFFSET :skip"), {"skip": base - 1}
        ).scalar_one()
        while have < want:
            suffix = f"-c{have}"  # unique per round
            taken = conn.execute(
                sa.text(
                    "INSERT INTO resource (type, id, version, last_updated, deleted, body)"
                    " SELECT type, id || :s, version, last_updated, deleted,"
                    " replace(body, '\"id\":\"' || id || '\"', '\"id\":\"' || id || :s || '\"')"
                    " FROM resource WHERE pk <= :last ORDER BY pk LIMIT :n"
                ),
                {"s": suffix, "last": last, "n": min(base, want - have)},
            ).rowcount
            have += taken
    engine.dispose()
    return time.perf_counter() - start


def run(kind: str, sizes: list[int], procs: int, admin_url: str, copy_from: int = 0) -> list[str]:
    """Benchmark one database; return the table lines."""
    lines = []
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    try:
        with database(kind, workdir, admin_url) as url:
            done_bundles, total = 0, 0
            for size in sizes:
                want = (min(size, copy_from) if copy_from else size) // BUNDLE - done_bundles
                if want > 0:
                    stored, seconds = ingest(url, done_bundles, want, procs)
                    done_bundles += want
                    total += stored
                    lines.append(
                        f"{kind:8} ingest  {total:>7} total  +{stored:>6} in {seconds:6.1f}s "
                        f"= {stored / seconds:7.0f} resources/s  ({procs} processes,"
                        f" {BUNDLE}-entry transactions)"
                    )
                    print(lines[-1], flush=True)
                if copy_from and size > total:
                    seconds = copy_rows(url, total, size)
                    lines.append(f"{kind:8} copied rows up to {size} resources in {seconds:.1f}s")
                    print(lines[-1], flush=True)
                count, secs, before, peak, size_bytes = export(url, str(workdir / "export"))
                shutil.rmtree(workdir / "export", ignore_errors=True)
                lines.append(
                    f"{kind:8} export  {count:>7} resources in {secs:6.1f}s = {count / secs:7.0f} resources/s, "  # noqa: E501
                    f"{size_bytes / 1e6:6.1f} MB NDJSON, peak RSS {peak / 1024:6.1f} MiB "
                    f"(before the export {before / 1024:.1f} MiB)"
                )
                print(lines[-1], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return lines


def http_run(kind: str, args: argparse.Namespace) -> list[str]:
    """`rehabfhir serve --workers N` on a fresh database: Synthea bundles in by HTTP, then $export."""
    import bearer
    import core
    import loadgen

    lines = []
    jobs, entries = synthea_posts(Path(args.synthea), args.bundles)
    with tempfile.TemporaryDirectory(prefix=f"bench-http-{kind}-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            if kind == "sqlite":
                url = f"sqlite:///{workdir / 'bench.db'}"
            else:
                url = stack.enter_context(
                    core._pg_database(
                        args.pg_admin.replace("+psycopg", ""), f"rehabfhir_ingest_{os.getpid()}"
                    )
                )
            env = {"DATABASE_URL": url, "REHABFHIR_EXPORT_DIR": str(workdir / "export")}
            argv = [core._rehabfhir(), "serve", "--workers", str(args.workers)]
            port, pid = stack.enter_context(core._serve(argv, "/metadata", env, workdir))
            bearer.authorize(port, url)
            start_rss = rss_kib(pid)[0]
            spec = ("http", core.HOST, port)
            s0, p0 = core._cpu_of(root=pid), core._cpu_of(comm="postgres") if kind != "sqlite" else 0.0
            result = loadgen.run(spec, jobs, args.concurrency, 2)
            srv = core._cpu_of(root=pid) - s0
            pgc = (core._cpu_of(comm="postgres") - p0) if kind != "sqlite" else 0.0
            done = entries * (result.n - result.errors) / max(1, result.n)
            lines.append(
                f"{kind:8} HTTP ingest {result.n - result.errors}/{result.n} Synthea bundles,"
                f" {done:.0f} resources"
                f" in {result.wall:.1f}s = {done / result.wall:.0f} resources/s ({args.workers} workers,"
                f" {args.concurrency} connections); server CPU {srv / max(done, 1) * 1000:.2f} ms/resource,"
                f" postgres CPU {pgc / max(done, 1) * 1000:.2f} ms/resource"
                + (f"; first error: {result.first_error[:200]}" if result.first_error else "")
            )
            print(lines[-1], flush=True)
            bearer.authorize(port, url)
            count, secs = http_export(port)
            rss, hwm = rss_kib(pid)
            lines.append(
                f"{kind:8} HTTP export {count} resources in {secs:.1f}s = {count / secs:.0f} resources/s;"
                f" largest server process RSS {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB,"
                f" {start_rss / 1024:.0f} MiB after start-up)"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--sizes", default="20000,50000,100000", help="cumulative resource counts to export at"
    )
    parser.add_argument("--procs", type=int, default=max(2, os.cpu_count() or 2))
    parser.add_argument("--pg-admin", default=os.environ.get("BENCH_PG_ADMIN", PG_ADMIN_DEFAULT))
    parser.add_argument(
        "--copy-from",
        type=int,
        default=0,
        help="ingest only this many resources through the transaction path, reach each size by copying rows",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="instead: Synthea transaction bundles through HTTP (rehabfhir serve), then $export",
    )
    parser.add_argument("--synthea", default=str(SYNTHEA_DIR), help="directory of Synthea bundles (--http)")
    parser.add_argument("--bundles", type=int, default=None, help="at most this many bundles (--http)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (--http)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight (--http)")
    args = parser.parse_args()
    if args.http:
        kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
        lines = [line for kind in kinds for line in http_run(kind, args)]
        print("\nsummary\n" + "\n".join(lines))
        print(f"goal: ingestion >= {GOAL_INGEST_PG:.0f} resources/s on PostgreSQL with 2 workers")
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine)")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    print(f"cpus={os.cpu_count()} sizes={sizes} procs={args.procs}")
    lines = []
    for kind in kinds:
        lines += run(kind, sizes, args.procs, args.pg_admin, args.copy_from)
    print("\nsummary")
    print("\n".join(lines))
    print(
        f"goals: ingestion >= {GOAL_INGEST_PG:.0f} resources/s on PostgreSQL, export >= {GOAL_EXPORT:.0f} resources/s,"  # noqa: E501
        " peak RSS flat across sizes"
    )


if __name__ == "__main__":
    main()
