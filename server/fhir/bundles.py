"""Bundle builders (searchset, history, batch/transaction responses) that splice stored JSON.

Stored resource bodies are already JSON text; entries embed them verbatim so building a
page never parses or re-serialises a resource. https://hl7.org/fhir/R4B/bundle.html
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Entry:
    """One Bundle.entry: its JSON members and, separately, the resource as JSON text."""

    members: dict[str, Any]
    resource_text: str | None = None


def _entry_text(entry: Entry) -> str:
    head = orjson.dumps(entry.members).decode()
    if entry.resource_text is None:
        return head
    if head == "{}":
        return '{"resource":' + entry.resource_text + "}"
    # Insert the resource after fullUrl-type members: order does not matter in JSON.
    return head[:-1] + ',"resource":' + entry.resource_text + "}"


def bundle_text(
    bundle_type: str,
    entries: Iterable[Entry],
    *,
    total: int | None = None,
    links: Iterable[tuple[str, str]] = (),
) -> str:
    """Serialise a Bundle, embedding each entry's stored resource text as-is."""
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    link_list = [{"relation": rel, "url": url} for rel, url in links]
    if link_list:
        head["link"] = link_list
    text = orjson.dumps(head).decode()
    parts = [_entry_text(e) for e in entries]
    if not parts:
        return text
    return text[:-1] + ',"entry":[' + ",".join(parts) + "]}"
