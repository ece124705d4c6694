"""Bulk export configuration, built from Settings (where each REHABFHIR_EXPORT_* setting is declared)."""

from __future__ import annotations

import importlib.util
import pathlib
import tempfile
from dataclasses import dataclass
from datetime import timedelta

from server.bulk.store import DirStore
from server.bulk.store import ExportStore
from server.bulk.store import S3Location
from server.bulk.store import S3Store
from server.bulk.store import s3_client
from server.settings import Settings
from server.settings import SettingsError

DEFAULT_EXPORT_DIR = "./export-files"


@dataclass
class BulkConfig:
    """Where export files go, how long they live, and how the worker polls.

    `s3` None: the files are kept in `export_dir`; else in that bucket, each staged in
    `export_dir` until it is uploaded.
    """

    export_dir: str = DEFAULT_EXPORT_DIR
    ttl: timedelta = timedelta(hours=24)
    worker: bool = True
    poll_seconds: float = 1.0
    stale_after: timedelta = timedelta(seconds=120)
    cleanup_seconds: float = 60.0
    s3: S3Location | None = None
    s3_attempts: int = 3  # tries of each bucket request (botocore's standard retry mode)

    def files(self) -> ExportStore:
        """The store export files are written to and read from."""
        if self.s3 is None:
            return DirStore(pathlib.Path(self.export_dir))
        return S3Store(self.s3, pathlib.Path(self.export_dir), s3_client(self.s3, self.s3_attempts))

    @classmethod
    def from_settings(cls, settings: Settings) -> BulkConfig:
        """The export settings; in tests without an export directory, a temporary one (out of the cwd)."""
        export_dir = settings.export_dir or DEFAULT_EXPORT_DIR
        if settings.testing and not settings.export_dir:
            export_dir = tempfile.mkdtemp(prefix="rehabfhir-export-")
        s3 = None
        if settings.export_store == "s3":  # Settings has checked the bucket and endpoint
            if importlib.util.find_spec("boto3") is None:
                raise SettingsError(
                    "REHABFHIR_EXPORT_STORE=s3 needs boto3: install the project's dependencies"
                )
            s3 = S3Location(
                bucket=settings.export_s3_bucket,
                prefix=settings.export_s3_prefix,
                endpoint_url=settings.export_s3_endpoint_url,
            )
        return cls(
            export_dir=export_dir,
            ttl=timedelta(hours=settings.export_ttl_hours),
            worker=settings.export_worker,
            poll_seconds=settings.export_poll_seconds,
            stale_after=timedelta(seconds=settings.export_stale_seconds),
            cleanup_seconds=settings.export_cleanup_seconds,
            s3=s3,
        )
