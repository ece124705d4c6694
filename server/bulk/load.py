"""`rehabfhir load FILE...`: load NDJSON files and Bundles (an EHR's export) with a progress bar.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html#file-format

Every resource goes through the same path as the REST API: transaction and batch Bundles
through process_bundle, everything else through create (no id) or update (with an id),
so it is validated and indexed like any other write. `.gz` files are read compressed.
NDJSON resources are written 100 to a database transaction; a chunk that fails is retried
one resource at a time so only the bad lines are reported.
"""

from __future__ import annotations

import gzip
import pathlib
import sys
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import Any

import click
import orjson
from sqlalchemy import orm as so

from server.errors import FhirError
from server.fhir.access import OPEN
from server.fhir.http import FhirRequest
from server.fhir.interactions.bundle import process_bundle
from server.fhir.interactions.create import create
from server.fhir.interactions.update import update
from server.store.repository import SqlRepository

CHUNK = 100
_MINIMAL = {"prefer": "return=minimal"}


@dataclass
class LoadReport:
    """What a load did: resources stored and the errors met (file:line: message)."""

    stored: int = 0
    errors: list[str] = field(default_factory=list)


def _open(path: pathlib.Path) -> tuple[IO[bytes], IO[bytes]]:
    """Return (raw file for progress, stream of the decompressed content)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    return raw, (gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw)  # type: ignore[return-value]


def _is_ndjson(path: pathlib.Path) -> bool:
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    return name.endswith((".ndjson", ".jsonl"))


class Loader:
    """Stores resources and Bundles through the FHIR interactions, one session per unit of work."""

    def __init__(self, factory: Callable[[], so.Session], base_url: str, report: LoadReport) -> None:
        self.factory, self.base_url, self.report = factory, base_url.rstrip("/"), report

    def _request(self, method: str, body: Any) -> FhirRequest:
        return FhirRequest(
            method=method, base_url=self.base_url, headers=_MINIMAL, body=body, max_bundle_entries=1_000_000
        )

    def _store(self, repo: SqlRepository, resource: Any) -> None:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise FhirError("not a FHIR resource (no resourceType)")
        type_, id_ = resource["resourceType"], resource.get("id")
        if id_:
            update(repo, OPEN, self._request("PUT", resource), type_, str(id_))
        else:
            create(repo, OPEN, self._request("POST", resource), type_)

    def resources(self, items: list[tuple[str, Any]]) -> None:
        """Store a chunk in one transaction; on failure, retry each on its own to find the bad ones."""
        try:
            with self.factory() as session:
                repo = SqlRepository(session)
                with repo.transaction():
                    for _, resource in items:
                        self._store(repo, resource)
            self.report.stored += len(items)
            return
        except FhirError:
            pass
        for where, resource in items:
            try:
                with self.factory() as session:
                    self._store(SqlRepository(session), resource)
                self.report.stored += 1
            except FhirError as err:
                self.report.errors.append(f"{where}: {err.diagnostics}")

    def bundle(self, where: str, bundle: dict[str, Any]) -> None:
        """Load a Bundle: transaction/batch as such, any other type entry by entry."""
        kind = bundle.get("type")
        if kind in ("transaction", "batch"):
            try:
                with self.factory() as session:
                    resp = process_bundle(SqlRepository(session), OPEN, self._request("POST", bundle))
            except FhirError as err:
                self.report.errors.append(f"{where}: {err.diagnostics}")
                return
            out = orjson.loads(resp.body) if isinstance(resp.body, str) else resp.body or {}
            for n, entry in enumerate(out.get("entry") or []):
                status = str((entry.get("response") or {}).get("status", ""))
                if status[:1] in ("2", "3"):
                    self.report.stored += 1
                else:
                    self.report.errors.append(f"{where} entry[{n}]: {status}")
            return
        entries = [
            (f"{where} entry[{n}]", e.get("resource"))
            for n, e in enumerate(bundle.get("entry") or [])
            if isinstance(e, dict) and e.get("resource") is not None
        ]
        for start in range(0, len(entries), CHUNK):
            self.resources(entries[start : start + CHUNK])


def _items(path: pathlib.Path, stream: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """Yield (where, parsed JSON) for each line of NDJSON, or once for a JSON document."""
    if _is_ndjson(path):
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield f"{path.name}:{number}", _parse(line)
        return
    yield path.name, _parse(stream.read())


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return FhirError(f"malformed JSON: {exc}")


def load_files(
    paths: list[pathlib.Path],
    factory: Callable[[], so.Session],
    base_url: str,
    progress: Callable[[int], None] = lambda _n: None,
) -> LoadReport:
    """Load every file; `progress` gets the number of (compressed) bytes read since the last call."""
    report = LoadReport()
    loader = Loader(factory, base_url, report)
    for path in paths:
        raw, stream = _open(path)
        with raw:
            chunk: list[tuple[str, Any]] = []
            seen = 0
            for where, doc in _items(path, stream):
                if isinstance(doc, FhirError):
                    report.errors.append(f"{where}: {doc.diagnostics}")
                elif isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
                    loader.bundle(where, doc)
                else:
                    chunk.append((where, doc))
                    if len(chunk) < CHUNK:
                        continue
                    loader.resources(chunk)
                    chunk = []
                position = raw.tell()
                progress(position - seen)
                seen = position
            if chunk:
                loader.resources(chunk)
            progress(path.stat().st_size - seen)
    return report


@click.command("load")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
)
@click.option("--base-url", default="", help="base URL for locations (default: REHABFHIR_BASE_URL)")
def load_command(files: tuple[pathlib.Path, ...], base_url: str) -> None:
    """Load NDJSON files and FHIR Bundles (.json, .ndjson, optionally .gz) into the database."""
    from server.settings import Settings
    from server.store.migrate import upgrade
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    total = sum(p.stat().st_size for p in files)
    with click.progressbar(length=total, label="loading", show_percent=True, file=sys.stderr) as bar:
        report = load_files(
            list(files), factory, base_url or settings.base_url or "http://localhost", bar.update
        )
    for line in report.errors[:50]:
        click.echo(f"error: {line}", err=True)
    if len(report.errors) > 50:
        click.echo(f"... and {len(report.errors) - 50} more errors", err=True)
    click.echo(f"loaded {report.stored} resources from {len(files)} file(s), {len(report.errors)} error(s)")
    engine.dispose()
    if report.errors:
        raise SystemExit(1)
