"""Where export files live: a directory (the default) or an S3-compatible bucket.

Every file is first written completely to a local staging file (`<Type>.part`), then published:
the directory store renames it into place, the bucket store uploads it (s3transfer switches to
a multipart upload for large files; S3 shows an object only once its upload is complete) and
removes the staging file. So a client never sees a partial file on either store, and a job is
marked complete only after all of its files are published.

Downloads always go through the server (`server/api/bulk_routes.py`): the one access policy and
the audit decide every file, on both stores; the bucket store streams the object's body to the
client, no presigned URLs. A job's files are `<export dir>/<job id>/<name>` or the objects
`<prefix><job id>/<name>`; removing a job (cancel, failure, expiry) removes that directory or
every object under that prefix.

Bucket credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or pod role, …), never from our settings.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.errors import ServiceUnavailableError

log = logging.getLogger(__name__)
NDJSON = "application/fhir+ndjson"
_CHUNK = 64 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


class ExportStoreError(ServiceUnavailableError):
    """The export storage could not be reached or refused a request (a 503 when a download meets it)."""


@dataclass(frozen=True)
class S3Location:
    """A bucket, the key prefix of export files in it, and the endpoint of an S3-compatible service."""

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""

    @property
    def key_prefix(self) -> str:
        """The prefix without a leading slash and, unless empty, with a trailing one."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""


@dataclass
class StoredFile:
    """One stored export file to send: a local path (directory store) or a stream of chunks (bucket)."""

    path: pathlib.Path | None = None
    chunks: Iterator[bytes] | None = None
    size: int | None = None


class ExportStore:
    """The operations the worker and the routes need; `staging_dir` is where a job's files are written."""

    def staging_dir(self, job_id: str) -> pathlib.Path:
        raise NotImplementedError

    def begin(self, job_id: str) -> None:
        """Remove what an earlier attempt of the job left (a reclaimed job starts over); make its staging."""
        self.remove(job_id)
        self.staging_dir(job_id).mkdir(parents=True)

    def part(self, job_id: str, name: str) -> pathlib.Path:
        """The staging file the worker writes `name` to before it is published."""
        return (self.staging_dir(job_id) / name).with_suffix(".part")

    def publish(self, job_id: str, name: str, part: pathlib.Path) -> None:
        """Make the complete staging file `part` the job's file `name`."""
        raise NotImplementedError

    def finish(self, job_id: str) -> None:
        """All of the job's files are published."""

    def remove(self, job_id: str) -> None:
        """Remove every file of the job (none: nothing happens)."""
        raise NotImplementedError

    def fetch(self, job_id: str, name: str) -> StoredFile | None:
        """The job's file `name`, or None when it is not (or no longer) stored."""
        raise NotImplementedError


class DirStore(ExportStore):
    """`<root>/<job id>/<name>`: a directory on this host, or one every host mounts."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def staging_dir(self, job_id: str) -> pathlib.Path:
        return self.root / job_id

    def publish(self, job_id: str, name: str, part: pathlib.Path) -> None:
        os.replace(part, self.root / job_id / name)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def fetch(self, job_id: str, name: str) -> StoredFile | None:
        path = self.root / job_id / name
        return StoredFile(path=path) if path.is_file() else None


class S3Store(ExportStore):
    """Objects `<prefix><job id>/<name>` in a bucket; files are staged under `<staging root>/<job id>/`."""

    def __init__(self, location: S3Location, staging_root: pathlib.Path, client: Any) -> None:
        self.location, self.staging_root, self.client = location, staging_root, client

    def staging_dir(self, job_id: str) -> pathlib.Path:
        return self.staging_root / job_id

    def key(self, job_id: str, name: str) -> str:
        return f"{self.location.key_prefix}{job_id}/{name}"

    def publish(self, job_id: str, name: str, part: pathlib.Path) -> None:
        with _translated("upload"):
            self.client.upload_file(
                str(part), self.location.bucket, self.key(job_id, name), ExtraArgs={"ContentType": NDJSON}
            )
        part.unlink()

    def finish(self, job_id: str) -> None:
        shutil.rmtree(self.staging_dir(job_id), ignore_errors=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.staging_dir(job_id), ignore_errors=True)  # this host's staging, if any
        with _translated("delete"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self.key(job_id, "")
            )
            keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
                answer = self.client.delete_objects(
                    Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise ExportStoreError(
                        f"The export storage kept {len(answer['Errors'])} file(s) of export {job_id}"
                        f" ({first.get('Code')})"
                    )

    def fetch(self, job_id: str, name: str) -> StoredFile | None:
        from botocore.exceptions import ClientError

        try:
            with _translated("download", passing=("NoSuchKey", "404")):
                answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key(job_id, name))
        except ClientError:
            return None  # NoSuchKey: expired or removed
        body = answer["Body"]
        return StoredFile(chunks=_chunks(body), size=answer.get("ContentLength"))


def _chunks(body: Any) -> Iterator[bytes]:
    """The object's bytes as they arrive; the connection goes back to the pool when the answer ends."""
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()


@contextlib.contextmanager
def _translated(action: str, passing: tuple[str, ...] = ()) -> Iterator[None]:
    """Turn botocore's errors into ExportStoreError (logged with their detail; the message stays short).

    A ClientError whose code is in `passing` is raised as it is (the caller handles it).
    """
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in passing:
            raise
        log.warning("export storage: %s failed: %s", action, exc)
        raise ExportStoreError(
            f"The export storage (S3 bucket) refused the {action}: it answered {code or 'an error'}"
        ) from exc
    except (BotoCoreError, S3UploadFailedError) as exc:
        log.warning("export storage: %s failed: %s", action, exc)
        raise ExportStoreError(
            f"The export storage (S3 bucket) could not be reached for the {action} ({type(exc).__name__})"
        ) from exc


_CLIENT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def s3_client(location: S3Location, attempts: int = 3) -> Any:
    """A boto3 S3 client for the location (one per process; boto3 clients are thread-safe).

    An endpoint URL (MinIO, Ceph RGW, …) is addressed path-style, which such services expect.
    Checksums are sent only where S3 requires them: S3-compatible services differ on the newer ones.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path" if location.endpoint_url else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _CLIENT_LOCK:  # creating clients from the default session is not thread-safe
        return boto3.session.Session().client("s3", endpoint_url=location.endpoint_url or None, config=config)
