"""CPU and SQL statements per create, in process (issue 15 item 4, issue 13 item 6).

    python bench/profiles/create_cpu.py [--db postgres|sqlite] [--n 500] [--profile OUT.prof]

Builds the app as `rehabfhir serve` does (auth and audit on, the witness file in a temp
directory) on a fresh database, gets a system/*.cruds token by client_credentials, warms up,
then POSTs n Patients and n Observations (bench/pt_data.py, the bodies of bench/core.py) through
the Flask test client, one after the other. For each phase it prints this process's CPU per
create (server CPU without HTTP parsing or gunicorn), PostgreSQL's CPU per create (every
`postgres` process, from /proc), wall ms per create and the SQL statements per create (a
SQLAlchemy `before_cursor_execute` listener on every engine). CPU per create holds up on a
loaded machine; wall time and rates do not. `--profile` writes cProfile stats of the
Observation phase.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import os
import pathlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import core  # noqa: E402
import pt_data  # noqa: E402

from server import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", core.PG_ADMIN_DEFAULT)


@contextlib.contextmanager
def database(kind: str, tmp: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/create.db"
        return
    with core._pg_database(ADMIN, f"rehabfhir_bench_create_{uuid.uuid4().hex[:8]}") as url:
        yield url


def pg_cpu(url: str) -> float:
    """CPU seconds of the PostgreSQL backends serving this database (other sessions' are not counted)."""
    name = sa.make_url(url).database or ""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = pathlib.Path(entry.path, "cmdline").read_bytes()
            stat = pathlib.Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and f" {name} ".encode() in title:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Statements:
    """Counts the statements the database driver is given (BEGIN/COMMIT not included).

    PostgreSQL: every psycopg execute, and each row of an executemany, also those the store
    sends itself in a pipeline below SQLAlchemy. SQLite: SQLAlchemy's cursor executions.
    """

    def __init__(self, pg: bool) -> None:
        self.count = 0
        self.seen: dict[str, int] = {}
        self.record = False
        if not pg:
            sa.event.listen(sa.Engine, "before_cursor_execute", self._on)
            return
        import psycopg

        plain_execute, plain_many = psycopg.Cursor.execute, psycopg.Cursor.executemany

        def execute(cur: Any, query: Any, *args: Any, **kw: Any) -> Any:
            self._on(None, cur, str(query))
            return plain_execute(cur, query, *args, **kw)

        def executemany(cur: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
            params_seq = list(params_seq)
            for _ in params_seq:
                self._on(None, cur, str(query))
            return plain_many(cur, query, params_seq, **kw)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]

    def _on(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        if self.record:
            key = " ".join(statement.split())[:90]
            self.seen[key] = self.seen.get(key, 0) + 1


# Stages whose CPU (this thread's, time.thread_time) is summed per phase with --stages:
# (label, module, attribute[, module whose imported name is replaced too]).
STAGES = (
    ("request (Flask wsgi_app)", "flask.app", "Flask.wsgi_app"),
    ("  before_request hooks (auth)", "flask.app", "Flask.preprocess_request"),
    ("  view (the create)", "flask.app", "Flask.dispatch_request"),
    ("  after_request hooks (log)", "flask.app", "Flask.process_response"),
    ("  teardown (session close)", "flask.app", "Flask.do_teardown_request"),
    ("    model (fhir.resources)", "server.fhir.resources", "validate", "server.fhir.writes"),
    ("    check (bindings, invariants)", "server.fhir.validation", "enforce", "server.fhir.writes"),
    ("    index rows", "server.fhir.search.indexing", "prepare"),
    ("    reference check", "server.fhir.integrity", "check_references", "server.fhir.interactions.create"),
    ("    store: queue rows", "server.store.repository", "SqlRepository._insert"),
    ("    store: send rows", "server.store.indexes", "PendingRows.flush"),
    ("    audit append", "server.audit.chain", "append"),
    ("    commit", "sqlalchemy.orm", "Session.commit"),
)


class StageClock:
    """Wraps the STAGES functions and sums the CPU spent in each (indented: within the one above)."""

    def __init__(self) -> None:
        import importlib

        self.spent: dict[str, float] = {}
        self._depth = 0
        for label, module, attr, *also in STAGES:
            mod = importlib.import_module(module)
            owner, name = mod, attr
            if "." in attr:
                cls, name = attr.split(".")
                owner = getattr(mod, cls)
            wrapped = self._wrap(label, getattr(owner, name))
            setattr(owner, name, wrapped)
            for other in also:
                setattr(importlib.import_module(other), name, wrapped)

    def _wrap(self, label: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.thread_time() - t0

        return timed


def token(app: Any) -> str:
    client, secret = app.extensions["rehabfhir.auth"].store.add_client("bench", "system/*.cruds", "symmetric")
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    r = app.test_client().post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
        headers={"Authorization": "Basic " + basic},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"])


def run(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp, database(args.db, tmp) as url:
        settings = Settings(
            database_url=url, base_url="http://bench/fhir", audit_witness=f"{tmp}/witness.jsonl"
        )
        clock = StageClock() if args.stages else None
        app = create_app(settings)
        stmts = Statements(args.db == "postgres")
        client = app.test_client()
        headers = {
            "Authorization": "Bearer " + token(app),
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
        }

        def post(type_: str, body: dict[str, Any]) -> str:
            r = client.post(f"/{type_}", data=orjson.dumps(body), headers=headers)
            assert r.status_code == 201, r.get_data(as_text=True)
            return str(orjson.loads(r.get_data())["id"])

        pids = [post("Patient", pt_data.patient(rng, -1 - i)) for i in range(20)]
        for _ in range(50):
            post("Observation", pt_data.observation(rng, rng.choice(pids)))
        pg = args.db == "postgres"
        print(f"db={args.db} n={args.n} load={os.getloadavg()[0]:.1f}")
        for type_ in args.types.split(","):
            if type_ == "Patient":
                bodies = [pt_data.patient(rng, i) for i in range(args.n)]
            else:
                bodies = [pt_data.observation(rng, rng.choice(pids)) for _ in range(args.n)]
            prof = cProfile.Profile(time.process_time) if args.profile and type_ == "Observation" else None
            stmts.count, stmts.seen, stmts.record = 0, {}, True
            if clock:
                clock.spent = {}
            pg0 = pg_cpu(url) if pg else 0.0
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            for body in bodies:
                post(type_, body)
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            pgcpu = (pg_cpu(url) - pg0) if pg else 0.0
            stmts.record = False
            n = args.n
            print(
                f"create {type_:<12} cpu {1000 * cpu / n:6.2f} ms  pg {1000 * pgcpu / n:5.2f} ms"
                f"  wall {1000 * wall / n:6.2f} ms  statements {stmts.count / n:5.2f}"
            )
            if clock:
                for label, *_ in STAGES:
                    print(f"    {label:<34} {1000 * clock.spent.get(label, 0.0) / n:6.3f} ms CPU")
            if args.statements:
                for key, k in sorted(stmts.seen.items(), key=lambda kv: -kv[1]):
                    print(f"    {k / n:5.2f}  {key}")
        app.extensions["rehabfhir.engine"].dispose()
        worker = app.extensions.get("rehabfhir.export_worker")
        if worker is not None:
            worker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--types", default="Patient,Observation", help="phases to run, comma-separated")
    p.add_argument("--profile", help="write cProfile stats of the Observation creates here")
    p.add_argument("--stages", action="store_true", help="CPU per create of each stage (STAGES)")
    p.add_argument("--statements", action="store_true", help="list the statements of each phase")
    run(p.parse_args())


if __name__ == "__main__":
    main()
