"""Closed-loop load generator: P processes x T threads, one keep-alive client per thread.

Processes sidestep the GIL, so the generator can push a gunicorn server (or a database) harder
than one Python process could. Every thread connects first, then runs its share of the jobs
back to back; a job's latency is the time from sending to having read the whole answer.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import socket
import sqlite3
import statistics
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class PhaseResult:
    """What one phase measured: rate, latency percentiles, errors, client CPU."""

    n: int
    wall: float
    latencies: list[float]
    outputs: dict[int, Any]
    errors: int
    first_error: str | None
    client_cpu: float

    @property
    def rate(self) -> float:
        return (self.n - self.errors) / self.wall if self.wall > 0 else 0.0

    def percentile(self, pct: float) -> float:
        """The pct-th latency percentile in milliseconds."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(pct) - 1] * 1000


BEARER = ""  # set by bench/bearer.py; forked client processes inherit it


class HttpClient:
    """One keep-alive HTTP/1.1 connection on a bare socket; `do(job)` returns the Location id.

    http.client spends ~150 us of CPU per request parsing headers with the email package; on a
    small machine that CPU is taken from the server under test, so this client does the minimum:
    one sendall, then read the status line, the headers it needs and Content-Length bytes.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.buf = b""
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _request_bytes(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: {FHIR_JSON}\r\n"
        if body is None:
            return (head + "\r\n").encode()
        return (head + f"Content-Type: {FHIR_JSON}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def _read_until(self, marker: bytes) -> bytes:
        while (at := self.buf.find(marker)) < 0:
            self._fill()
        out, self.buf = self.buf[:at], self.buf[at + len(marker) :]
        return out

    def _read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _read_body(self, headers: dict[bytes, bytes]) -> bytes:
        if b"content-length" in headers:
            return self._read_exact(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
                parts.append(self._read_exact(size))
                self._read_exact(2)
            self._read_until(b"\r\n")  # no trailers expected
            return b"".join(parts)
        raise ConnectionError("response without Content-Length or chunked encoding")

    def do(self, job: tuple[str, str, bytes | None]) -> str | None:
        method, path, body = job
        try:
            if self.sock is None:
                self._connect()
            assert self.sock is not None
            self.sock.sendall(self._request_bytes(method, path, body))
            status_line, *lines = self._read_until(b"\r\n\r\n").split(b"\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
            data = self._read_body(headers)
        except OSError:
            self.close()  # reconnects on the next request
            raise
        status = int(status_line.split(b" ", 2)[1])
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")
        location = headers.get(b"location")
        # .../Type/id/_history/1 -> id
        return location.decode().rsplit("/", 3)[-3] if location else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class PgClient:
    """One autocommit psycopg connection: ("insert", text) -> pk, ("select", pk) -> None."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)

    def do(self, job: tuple[str, Any]) -> Any:
        op, arg = job
        if op == "insert":
            sql = "INSERT INTO floor_row (body) VALUES (%s) RETURNING pk"
            return self.conn.execute(sql, (arg,)).fetchone()[0]
        if self.conn.execute("SELECT body FROM floor_row WHERE pk = %s", (arg,)).fetchone() is None:
            raise RuntimeError(f"row {arg} not found")
        return None

    def close(self) -> None:
        self.conn.close()


class SqliteClient(PgClient):
    """The same jobs on one sqlite3 connection with the server's pragmas (WAL, synchronous=NORMAL)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=60000")

    def do(self, job: tuple[str, Any]) -> Any:
        op, arg = job
        if op == "insert":
            sql = "INSERT INTO floor_row (body) VALUES (?) RETURNING pk"
            return self.conn.execute(sql, (arg,)).fetchone()[0]
        if self.conn.execute("SELECT body FROM floor_row WHERE pk = ?", (arg,)).fetchone() is None:
            raise RuntimeError(f"row {arg} not found")
        return None


def _client(spec: tuple[Any, ...]) -> Any:
    kind, *args = spec
    return {"http": HttpClient, "pg": PgClient, "sqlite": SqliteClient}[kind](*args)


def _thread_run(
    client: Any, jobs: list[tuple[int, Any]], barrier: threading.Barrier, out: dict[str, Any]
) -> None:
    lat, outputs, errors, first = array("d"), {}, 0, None
    barrier.wait()
    out["start"] = time.perf_counter()
    for index, job in jobs:
        t0 = time.perf_counter()
        try:
            outputs[index] = client.do(job)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            errors += 1
            first = first or f"{type(exc).__name__}: {exc}"
            continue
        lat.append(time.perf_counter() - t0)
    out.update(end=time.perf_counter(), lat=lat, outputs=outputs, errors=errors, first=first)
    client.close()


def _process_run(spec: tuple[Any, ...], slices: list[list[tuple[int, Any]]]) -> dict[str, Any]:
    """Run one thread per slice in this process; return the merged measurements."""
    clients = [_client(spec) for _ in slices]  # connect before the clock starts
    barrier = threading.Barrier(len(slices))
    outs: list[dict[str, Any]] = [{} for _ in slices]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    threads = [
        threading.Thread(target=_thread_run, args=(c, s, barrier, o))
        for c, s, o in zip(clients, slices, outs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    merged: dict[str, Any] = {"lat": array("d"), "outputs": {}, "errors": 0, "first": None}
    for o in outs:
        merged["lat"].extend(o["lat"])
        merged["outputs"].update(o["outputs"])
        merged["errors"] += o["errors"]
        merged["first"] = merged["first"] or o["first"]
    merged["start"] = min(o["start"] for o in outs)
    merged["end"] = max(o["end"] for o in outs)
    merged["cpu"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return merged


def run(spec: tuple[Any, ...], jobs: list[Any], concurrency: int, processes: int) -> PhaseResult:
    """Run the jobs over `concurrency` clients spread across `processes` processes."""
    processes = max(1, min(processes, concurrency))
    slices: list[list[tuple[int, Any]]] = [[] for _ in range(concurrency)]
    for index, job in enumerate(jobs):
        slices[index % concurrency].append((index, job))
    groups = [slices[p::processes] for p in range(processes)]
    # fork: children inherit the imported modules, so starting them costs milliseconds.
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        parts = list(pool.map(_process_run, [spec] * processes, groups))
    latencies = [x for p in parts for x in p["lat"]]
    outputs = {k: v for p in parts for k, v in p["outputs"].items()}
    return PhaseResult(
        n=len(jobs),
        # CLOCK_MONOTONIC is system-wide, so perf_counter values compare across processes.
        wall=max(p["end"] for p in parts) - min(p["start"] for p in parts),
        latencies=latencies,
        outputs=outputs,
        errors=sum(p["errors"] for p in parts),
        first_error=next((p["first"] for p in parts if p["first"]), None),
        client_cpu=sum(p["cpu"] for p in parts),
    )
