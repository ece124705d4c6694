"""Bulk export configuration, built from Settings (where each REHABFHIR_EXPORT_* setting is declared)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import timedelta

from server.settings import Settings

DEFAULT_EXPORT_DIR = "./export-files"


@dataclass
class BulkConfig:
    """Where export files go, how long they live, and how the worker polls."""

    export_dir: str = DEFAULT_EXPORT_DIR
    ttl: timedelta = timedelta(hours=24)
    worker: bool = True
    poll_seconds: float = 1.0
    stale_after: timedelta = timedelta(seconds=120)
    cleanup_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BulkConfig:
        """The export settings; in tests without an export directory, a temporary one (out of the cwd)."""
        export_dir = settings.export_dir or DEFAULT_EXPORT_DIR
        if settings.testing and not settings.export_dir:
            export_dir = tempfile.mkdtemp(prefix="rehabfhir-export-")
        return cls(
            export_dir=export_dir,
            ttl=timedelta(hours=settings.export_ttl_hours),
            worker=settings.export_worker,
            poll_seconds=settings.export_poll_seconds,
            stale_after=timedelta(seconds=settings.export_stale_seconds),
            cleanup_seconds=settings.export_cleanup_seconds,
        )
