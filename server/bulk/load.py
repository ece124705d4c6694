"""`rehabfhir load FILE...`: load NDJSON files and Bundles (an EHR's export) with a progress bar.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html#file-format

Every resource goes through the same path as the REST API: transaction and batch Bundles
through process_bundle, everything else through create (no id) or update (with an id),
so it is validated and indexed like any other write. `.gz` files are read compressed.

Nothing partial: a first pass checks every line (JSON, the model, bindings, invariants,
reference types, and that each reference to this server names a resource of the load or of
the database) and reports each bad one as `file:line` (`file entry[n]` inside a Bundle); only
if there is none does the second pass store everything, in one database transaction that a
late failure rolls back whole. References resolve within the load first, so files may come
in any order; REHABFHIR_REFERENTIAL_INTEGRITY=off skips the reference check. (A resource
deleted by someone else between the two passes is not noticed.)
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
from server.fhir.access import SYSTEM
from server.fhir.http import FhirRequest
from server.fhir.integrity import Target
from server.fhir.integrity import local_references
from server.fhir.integrity import resolves
from server.fhir.interactions.bundle import process_bundle
from server.fhir.interactions.create import create
from server.fhir.interactions.update import update
from server.fhir.writes import prepare_write
from server.store.repository import SqlRepository

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


def _writes(where: str, doc: Any) -> Iterator[tuple[str, str, Any, str | None]]:
    """Yield (where, method, resource, Type/id written or None) for each resource a document writes."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise FhirError("not a FHIR resource (no resourceType)")
    if doc["resourceType"] != "Bundle":
        yield where, "PUT" if doc.get("id") else "POST", doc, _key(doc)
        return
    kind = doc.get("type")
    for n, entry in enumerate(doc.get("entry") or []):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        if kind in ("transaction", "batch"):
            method = str(request.get("method", "")).upper()
            url = str(request.get("url", "")).split("?")[0].strip("/").split("/")
            written = "/".join(url) if method == "PUT" and len(url) == 2 else None
            if method in ("POST", "PUT") and isinstance(resource, dict):
                yield f"{where} entry[{n}]", method, resource, written
        elif isinstance(resource, dict):
            yield f"{where} entry[{n}]", "PUT" if resource.get("id") else "POST", resource, _key(resource)


def _key(resource: Any) -> str | None:
    if isinstance(resource, dict) and resource.get("id") and isinstance(resource.get("resourceType"), str):
        return f"{resource['resourceType']}/{resource['id']}"
    return None


class Loader:
    """Checks every document of a load, then stores them all in one database transaction."""

    def __init__(
        self,
        factory: Callable[[], so.Session],
        base_url: str,
        report: LoadReport,
        *,
        referential_integrity: bool = True,
    ) -> None:
        self.factory, self.base_url, self.report = factory, base_url.rstrip("/"), report
        self.referential_integrity = referential_integrity
        self.written: set[str] = set()
        # (where, FHIRPath, reference, target) to look for once every document has been seen
        self.pending: list[tuple[str, str, str, Target]] = []

    def _request(self, method: str, body: Any) -> FhirRequest:
        # References were checked in the first pass, against the whole load and the database.
        return FhirRequest(
            method=method,
            base_url=self.base_url,
            headers=_MINIMAL,
            body=body,
            max_bundle_entries=1_000_000,
            referential_integrity=False,
        )

    def check(self, where: str, doc: Any) -> None:
        """First pass: validate what a document writes and note its references; report what fails."""
        try:
            items = list(_writes(where, doc))
        except FhirError as err:
            self.report.errors.append(f"{where}: {err.diagnostics}")
            return
        for at, _method, resource, written in items:
            try:
                checked = prepare_write(resource["resourceType"], resource).resource
            except (FhirError, KeyError, TypeError) as err:
                message = err.diagnostics if isinstance(err, FhirError) else "not a FHIR resource"
                self.report.errors.append(f"{at}: {message}")
                continue
            if written:
                self.written.add(written)
            if self.referential_integrity:
                refs = local_references(checked["resourceType"], checked, self.base_url)
                self.pending.extend(
                    (at, path, ref, target)
                    for path, ref, target in refs
                    if f"{target[0]}/{target[1]}" not in self.written  # else: seen earlier in the load
                )

    def check_references(self) -> None:
        """Report references that name neither a resource of the load nor one in the database."""
        known: dict[Target, bool] = {}
        with self.factory() as session:
            repo = SqlRepository(session)
            for at, path, reference, target in self.pending:
                if f"{target[0]}/{target[1]}" in self.written:
                    continue
                if target not in known:
                    known[target] = resolves(repo, SYSTEM, *target)
                if not known[target]:
                    self.report.errors.append(
                        f"{at}: {path} refers to {reference}, which is neither in the load nor on this server"
                    )
        self.pending.clear()

    def store(self, repo: SqlRepository, where: str, doc: dict[str, Any]) -> None:
        """Second pass: store a document inside the load's transaction (any failure raises)."""
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            resp = process_bundle(repo, SYSTEM, self._request("POST", doc))
            out = orjson.loads(resp.body) if isinstance(resp.body, str) else resp.body or {}
            for n, entry in enumerate(out.get("entry") or []):
                status = str((entry.get("response") or {}).get("status", ""))
                if status[:1] not in ("2", "3"):
                    raise FhirError(f"entry[{n}]: {status}")
                self.report.stored += 1
            return
        for _at, method, resource, _written in _writes(where, doc):
            type_ = resource["resourceType"]
            if method == "PUT":
                update(repo, SYSTEM, self._request("PUT", resource), type_, str(resource["id"]))
            else:
                create(repo, SYSTEM, self._request("POST", resource), type_)
            self.report.stored += 1


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


def _documents(paths: list[pathlib.Path], progress: Callable[[int], None]) -> Iterator[tuple[str, Any]]:
    for path in paths:
        raw, stream = _open(path)
        with raw:
            seen = 0
            for where, doc in _items(path, stream):
                yield where, doc
                position = raw.tell()
                progress(position - seen)
                seen = position
            progress(path.stat().st_size - seen)


def load_files(
    paths: list[pathlib.Path],
    factory: Callable[[], so.Session],
    base_url: str,
    progress: Callable[[int], None] = lambda _n: None,
    *,
    referential_integrity: bool = True,
) -> LoadReport:
    """Check every file, then store all of them or nothing.

    `progress` gets the number of (compressed) bytes read since the last call: each file is
    read twice, so it totals twice their size.
    """
    report = LoadReport()
    loader = Loader(factory, base_url, report, referential_integrity=referential_integrity)
    for where, doc in _documents(paths, progress):
        if isinstance(doc, FhirError):
            report.errors.append(f"{where}: {doc.diagnostics}")
        else:
            loader.check(where, doc)
    if not report.errors and referential_integrity:
        loader.check_references()
    if report.errors:
        return report
    where = ""
    try:
        with factory() as session:
            repo = SqlRepository(session)
            with repo.transaction():
                for where, doc in _documents(paths, progress):
                    loader.store(repo, where, doc)
    except FhirError as err:
        report.errors.append(f"{where}: {err.diagnostics}")
        report.stored = 0
    return report


def hold_profiles(factory: Callable[[], so.Session]) -> None:
    """Hold our profiles and those stored (`rehabfhir ig install`): lines claiming them are checked."""
    from server.api.wiring import hold_installed_profiles
    from server.api.wiring import use_rehab_terminology

    hold_installed_profiles(factory)
    use_rehab_terminology()


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
    hold_profiles(factory)
    total = 2 * sum(p.stat().st_size for p in files)  # read twice: checked, then stored
    with click.progressbar(length=total, label="loading", show_percent=True, file=sys.stderr) as bar:
        report = load_files(
            list(files),
            factory,
            base_url or settings.public_base_url,
            bar.update,
            referential_integrity=settings.referential_integrity,
        )
    for line in report.errors[:50]:
        click.echo(f"error: {line}", err=True)
    if len(report.errors) > 50:
        click.echo(f"... and {len(report.errors) - 50} more errors", err=True)
    if report.errors:
        click.echo(f"nothing loaded: {len(report.errors)} error(s) in {len(files)} file(s)")
    else:
        click.echo(f"loaded {report.stored} resources from {len(files)} file(s)")
    engine.dispose()
    if report.errors:
        raise SystemExit(1)
