"""Settings, each declared once: environment name, type (its parser), default and meaning.

README's configuration table is generated from these declarations
(`python scripts/settings_table.py --write`); a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("rehabfhir.settings")

PREFIX = "REHABFHIR_"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"  # `rehabfhir serve`'s default --host and --port
DEV_SECRET = "dev-insecure-secret"
MODES = ("development", "production")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting that cannot be used (bad value, or unsafe in production)."""


def _bool(value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError(f"expected one of {', '.join(sorted(_TRUE | _FALSE))}")
    return word in _TRUE


PARSERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float, "bool": _bool}


def _default_database_url() -> str:
    return "sqlite:///" + os.path.join(os.getcwd(), "rehabfhir.db")


def setting(env: str, default: Any, meaning: str, *, shown: str | None = None) -> Any:
    """Declare a setting: its environment variable, default and meaning (README's text).

    `default` may be a zero-argument callable (computed when Settings is built); `shown` is how
    README writes a default that is not a plain value.
    """
    metadata = {"env": env, "meaning": meaning, "shown": shown}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs; tests build one directly."""

    mode: str = setting(
        "REHABFHIR_MODE",
        "development",
        "`development` or `production`; production refuses to start with the development secret key",
    )
    database_url: str = setting(
        "DATABASE_URL",
        _default_database_url,
        "`postgresql+psycopg://user@host/db` for PostgreSQL",
        shown="`sqlite:///./rehabfhir.db`",
    )
    database_replica_urls: str = setting(
        "DATABASE_REPLICA_URLS",
        "",
        "comma-separated PostgreSQL URLs of streaming read replicas: reads, searches, history and"
        " `$everything` use one within the lag bound, else the primary (docs/deploy.md)",
    )
    replica_max_lag_seconds: float = setting(
        "REHABFHIR_REPLICA_MAX_LAG_SECONDS",
        1.0,
        "a replica further behind the primary than this serves no reads",
    )
    replica_poll_seconds: float = setting(
        "REHABFHIR_REPLICA_POLL_SECONDS", 0.25, "seconds between each process's samples of replica lag"
    )
    base_url: str = setting(
        "REHABFHIR_BASE_URL",
        "",
        "public base URL written into tokens, `Location`, `fullUrl`, paging links and the pages' client"
        " (set it behind a proxy); never taken from the request",
        shown=f"`http://HOST:PORT` of `rehabfhir serve`, else `{DEFAULT_BASE_URL}`",
    )
    trusted_proxies: int = setting(
        "REHABFHIR_TRUSTED_PROXIES",
        0,
        "how many proxies in front (load balancers) set `X-Forwarded-For`: the client address of rate"
        " limits and the audit is then the one they saw, not the nearest proxy's (0: the socket's peer)",
    )
    secret_key: str = setting(
        "REHABFHIR_SECRET_KEY",
        DEV_SECRET,
        "signing secret (sessions, the signing keys kept in the database, the audit chain by default)",
        shown="a development value",
    )
    max_body_bytes: int = setting(
        "REHABFHIR_MAX_BODY_BYTES", 16 * 1024 * 1024, "larger request bodies get 413"
    )
    default_page_size: int = setting("REHABFHIR_DEFAULT_PAGE_SIZE", 20, "`_count` when a search gives none")
    max_page_size: int = setting("REHABFHIR_MAX_PAGE_SIZE", 1000, "largest `_count` honoured")
    max_bundle_entries: int = setting(
        "REHABFHIR_MAX_BUNDLE_ENTRIES", 10_000, "a batch or transaction with more entries gets 413"
    )
    referential_integrity: bool = setting(
        "REHABFHIR_REFERENTIAL_INTEGRITY",
        True,
        "a write's literal references to this server (`Patient/1`) must name resources that exist and"
        " that the writer may read, else 422; `off` for bulk loads whose files come in any order",
    )
    delete_referenced: bool = setting(
        "REHABFHIR_DELETE_REFERENCED",
        False,
        "allow deleting a resource that current resources still reference (off: 409 naming them)",
    )
    testing: bool = setting("REHABFHIR_TESTING", False, "test mode (export files in a temporary directory)")
    auto_migrate: bool = setting(
        "REHABFHIR_AUTO_MIGRATE", True, "migrate on app start (off in the Docker image, which migrates once)"
    )
    # Operations: logs and metrics (server/api/ops_routes.py).
    log_format: str = setting(
        "REHABFHIR_LOG_FORMAT",
        "json",
        "`json`: one JSON object per line (request id, client id, interaction, status, duration; never"
        " resource content, query strings or names); `text`: Python's default format",
    )
    log_level: str = setting("REHABFHIR_LOG_LEVEL", "INFO", "`DEBUG`, `INFO`, `WARNING` or `ERROR`")
    metrics_open: bool = setting(
        "REHABFHIR_METRICS_OPEN",
        False,
        "serve `/metrics` without a token (only where the network already restricts who scrapes);"
        " off: a backend services token with a `system/` scope",
    )
    # Audit trail (server/audit/README.md). The key links and signs the chain: keep it out of the
    # database's reach.
    audit: bool = setting(
        "REHABFHIR_AUDIT", True, "write the audit trail; `off` only for benchmarks (nothing is audited)"
    )
    audit_key: str = setting(
        "REHABFHIR_AUDIT_KEY",
        "",
        "HMAC key of the audit chain and its signed heads; keep it where the database role cannot read it",
        shown="the secret key",
    )
    audit_key_id: str = setting(
        "REHABFHIR_AUDIT_KEY_ID",
        "",
        "id recorded with each audit record and head (rotation)",
        shown="derived from the key",
    )
    audit_retired_keys: str = setting(
        "REHABFHIR_AUDIT_RETIRED_KEYS",
        "",
        "`id=secret id=secret …`: earlier audit keys, so verify still checks older records",
    )
    audit_witness: str = setting(
        "REHABFHIR_AUDIT_WITNESS",
        "",
        "append-only file of signed audit heads, outside the database (share it between hosts,"
        " or rely on the timer)",
        shown="`<sqlite file>-audit-witness.jsonl`; PostgreSQL: `./rehabfhir-audit-witness-<db>.jsonl`",
    )
    audit_witness_max_bytes: int = setting(
        "REHABFHIR_AUDIT_WITNESS_MAX_BYTES",
        64 * 1024 * 1024,
        "the witness is rotated to `<file>.<seq>` past this size",
    )
    audit_head_interval: float = setting(
        "REHABFHIR_AUDIT_HEAD_INTERVAL",
        10.0,
        "seconds between republishing the newest signed head to the witness (0: off)",
    )
    audit_head_sink: str = setting(
        "REHABFHIR_AUDIT_HEAD_SINK",
        "",
        "second home for each head: `syslog[:/dev/log]` or an `http(s)://` URL (POSTed JSON, best effort)",
    )
    # Bulk Data $export (server/bulk).
    export_store: str = setting(
        "REHABFHIR_EXPORT_STORE",
        "dir",
        "`dir`: export files are kept in `REHABFHIR_EXPORT_DIR`; `s3`: in an S3-compatible bucket, each"
        " file staged complete in that directory and then uploaded; downloads stream through the server"
        " either way (docs/deploy.md)",
    )
    export_dir: str = setting(
        "REHABFHIR_EXPORT_DIR",
        "",
        "where export files are written (must be writable by the server's user; several hosts: one"
        " directory all of them mount, or the `s3` store, docs/deploy.md)",
        shown="`./export-files` (tests: a temporary directory)",
    )
    export_s3_bucket: str = setting(
        "REHABFHIR_EXPORT_S3_BUCKET",
        "",
        "bucket of the `s3` export store (required with it); credentials come from the standard AWS"
        " chain (`AWS_ACCESS_KEY_ID`…, a profile, an instance or pod role), not from these settings",
    )
    export_s3_prefix: str = setting(
        "REHABFHIR_EXPORT_S3_PREFIX", "", "key prefix of export files: `<prefix>/<job id>/<Type>.ndjson`"
    )
    export_s3_endpoint_url: str = setting(
        "REHABFHIR_EXPORT_S3_ENDPOINT_URL",
        "",
        "`http(s)://` endpoint of an S3-compatible service (MinIO, Ceph RGW…; addressed path-style);"
        " empty: Amazon S3, its region from the AWS chain",
    )
    export_ttl_hours: float = setting(
        "REHABFHIR_EXPORT_TTL_HOURS", 24.0, "hours until export files are deleted"
    )
    export_worker: bool = setting(
        "REHABFHIR_EXPORT_WORKER", True, "run an export worker in each server process"
    )
    export_poll_seconds: float = setting(
        "REHABFHIR_EXPORT_POLL_SECONDS", 1.0, "seconds between an idle worker's looks for jobs"
    )
    export_stale_seconds: float = setting(
        "REHABFHIR_EXPORT_STALE_SECONDS", 120.0, "seconds of worker silence after which its job is taken over"
    )
    export_cleanup_seconds: float = setting(
        "REHABFHIR_EXPORT_CLEANUP_SECONDS", 60.0, "seconds between removals of expired export files"
    )
    # Topic-based Subscriptions (server/subscriptions).
    subscription_worker: bool = setting(
        "REHABFHIR_SUBSCRIPTION_WORKER",
        True,
        "run a notification delivery worker in each server process (not in test mode)",
    )
    subscription_poll_seconds: float = setting(
        "REHABFHIR_SUBSCRIPTION_POLL_SECONDS", 1.0, "seconds between an idle delivery worker's looks for work"
    )
    subscription_retry_seconds: float = setting(
        "REHABFHIR_SUBSCRIPTION_RETRY_SECONDS",
        2.0,
        "seconds before the first retry of a failed notification (doubling on each further failure)",
    )
    subscription_max_attempts: int = setting(
        "REHABFHIR_SUBSCRIPTION_MAX_ATTEMPTS",
        5,
        "failed deliveries in a row after which a subscription is turned off (before that: error)",
    )
    subscription_max_timeout: int = setting(
        "REHABFHIR_SUBSCRIPTION_MAX_TIMEOUT", 30, "largest channel timeout (seconds) a subscription may set"
    )
    subscription_event_days: float = setting(
        "REHABFHIR_SUBSCRIPTION_EVENT_DAYS",
        7.0,
        "days a delivered notification event stays available to `$events` before it is removed",
    )

    token_cache: bool = setting(
        "REHABFHIR_TOKEN_CACHE",
        True,
        "remember verified bearer tokens per worker (revocations are pushed: PostgreSQL LISTEN/NOTIFY,"
        " SQLite a generation counter); off: every request verifies the token and queries revocation",
    )
    token_cache_size: int = setting(
        "REHABFHIR_TOKEN_CACHE_SIZE",
        4096,
        "verified bearer tokens remembered per worker (the least recently used go first)",
    )
    revocation_listen_url: str = setting(
        "REHABFHIR_REVOCATION_LISTEN_URL",
        "",
        "PostgreSQL URL each worker's revocation listener connects to, directly or through a session-mode"
        " pool (LISTEN delivers nothing through a transaction-mode one); empty: `DATABASE_URL`",
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"REHABFHIR_MODE must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"REHABFHIR_LOG_FORMAT must be json or text, not {self.log_format!r}")
        self._check_export_store()
        if self.mode == "production" and self.secret_key in ("", DEV_SECRET):
            raise SettingsError(
                "REHABFHIR_MODE=production needs REHABFHIR_SECRET_KEY (not the development value)"
            )

    def _check_export_store(self) -> None:
        if self.export_store not in ("dir", "s3"):
            raise SettingsError(f"REHABFHIR_EXPORT_STORE must be dir or s3, not {self.export_store!r}")
        if self.export_store == "s3" and not self.export_s3_bucket.strip():
            raise SettingsError(
                "REHABFHIR_EXPORT_STORE=s3 needs REHABFHIR_EXPORT_S3_BUCKET (the bucket's name)"
            )
        endpoint = self.export_s3_endpoint_url
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise SettingsError(
                f"REHABFHIR_EXPORT_S3_ENDPOINT_URL must be an http(s):// URL, not {endpoint!r}"
            )

    @property
    def public_base_url(self) -> str:
        """The public base URL without a trailing slash: tokens, Location, paging and the pages use it."""
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (missing or empty: the default); warn about unknown names."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in declared():
            raw = env.get(field.metadata["env"])
            if raw:
                try:
                    values[field.name] = PARSERS[str(field.type)](raw)
                except ValueError as exc:
                    raise SettingsError(f"{field.metadata['env']}={raw!r}: {exc}") from None
        for name in unknown_variables(env):
            close = difflib.get_close_matches(name, environment_names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            log.warning("unknown setting %s is ignored%s", name, hint)
        return cls(**values)


def declared() -> tuple[dataclasses.Field[Any], ...]:
    """Every setting, in declaration order."""
    return dataclasses.fields(Settings)


def environment_names() -> list[str]:
    """The environment variable of every setting."""
    return [f.metadata["env"] for f in declared()]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """REHABFHIR_* variables in the environment that name no setting."""
    known = set(environment_names())
    return sorted(name for name in environ if name.startswith(PREFIX) and name not in known)
