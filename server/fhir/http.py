"""Framework-free request and response of the FHIR REST API.

https://hl7.org/fhir/R4B/http.html
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from server.errors import InvalidRequestError
from server.fhir.repository import StoredResource


@dataclass(frozen=True, slots=True)
class FhirRequest:
    """What an interaction needs from an HTTP request, already decoded."""

    method: str
    base_url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # parsed JSON (dict or list) or None
    path: str = ""  # path after the base, used for self links
    default_count: int = 20
    max_count: int = 1000
    max_bundle_entries: int = 10_000
    referential_integrity: bool = True  # literal references to this server must resolve
    delete_referenced: bool = False  # a delete may leave references to the resource dangling
    bundle_targets: frozenset[str] = frozenset()  # Type/id a transaction writes: they resolve
    bundle_deletes: frozenset[str] = frozenset()  # Type/id a transaction deletes
    # A transaction's reference checks, shared by its entries: (type, id, version) -> resolves.
    resolved: dict[Any, bool] | None = field(default=None, compare=False)

    def header(self, name: str) -> str | None:
        """Return a header value (case-insensitive), or None."""
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        """Return the last value of a query parameter, or None."""
        found = None
        for key, value in self.params:
            if key == name:
                found = value
        return found

    @property
    def prefer(self) -> dict[str, str]:
        """The Prefer header as a dict (return=minimal, handling=strict, respond-async)."""
        out: dict[str, str] = {}
        for part in (self.header("prefer") or "").split(","):
            part = part.strip()
            if not part:
                continue
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip().strip('"').lower()
        return out


@dataclass(slots=True)
class FhirResponse:
    """A status, a JSON body (text or dict), headers, and the interaction that ran.

    `interaction` is a server.fhir.routing.Interaction: set by the handler when it knows
    better than its route, else by routing.run from the route (the audit reads it, never the URL).
    A body that is an iterator of text is streamed as it comes, with the Content-Type its headers
    name (AuditEvent/$export-ndjson); no bundle entry answers with one.
    """

    status: int
    body: str | dict[str, Any] | Iterator[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    interaction: Any = None


def etag(version: int) -> str:
    """Weak ETag for a version."""
    return f'W/"{version}"'


def parse_etag(value: str) -> int:
    """Parse W/"3" (or "3" or 3) into a version number."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequestError(f'Invalid ETag / version {value!r}: expected W/"<version>"')
    return int(text)


def instant(moment: datetime) -> str:
    """FHIR instant (UTC, milliseconds) of a naive UTC datetime."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def http_date(moment: datetime) -> str:
    """RFC 7231 date of a naive UTC datetime."""
    return email.utils.format_datetime(moment.replace(tzinfo=UTC), usegmt=True)


def version_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    """ETag, Last-Modified and the versioned Location of a stored resource."""
    return {
        "ETag": etag(stored.version),
        "Last-Modified": http_date(stored.last_updated),
        "Location": f"{base_url}/{stored.type}/{stored.id}/_history/{stored.version}",
    }
