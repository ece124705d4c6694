"""Bulk export settings, each declared once with its environment name and default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class BulkConfig:
    """Where export files go, how long they live, and how the worker polls."""

    export_dir: str = "./export-files"
    ttl: timedelta = timedelta(hours=24)
    worker: bool = True
    poll_seconds: float = 1.0
    stale_after: timedelta = timedelta(seconds=120)
    cleanup_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BulkConfig:
        """Read REHABFHIR_EXPORT_* from the environment; missing values take their defaults."""
        env = os.environ if environ is None else environ
        return cls(
            export_dir=env.get("REHABFHIR_EXPORT_DIR") or "./export-files",
            ttl=timedelta(hours=float(env.get("REHABFHIR_EXPORT_TTL_HOURS") or 24)),
            worker=_flag(env.get("REHABFHIR_EXPORT_WORKER") or "1"),
            poll_seconds=float(env.get("REHABFHIR_EXPORT_POLL_SECONDS") or 1.0),
            stale_after=timedelta(seconds=float(env.get("REHABFHIR_EXPORT_STALE_SECONDS") or 120)),
            cleanup_seconds=float(env.get("REHABFHIR_EXPORT_CLEANUP_SECONDS") or 60),
        )
