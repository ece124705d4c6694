"""Settings, each declared once with its environment name, parser and default."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEFAULT_BASE_URL = "http://127.0.0.1:8080"  # `rehabfhir serve`'s default --host and --port


def _default_database_url() -> str:
    return "sqlite:///" + os.path.join(os.getcwd(), "rehabfhir.db")


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs; tests build one directly."""

    database_url: str = dataclasses.field(default_factory=_default_database_url)
    # Public base URL of the FHIR endpoint (scheme://host[:port][/path]); empty: `rehabfhir serve`
    # uses http://HOST:PORT, anything else DEFAULT_BASE_URL. Never taken from a request's Host header.
    base_url: str = ""
    secret_key: str = "dev-insecure-secret"
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    max_bundle_entries: int = 10_000
    testing: bool = False
    auto_migrate: bool = True
    # Audit trail (server/audit/README.md). The key links and signs the chain: keep it out of the
    # database's reach. Empty: the secret key; key id empty: derived from the key.
    audit_key: str = ""
    audit_key_id: str = ""
    audit_retired_keys: str = ""  # "id=secret id=secret …": keys of older records (rotation)
    audit_witness: str = ""  # empty: next to the SQLite file, or in the working directory for PostgreSQL
    audit_witness_max_bytes: int = 64 * 1024 * 1024
    audit_head_interval: float = 10.0  # seconds; 0: no timer
    audit_head_sink: str = ""  # "syslog[:/dev/log]" or an http(s) URL: a second home for each head

    @property
    def public_base_url(self) -> str:
        """The public base URL without a trailing slash: tokens, Location, paging and the pages use it."""
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

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
            ("audit_key", "REHABFHIR_AUDIT_KEY", str),
            ("audit_key_id", "REHABFHIR_AUDIT_KEY_ID", str),
            ("audit_retired_keys", "REHABFHIR_AUDIT_RETIRED_KEYS", str),
            ("audit_witness", "REHABFHIR_AUDIT_WITNESS", str),
            ("audit_witness_max_bytes", "REHABFHIR_AUDIT_WITNESS_MAX_BYTES", int),
            ("audit_head_interval", "REHABFHIR_AUDIT_HEAD_INTERVAL", float),
            ("audit_head_sink", "REHABFHIR_AUDIT_HEAD_SINK", str),
        )
        values: dict[str, object] = {}
        for field, name, parse in spec:
            if env.get(name):
                values[field] = parse(env[name])  # type: ignore[operator]
        return cls(**values)  # type: ignore[arg-type]
