"""Bearer tokens for the HTTP benchmarks: the server requires OAuth on every FHIR route.

`authorize(port, database_url)` registers a confidential client (once per database) and gets a
system/*.cruds token by client_credentials at /auth/token, as an EHR backend would. The load
generator sends it on every request. Backend tokens live at most 5 minutes, so the benchmarks
call authorize() again before each phase (the client processes are forked per phase).

Run as a script it is the read benchmark of the token cache (bench/README.md, "Token cache"):
`python bench/bearer.py [--db sqlite|postgres|both] [--n 3000] [--repeat 2]`.
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request

import loadgen
import orjson

HOST = "127.0.0.1"
_CLIENTS: dict[str, tuple[str, str]] = {}
# Run as a script this module is loaded twice (__main__, and `bearer` by core): patch once.
_plain_request_bytes = getattr(loadgen.HttpClient, "_plain_request_bytes", loadgen.HttpClient._request_bytes)


def _with_bearer(self: loadgen.HttpClient, method: str, path: str, body: bytes | None) -> bytes:
    raw = _plain_request_bytes(self, method, path, body)
    if not loadgen.BEARER:
        return raw
    return raw.replace(b"\r\n", f"\r\nAuthorization: Bearer {loadgen.BEARER}\r\n".encode(), 1)


loadgen.HttpClient._plain_request_bytes = _plain_request_bytes  # type: ignore[attr-defined]
loadgen.HttpClient._request_bytes = _with_bearer  # type: ignore[method-assign]


def authorize(port: int, database_url: str) -> None:
    """Set a fresh system/*.cruds token for the load generator."""
    if database_url not in _CLIENTS:
        from auth.store import AuthStore
        from server.store.session import make_engine
        from server.store.session import make_session_factory

        engine = make_engine(database_url)
        client, secret = AuthStore(make_session_factory(engine)).add_client(
            "bench", "system/*.cruds", "symmetric"
        )
        engine.dispose()
        _CLIENTS[database_url] = (client.client_id, secret or "")
    client_id, secret = _CLIENTS[database_url]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    data = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "system/*.cruds"}).encode()
    req = urllib.request.Request(
        f"http://{HOST}:{port}/auth/token", data=data, headers={"Authorization": "Basic " + basic}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        loadgen.BEARER = orjson.loads(resp.read())["access_token"]


def main(argv: list[str] | None = None) -> None:
    """Reads only (issue 15 item 2, the token cache): floor, then GET /Patient/{id} on each database.

    python bench/bearer.py [--db sqlite|postgres|both] [--n 3000] [--concurrency 8] [--repeat 2]

    Each database gets a fresh `rehabfhir serve --workers 2` (auth and audit on), n/10 Patients,
    then `--repeat` read phases of n reads each with one backend token (the token cache's case: a
    client sending the same token again). Prints bench/run.py's table and the load average
    before and after every phase.
    """
    import argparse
    import os
    import random
    import tempfile
    from pathlib import Path

    import core
    import pt_data
    import run

    p = argparse.ArgumentParser(description="rehabfhir read benchmark (bearer-token cost)")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--n", type=int, default=3000, help="reads per phase")
    p.add_argument("--repeat", type=int, default=2, help="read phases per database")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pg-admin-url", default=os.environ.get("BENCH_PG_ADMIN_URL", core.PG_ADMIN_DEFAULT))
    args = p.parse_args(argv)
    runner = core.Runner(args)
    core._print_header(args)
    loads: list[str] = []

    def phase(name: str, db: str, spec: tuple[object, ...], jobs: list[object], pid: int, pg: bool) -> None:
        before = os.getloadavg()[0]
        runner.phase(name, db, spec, jobs, server_pid=pid, pg=pg)
        loads.append(f"{name} {db}: load {before:.1f} -> {os.getloadavg()[0]:.1f}")

    def reads(db: str, database_url: str, workdir: Path) -> None:
        pg = db == "postgres"
        argv = [core._rehabfhir(), "serve", "--workers", str(args.workers)]
        with core._serve(argv, "/metadata", {"DATABASE_URL": database_url}, workdir) as (port, pid):
            spec, rng = ("http", core.HOST, port), random.Random(42)
            runner._auth = (port, database_url)
            authorize(port, database_url)
            runner._warm_up(spec, rng)
            bodies = [pt_data.patient(rng, i) for i in range(max(args.concurrency, args.n // 10))]
            made = loadgen.run(spec, core._posts("Patient", bodies), args.concurrency, args.client_procs)
            pids = [made.outputs[i] for i in sorted(made.outputs) if made.outputs[i]]
            for _ in range(args.repeat):
                jobs = [("GET", f"/Patient/{rng.choice(pids)}", None) for _ in range(args.n)]
                phase("read Patient", db, spec, jobs, pid, pg)
            runner._auth, loadgen.BEARER = None, ""

    with tempfile.TemporaryDirectory(prefix="rehabfhir-bearer-") as tmp:
        workdir = Path(tmp)
        print("\n[floor HTTP]", flush=True)
        before = os.getloadavg()[0]
        runner.floor_http(workdir)
        loads.append(f"floor: load {before:.1f} -> {os.getloadavg()[0]:.1f}")
        for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
            print(f"\n[reads on {db}]", flush=True)
            if db == "sqlite":
                reads(db, f"sqlite:///{workdir / 'fhir.db'}", workdir)
            else:
                with core._pg_database(args.pg_admin_url, f"rehabfhir_bearer_{os.getpid()}") as url:
                    reads(db, url, workdir)
    run.print_table(runner.rows)
    print("\n".join(loads))


if __name__ == "__main__":
    main()
