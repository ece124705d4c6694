"""Search benchmark: 100 000 Observations over 1 000 Patients, on SQLite and PostgreSQL.

    python bench/search.py [--db sqlite|postgres|both] [--patients 1000] [--per-patient 100] [--runs 200]

Loads through the server's own write path in-process (validation, indexing, one transaction
per 500 resources), printing the index build rate (resources/s), then measures p50/p99 of
the searches apps and EHRs run most, through the Flask app in-process (server time without
the network), and the process's peak RSS as data grows.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pt_data  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from server import create_app  # noqa: E402
from server.fhir.resources import validate  # noqa: E402
from server.fhir.search.indexing import prepare  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store.repository import SqlRepository  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(app, patients: int, per_patient: int) -> tuple[list[str], float]:  # type: ignore[no-untyped-def]
    """Create the data through SqlRepository; return patient ids and resources/s."""
    factory = app.extensions["rehabfhir.sessions"]
    rng = random.Random(7)
    ids = [f"p{n:05d}" for n in range(patients)]
    total = 0
    start = time.perf_counter()
    batch: list[dict] = []

    def flush() -> None:
        with factory() as session:
            repo = SqlRepository(session)
            with repo.transaction():
                for res in batch:
                    write = prepare(validate(res["resourceType"], res))
                    repo.create_resource(res["resourceType"], write, res["id"])
        batch.clear()

    for n, pid in enumerate(ids):
        batch.append({**pt_data.patient(rng, n), "id": pid})
        for _ in range(per_patient):
            batch.append({**pt_data.observation(rng, pid), "id": uuid.uuid4().hex})
        total += 1 + per_patient
        if len(batch) >= 500:
            flush()
        if (n + 1) % max(1, patients // 10) == 0:
            rate = total / (time.perf_counter() - start)
            print(f"  loaded {total:>7} resources  {rate:7.0f}/s  rss {rss_mb():6.0f} MB", flush=True)
    if batch:
        flush()
    return ids, total / (time.perf_counter() - start)


def bearer(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers with a system/*.rs token (auth is on, as deployed: without one every search is a 401)."""
    import base64

    client, secret = app.extensions["rehabfhir.auth"].store.add_client(
        "bench-search", "system/*.rs", "symmetric"
    )
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        headers={"Authorization": "Basic " + basic},
    )
    if r.status_code != 200:
        raise SystemExit(f"no token: {r.status_code} {r.get_data(as_text=True)[:200]}")
    return {"Accept": "application/fhir+json", "Authorization": "Bearer " + r.get_json()["access_token"]}


def measure(client, path: str, runs: int, headers: dict[str, str]) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    times = []
    status = 0
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(path, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        status = r.status_code
        if status != 200:
            raise SystemExit(f"{path}: {status} {r.get_data(as_text=True)[:300]}")
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], status


def queries(ids: list[str]) -> list[tuple[str, str]]:
    pid = ids[len(ids) // 2]
    return [
        ("Observation?patient=X&code=Y", f"/Observation?patient=Patient/{pid}&code=http://loinc.org|72514-3"),
        (
            "…&date=ge…&_sort=-date",
            f"/Observation?patient=Patient/{pid}&code=http://loinc.org|72514-3&date=ge2025-03-01&_sort=-date",
        ),
        ("Patient?name=…", "/Patient?name=okaf&_count=20"),
        (
            "chained subject:Patient.name",
            "/Observation?subject:Patient.identifier="
            f"https://rehab.example.org/fhir/sid/mrn|MRN{len(ids) // 3:07d}&_count=20",
        ),
        ("_has", "/Patient?_has:Observation:patient:code=http://loinc.org|85354-9&name=nguyen&_count=20"),
        ("_include", f"/Observation?patient=Patient/{pid}&_include=Observation:patient&_count=20"),
        ("_total=accurate", "/Observation?code=http://loinc.org|72514-3&_total=accurate&_count=10"),
        ("_summary=count", "/Observation?_summary=count"),
    ]


def run(db: str, args: argparse.Namespace) -> None:
    if db == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/search.db"
        admin = None
    else:
        name = "bench_search_" + uuid.uuid4().hex[:8]
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        app = create_app(Settings(database_url=url))
        print(f"== {db}: {args.patients} patients x {args.per_patient} observations")
        ids, rate = load(app, args.patients, args.per_patient)
        print(
            f"  index build rate: {rate:.0f} resources/s (validate + index + store), peak rss {rss_mb():.0f} MB"  # noqa: E501
        )
        if db == "postgres":
            # Fresh planner statistics after a bulk load (autovacuum would do it later);
            # ANALYZE is transactional, so it must commit.
            with app.extensions["rehabfhir.engine"].begin() as c:
                c.exec_driver_sql("ANALYZE")
        client = app.test_client()
        headers = bearer(app)
        print(f"  {'query':36} {'p50 ms':>8} {'p99 ms':>8}  status")
        for label, path in queries(ids):
            p50, p99, status = measure(client, path, args.runs, headers)
            print(f"  {label:36} {p50:8.2f} {p99:8.2f}  {status}")
        app.extensions["rehabfhir.engine"].dispose()
    finally:
        if admin is not None and args.keep:
            print(f"  kept: --database-url {url} --patients {args.patients}")
        elif admin is not None:
            with admin.connect() as c:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--per-patient", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database-url", help="measure queries on an already loaded database (no load)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL database (measure it again later)"
    )
    args = parser.parse_args()
    if args.database_url:
        app = create_app(Settings(database_url=args.database_url))
        ids = [f"p{n:05d}" for n in range(args.patients)]
        client = app.test_client()
        headers = bearer(app)
        for label, path in queries(ids):
            p50, p99, status = measure(client, path, args.runs, headers)
            print(f"  {label:36} {p50:8.2f} {p99:8.2f}  {status}")
        return
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(db, args)


if __name__ == "__main__":
    main()
