"""Settings, each declared once with its environment name, parser and default."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _default_database_url() -> str:
    return "sqlite:///" + os.path.join(os.getcwd(), "rehabfhir.db")


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs; tests build one directly."""

    database_url: str = dataclasses.field(default_factory=_default_database_url)
    # Public base URL of the FHIR endpoint (scheme://host[:port][/path]); empty = from the request.
    base_url: str = ""
    secret_key: str = "dev-insecure-secret"
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    max_bundle_entries: int = 10_000
    testing: bool = False
    auto_migrate: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; missing values take their defaults."""
        env = os.environ if environ is None else environ
        spec: tuple[tuple[str, str, type | object], ...] = (
            ("database_url", "DATABASE_URL", str),
            ("base_url", "REHABFHIR_BASE_URL", str),
            ("secret_key", "REHABFHIR_SECRET_KEY", str),
            ("max_body_bytes", "REHABFHIR_MAX_BODY_BYTES", int),
            ("default_page_size", "REHABFHIR_DEFAULT_PAGE_SIZE", int),
            ("max_page_size", "REHABFHIR_MAX_PAGE_SIZE", int),
            ("max_bundle_entries", "REHABFHIR_MAX_BUNDLE_ENTRIES", int),
            ("testing", "REHABFHIR_TESTING", _bool),
            ("auto_migrate", "REHABFHIR_AUTO_MIGRATE", _bool),
        )
        values: dict[str, object] = {}
        for field, name, parse in spec:
            if env.get(name):
                values[field] = parse(env[name])  # type: ignore[operator]
        return cls(**values)  # type: ignore[arg-type]
