"""Blueprint "bulk": $export status URLs and output files (not FHIR resources, so not in "fhir").

https://hl7.org/fhir/uv/bulkdata/STU2/export.html
"""

from __future__ import annotations

import logging

import flask
import orjson

from server.api.requests import base_url
from server.bulk import manifest
from server.bulk.config import BulkConfig
from server.bulk.store import ExportStoreError
from server.bulk.worker import ExportWorker
from server.errors import ForbiddenError
from server.errors import NotFoundError
from server.fhir.operations.export import FILES_PATH
from server.fhir.operations.export import STATUS_PATH
from server.settings import Settings
from server.store import jobs

log = logging.getLogger(__name__)
bp = flask.Blueprint("bulk", __name__)
NDJSON = "application/fhir+ndjson"


def _config() -> BulkConfig:
    return flask.current_app.extensions["rehabfhir.bulk"]  # type: ignore[no-any-return]


def _job(job_id: str) -> jobs.JobView:
    """The caller's live job, or 404 / 403."""
    job = jobs.get(flask.g.session, job_id)
    if job is None or job.status == jobs.CANCELLED:
        raise NotFoundError(f"No export job {job_id}", message_id="MSG_NO_EXIST")
    if not manifest.owned_by(job, flask.g.access.client_id):
        raise ForbiddenError("This export belongs to another client", message_id="MSG_FORBIDDEN")
    return job


@bp.get(STATUS_PATH + "<job_id>")
def status(job_id: str) -> flask.Response:
    code, body, headers = manifest.status_answer(_job(job_id), base_url())
    kind = "application/json" if code == 200 else "application/fhir+json"
    data = b"" if body is None else orjson.dumps(body)
    return flask.Response(data, status=code, headers=headers, content_type=kind)


@bp.delete(STATUS_PATH + "<job_id>")
def cancel(job_id: str) -> flask.Response:
    job = _job(job_id)
    jobs.cancel(flask.g.session, job.id)
    if job.status != jobs.RUNNING:  # a running job's worker removes its own files
        try:
            _config().files().remove(job.id)
        except ExportStoreError as exc:  # the job is cancelled and expired: cleanup removes them later
            log.warning("export job %s cancelled, files not removed yet: %s", job.id, exc.diagnostics)
    return flask.Response(status=202)


@bp.get(FILES_PATH + "<job_id>/<name>")
def download(job_id: str, name: str) -> flask.Response:
    job = _job(job_id)
    if job.status != jobs.COMPLETED or name not in manifest.names(job):
        raise NotFoundError(f"No file {name} in export {job_id}", message_id="MSG_NO_EXIST")
    type_ = manifest.output_type(job, name)
    if type_ is not None:  # the token asking now must read the type (403 as for any type-level read)
        flask.g.access.require(type_, "r")
    stored = _config().files().fetch(job.id, name)  # a store that cannot be reached: 503
    if stored is None:
        raise NotFoundError(f"The files of export {job_id} have expired", message_id="MSG_NO_EXIST")
    if stored.path is not None:
        return flask.send_file(stored.path.resolve(), mimetype=NDJSON, conditional=False, etag=False)
    # The bucket's object streams through this answer: no presigned URL, so this route's access
    # check and the audit decide every download.
    response = flask.Response(stored.chunks, mimetype=NDJSON)
    if stored.size is not None:
        response.content_length = stored.size
    return response


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the bulk blueprint and start this process's export worker."""
    config = BulkConfig.from_settings(settings)
    app.extensions["rehabfhir.bulk"] = config
    app.register_blueprint(bp)
    replicas = app.extensions.get("rehabfhir.replicas")  # read replicas: the export reads from one
    reads = replicas.export_session if replicas is not None else None
    worker = ExportWorker(app.extensions["rehabfhir.sessions"], config, reads)
    app.extensions["rehabfhir.export_worker"] = worker

    @app.after_request
    def _wake_worker(response: flask.Response) -> flask.Response:
        if response.status_code == 202 and flask.request.path.endswith("$export"):
            flask.current_app.extensions["rehabfhir.export_worker"].wake()
        return response

    if config.worker:
        worker.start()
