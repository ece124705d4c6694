"""Status answers of an export job: 202 with X-Progress, the completion manifest, or the failure.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-status-request
"""

from __future__ import annotations

from typing import Any

from server.fhir.http import http_date
from server.fhir.http import instant
from server.fhir.operations.export import FILES_PATH
from server.fhir.outcomes import issue
from server.fhir.outcomes import operation_outcome
from server.store import jobs

RETRY_AFTER = "1"


def file_url(base_url: str, job: jobs.JobView, name: str) -> str:
    """The download URL of one of the job's files under the base URL the status was asked at."""
    return f"{base_url}{FILES_PATH}{job.id}/{name}"


def manifest(job: jobs.JobView, base_url: str) -> dict[str, Any]:
    """The completion manifest: transactionTime, request, requiresAccessToken, output, error."""

    def files(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"type": f["type"], "url": file_url(base_url, job, f["file"]), "count": f["count"]} for f in items
        ]

    return {
        "transactionTime": instant(job.transaction_time or job.created),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": files(job.output),
        "error": files(job.errors),
    }


def status_answer(job: jobs.JobView, base_url: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    """Return (status, JSON body or None, headers) for a poll of the job's status URL."""
    if job.status in (jobs.QUEUED, jobs.RUNNING):
        progress = "queued" if job.status == jobs.QUEUED else f"in progress: {job.progress or 'starting'}"
        return 202, None, {"X-Progress": progress, "Retry-After": RETRY_AFTER}
    if job.status == jobs.FAILED:
        body = operation_outcome([issue("error", "exception", f"Export failed: {job.failure}")])
        return 500, body, {}
    headers = {"Expires": http_date(job.expires)} if job.expires else {}
    return 200, manifest(job, base_url), headers


def owned_by(job: jobs.JobView, client_id: str | None) -> bool:
    """Whether the caller's client is the one that asked for the export (a job of no client: nobody's)."""
    return job.client_id is not None and job.client_id == client_id


def names(job: jobs.JobView) -> set[str]:
    """The file names this job may serve."""
    return {f["file"] for f in (*job.output, *job.errors)}


def output_type(job: jobs.JobView, name: str) -> str | None:
    """The resource type of one of the job's output files; None for an error file (or no such file)."""
    return next((f["type"] for f in job.output if f["file"] == name), None)
