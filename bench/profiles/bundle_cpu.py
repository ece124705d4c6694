"""CPU and SQL statements per resource of 100-entry transaction bundles, in process (issue 15).

    python bench/profiles/bundle_cpu.py [--db postgres|sqlite] [--bundles 10] [--entries 100]

Builds the app as create_cpu.py does (auth and audit on, a fresh database), warms up, then POSTs
`--bundles` transaction bundles of `--entries` Observations (bench/pt_data.py) through the Flask
test client and prints this process's CPU, PostgreSQL's CPU and the SQL statements per resource,
and how many of those statements read subscription_state (the outbox's live-subscription look).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import sys
import tempfile
import time
from typing import Any

import orjson

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from create_cpu import Statements  # noqa: E402
from create_cpu import create_app  # noqa: E402
from create_cpu import database  # noqa: E402
from create_cpu import pg_cpu  # noqa: E402
from create_cpu import pt_data  # noqa: E402
from create_cpu import token  # noqa: E402

from server.settings import Settings  # noqa: E402


def run(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp, database(args.db, tmp) as url:
        app = create_app(
            Settings(database_url=url, base_url="http://bench/fhir", audit_witness=f"{tmp}/w.jsonl")
        )
        client, stmts, fhir_json = (
            app.test_client(),
            Statements(args.db == "postgres"),
            "application/fhir+json",
        )
        headers = {"Authorization": "Bearer " + token(app), "Content-Type": fhir_json, "Accept": fhir_json}

        def post(path: str, body: dict[str, Any]) -> Any:
            r = client.post(path, data=orjson.dumps(body), headers=headers)
            assert r.status_code in (200, 201), r.get_data(as_text=True)
            return orjson.loads(r.get_data())

        pids = [post("/Patient", pt_data.patient(rng, -1 - i))["id"] for i in range(20)]

        def bundle() -> dict[str, Any]:
            entry = [
                {
                    "request": {"method": "POST", "url": "Observation"},
                    "resource": pt_data.observation(rng, rng.choice(pids)),
                }
                for _ in range(args.entries)
            ]
            return {"resourceType": "Bundle", "type": "transaction", "entry": entry}

        post("/", bundle())  # warm-up
        bodies = [bundle() for _ in range(args.bundles)]
        stmts.count, stmts.seen, stmts.record = 0, {}, True
        pg = args.db == "postgres"
        load = os.getloadavg()[0]
        pg0 = pg_cpu(url) if pg else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        for body in bodies:
            post("/", body)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        pgcpu = (pg_cpu(url) - pg0) if pg else 0.0
        stmts.record = False
        n = args.bundles * args.entries
        live = sum(k for key, k in stmts.seen.items() if "subscription_state" in key.lower())
        for key, k in stmts.seen.items():
            if "subscription_state" in key.lower() and args.verbose:
                print(k, key)
        app.extensions["rehabfhir.engine"].dispose()
        worker = app.extensions.get("rehabfhir.export_worker")
        if worker is not None:
            worker.stop()
        print(
            f"db={args.db} bundles={args.bundles}x{args.entries} load={load:.1f}:"
            f" cpu {1000 * cpu / n:5.2f} ms  pg {1000 * pgcpu / n:5.2f} ms"
            f"  wall {1000 * wall / n:5.2f} ms per resource; statements {stmts.count / n:5.2f}"
            f" per resource, subscription_state reads {live / args.bundles:.0f} per bundle"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", type=int, default=10)
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--entries", type=int, default=100)
    p.add_argument("--verbose", action="store_true", help="list the subscription_state statements")
    run(p.parse_args())


if __name__ == "__main__":
    main()
