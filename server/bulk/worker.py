"""The export worker: claims queued jobs, streams each type to an NDJSON file, expires old files.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

One daemon thread per server process. Jobs are claimed through server.store.jobs (SKIP LOCKED
on PostgreSQL), so any number of processes share the queue; a job whose worker died is
claimed again once its heartbeat is stale and starts over. Files are written a batch of lines
at a time from a streaming query (server-side cursor) to `<export_dir>/<job id>/<Type>.ndjson`:
the stored JSON is written as stored, no model is built, and memory holds one batch. Each file
is written complete as `<Type>.part`, then published to the export store (server/bulk/store.py):
renamed in the directory, or uploaded to the bucket and the staging file removed.

A job runs under the access of the token that kicked it off, rebuilt from the scopes recorded
on the job (never SYSTEM): each type's query is narrowed by `restrict_query` and, when the
grant's access to the type depends on the resource (patient or parameter rules), every resource
is then judged by `permits` before it is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import orm as so

from auth import scopes as scope_rules
from server.bulk.config import BulkConfig
from server.bulk.store import ExportStore
from server.bulk.store import ExportStoreError
from server.errors import FhirError
from server.fhir.access import AccessContext
from server.fhir.access import permits
from server.fhir.access import restrict_query
from server.fhir.http import FhirRequest
from server.fhir.operations.export import group_members
from server.fhir.outcomes import issue
from server.fhir.outcomes import operation_outcome
from server.fhir.search.definitions import compartment_members
from server.fhir.search.params import parse_criteria
from server.fhir.search.query import SearchQuery
from server.polling import PollingWorker
from server.store import exporting
from server.store import jobs
from server.store.repository import SqlRepository

log = logging.getLogger(__name__)
ERROR_FILE = "OperationOutcome.error.ndjson"
_BEAT_SECONDS = 2.0


class CancelledError(Exception):
    """The job was cancelled (or taken over) while it ran."""


def grant_context(job: jobs.JobView) -> AccessContext:
    """The kick-off token's access, rebuilt from the scopes recorded on the job."""
    if job.grant_scopes is None:
        raise FhirError("This export was queued without a recorded grant: kick it off again")
    policy = scope_rules.parse(job.grant_scopes)
    # Export tokens carry no patient, and patient/ scopes without one grant nothing (as at kick-off).
    rules = tuple(r for r in policy.rules if r.context != "patient")
    return AccessContext(client_id=job.client_id, scopes=frozenset(policy.scopes), rules=rules)


class _Run:
    """One claimed job being carried out."""

    def __init__(
        self,
        factory: Callable[[], so.Session],
        config: BulkConfig,
        job: jobs.JobView,
        worker: str,
        reads: Callable[[], so.Session | None] | None = None,
    ) -> None:
        self.factory, self.config, self.job, self.worker = factory, config, job, worker
        self.reads = reads
        self.files = config.files()
        self.ctx = AccessContext()  # grants nothing until run() rebuilds the kick-off grant
        self.errors: list[dict[str, Any]] = []
        self.last_beat = time.monotonic()

    def _reading(self) -> so.Session:
        """The session the job's resources are read from (a replica when one is fresh enough)."""
        session = self.reads() if self.reads is not None else None
        return session if session is not None else self.factory()

    def beat(self, progress: str, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_beat < _BEAT_SECONDS:
            return
        with self.factory() as session:
            if not jobs.beat(session, self.job.id, self.worker, progress):
                raise CancelledError(self.job.id)
        self.last_beat = time.monotonic()

    def problem(self, code: str, message: str) -> None:
        self.errors.append(operation_outcome([issue("error", code, message)]))

    def _group_patients(self, session: so.Session) -> list[str]:
        stored = SqlRepository(session).read_resource("Group", self.job.group_id or "")
        if stored is None or stored.deleted or stored.body is None:
            raise FhirError(f"Group/{self.job.group_id} no longer exists")
        group = orjson.loads(stored.body)
        if not permits(self.ctx, "Group", "r", group):
            raise FhirError(f"Group/{self.job.group_id} is no longer readable under the export's grant")
        wanted, others = group_members(group)
        for reference in others:
            self.problem("not-supported", f"Group member {reference!r} is not a Patient reference; skipped")
        if self.job.patients is not None:  # the `patient` parameter: only those members
            wanted = [i for i in wanted if i in self.job.patients]
        return self._existing(session, wanted, "Group member ")

    def _existing(self, session: so.Session, wanted: list[str], what: str) -> list[str]:
        found = exporting.existing_ids(session, "Patient", wanted)
        for id_ in wanted:
            if id_ not in found:
                self.problem("not-found", f"{what}Patient/{id_} does not exist; skipped")
        return [i for i in wanted if i in found]

    def _patients(self, session: so.Session) -> list[str] | None:
        """The patients whose compartments a Patient or Group level export covers (None: all)."""
        if self.job.level == "group":
            return self._group_patients(session)
        if self.job.level == "patient" and self.job.patients is not None:
            return self._existing(session, list(self.job.patients), "")
        return None

    def _filters(self) -> dict[str, list[SearchQuery]]:
        req = FhirRequest(method="GET", base_url=self.job.base_url)
        out: dict[str, list[SearchQuery]] = {}
        for value in self.job.type_filters:
            type_, _, query = value.partition("?")
            out.setdefault(type_, []).append(parse_criteria(req, type_, query))
        return out

    def _types(self, session: so.Session) -> list[str]:
        types = list(self.job.types) or exporting.present_types(session)
        types = [t for t in types if self.ctx.can(t, "r")]
        if self.job.level != "system":
            members = set(compartment_members("Patient"))
            types = [t for t in types if t in members]
        return types

    def _permitted(self, type_: str, batches: Iterable[list[str]], progress: str) -> Iterator[list[str]]:
        """Keep the stored bodies the grant may read, each judged on its own JSON.

        A grant that reads the type whatever the resource holds (some rule without a patient
        context or parameters: `confined` is False) needs no judging: the bodies pass as stored,
        without being parsed.
        """
        if not self.ctx.confined(type_, "r"):
            yield from batches
            return
        read = 0
        for batch in batches:
            yield [body for body in batch if permits(self.ctx, type_, "r", orjson.loads(body))]
            read += len(batch)  # rows the grant withholds write nothing: beat on rows read too
            self.beat(f"{progress}: {read} read")

    def _write(self, name: str, batches: Iterable[list[str]], progress: str) -> int:
        part = self.files.part(self.job.id, name)
        count = 0
        with open(part, "w", encoding="utf-8", buffering=1 << 20) as out:
            for batch in batches:
                if batch:
                    out.write("\n".join(batch))
                    out.write("\n")
                    count += len(batch)
                    self.beat(f"{progress}: {count} written")
        if count:
            self.files.publish(self.job.id, name, part)
        else:
            part.unlink()
        return count

    def run(self) -> None:
        self.ctx = grant_context(self.job)
        self.files.begin(self.job.id)  # a reclaimed job starts over
        output: list[dict[str, Any]] = []
        until = self.job.transaction_time or jobs.now()
        with self._reading() as session:
            patients = self._patients(session)
            filters = self._filters()
            types = self._types(session)
            for n, type_ in enumerate(types, 1):
                progress = f"{type_} ({n} of {len(types)} types)"
                self.beat(progress, force=True)
                batches = exporting.stream_batches(
                    session,
                    type_,
                    until=until,
                    since=self.job.since,
                    patient_level=self.job.level != "system",
                    patients=patients,
                    filters=filters.get(type_, ()),
                    access=restrict_query(self.ctx, SearchQuery(types=(type_,)), "r"),
                )
                count = self._write(f"{type_}.ndjson", self._permitted(type_, batches, progress), progress)
                if count:
                    output.append({"type": type_, "file": f"{type_}.ndjson", "count": count})
        errors = []
        if self.errors:
            count = self._write(ERROR_FILE, [[orjson.dumps(e).decode() for e in self.errors]], "errors")
            errors.append({"type": "OperationOutcome", "file": ERROR_FILE, "count": count})
        self.files.finish(self.job.id)
        with self.factory() as session:
            if not jobs.complete(session, self.job.id, self.worker, output, errors, self.config.ttl):
                raise CancelledError(self.job.id)


def run_job(
    factory: Callable[[], so.Session],
    config: BulkConfig,
    job: jobs.JobView,
    worker: str,
    reads: Callable[[], so.Session | None] | None = None,
) -> None:
    """Carry out one claimed job; failures are recorded on the job, cancellation removes its files.

    An export store that cannot be reached fails the job (its status answers the OperationOutcome);
    files it could not remove then are removed when the job expires.

    `reads` (read replicas configured) gives the session the resources are read from: a replica
    that has replayed the job's kick-off, or None for the primary. Claims, heartbeats and the
    outcome always go through `factory` (the primary).
    """
    run = _Run(factory, config, job, worker, reads)
    try:
        run.run()
    except CancelledError:
        _remove(run.files, job.id)
    except Exception as exc:  # recorded on the job, answered by the status URL
        log.exception("export job %s failed", job.id)
        message = exc.diagnostics if isinstance(exc, FhirError) else f"{type(exc).__name__}: {exc}"
        with factory() as session:
            jobs.fail(session, job.id, worker, message, config.ttl)
        _remove(run.files, job.id)


def _remove(files: ExportStore, job_id: str) -> bool:
    """Remove a job's files; on a store error log it and return False (expiry tries again)."""
    try:
        files.remove(job_id)
    except ExportStoreError as exc:
        log.warning("export job %s: files not removed yet: %s", job_id, exc.diagnostics)
        return False
    return True


class ExportWorker(PollingWorker):
    """A daemon thread that runs export jobs and removes expired ones."""

    thread_name = "rehabfhir-export"

    def __init__(
        self,
        factory: Callable[[], so.Session],
        config: BulkConfig,
        reads: Callable[[], so.Session | None] | None = None,
    ) -> None:
        super().__init__()
        self.factory, self.config, self.reads = factory, config, reads

    @property
    def poll_seconds(self) -> float:
        return self.config.poll_seconds

    @property
    def housekeeping_seconds(self) -> float:
        return self.config.cleanup_seconds

    def run_once(self) -> bool:
        """Claim and run one job; return whether there was one."""
        with self.factory() as session:
            job = jobs.claim(session, self.id, self.config.stale_after)
        if job is None:
            return False
        run_job(self.factory, self.config, job, self.id, self.reads)
        return True

    def housekeeping(self) -> list[str]:
        return self.cleanup()

    def cleanup(self) -> list[str]:
        """Remove the files and rows of expired jobs; return their ids.

        A job whose files the store could not remove (unreachable) keeps its row: the next cleanup
        tries again.
        """
        files = self.config.files()
        with self.factory() as session:
            ids = jobs.expired(session, jobs.now())
        # No transaction is held while the store works (an unreachable bucket can take a minute).
        removed = [job_id for job_id in ids if _remove(files, job_id)]
        if removed:
            with self.factory() as session:
                jobs.forget(session, removed)
        return removed
