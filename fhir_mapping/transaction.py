"""The transaction Bundle a clinic payload becomes, and the references the server assigned.

https://hl7.org/fhir/R4B/http.html#transaction
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fhir_mapping import profiles


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource of the transaction, with its role in the clinic payload."""

    role: str
    full_url: str
    resource: dict[str, Any]


def urn() -> str:
    """Return a fresh urn:uuid fullUrl."""
    return f"urn:uuid:{uuid.uuid4()}"


def entry(role: str, resource: dict[str, Any], full_url: str | None = None) -> Entry:
    """Return an Entry (a new urn:uuid unless given)."""
    return Entry(role, full_url or urn(), resource)


def bundle(entries: list[Entry]) -> dict[str, Any]:
    """Return the transaction Bundle that POSTs every entry, each claiming its role's profile."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": e.full_url,
                "resource": profiles.claim(e.role, e.resource),
                "request": {"method": "POST", "url": e.resource["resourceType"]},
            }
            for e in entries
        ],
    }


def references(entries: list[Entry], response: dict[str, Any]) -> dict[str, list[str]]:
    """Return role -> ["Type/id", ...] from a transaction-response (entries answer in request order)."""
    out: dict[str, list[str]] = {}
    for e, answered in zip(entries, response.get("entry") or [], strict=False):
        location = str((answered.get("response") or {}).get("location") or "")
        parts = location.split("/_history/")[0].split("/")
        out.setdefault(e.role, []).append("/".join(parts[-2:]))
    return out


def by_url(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Return fullUrl -> resource, to follow references inside the payload."""
    return {e.full_url: e.resource for e in entries}


def of_role(entries: list[Entry], role: str) -> list[dict[str, Any]]:
    """Return the resources of one role, in order."""
    return [e.resource for e in entries if e.role == role]


def patient_of(resource: dict[str, Any]) -> str:
    """Return the Patient id a resource's subject/patient points to."""
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return str(ref).removeprefix("Patient/")
