"""Pure builders of IHE BALP AuditEvent JSON (no IO, no Flask, no SQLAlchemy).

https://profiles.ihe.net/ITI/BALP/ · https://hl7.org/fhir/R4B/auditevent.html
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUTH_EVENT = "https://rehabfhir.org/fhir/CodeSystem/auth-event"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# restful-interaction code -> AuditEvent.action (BALP: C create, R read, U update, D delete, E query).
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "history-instance": "R",
    "history-type": "E",
    "history-system": "E",
    "search-type": "E",
    "search-system": "E",
    "search": "E",
    "operation": "E",
    "transaction": "E",
    "batch": "E",
    "capabilities": "R",
}
OUTCOME_TEXT = {0: "Success", 4: "Minor failure", 8: "Serious failure", 12: "Major failure"}
REST = (EVENT_TYPE, "rest", "Restful Operation")
USER_AUTHENTICATION = (DCM, "110114", "User Authentication")
AUTH_SUBTYPES = {"login": (DCM, "110122")}  # DICOM "Login"; token events use AUTH_EVENT codes


def outcome_for_status(status: int) -> int:
    """Map an HTTP status to an outcome: 0 ok, 8 denied (401/403), 4 client error, 12 server error."""
    if status < 400:
        return 0
    if status in (401, 403):
        return 8
    return 4 if status < 500 else 12


def trail_id(text: str) -> bool:
    """Whether an AuditEvent id is of the server's own trail (ASCII digits); submitted events' are not."""
    return text.isascii() and text.isdigit()


def chain_pk(text: str) -> int | None:
    """The audit record key an id names, or None: never an out-of-range number for the database."""
    return int(text) if trail_id(text) and len(text) <= 18 else None


@dataclass(frozen=True, slots=True)
class AuditFacts:
    """What one audit record says: who did what to which data, when, and how it ended."""

    subtype: str
    outcome: int
    recorded: datetime  # naive UTC, millisecond precision
    server: str  # this server's base URL
    user: str | None = None  # fhirUser (Practitioner/1) or subject
    client_id: str | None = None
    address: str | None = None
    resource: str | None = None  # Type/id or Type/id/_history/v
    query: str | None = None  # the raw request (method, URL, form body)
    patient: str | None = None  # Patient/id
    description: str | None = None
    event_type: tuple[str, str, str] = REST
    subtype_system: str = INTERACTION
    action: str | None = None

    def __post_init__(self) -> None:
        # The facts come from the request (path, query, ids, form fields): a NUL in them must not stop
        # the request being audited, and PostgreSQL text cannot hold one. U+FFFD marks where it was.
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                object.__setattr__(self, name, value.replace("\x00", "\ufffd"))

    @property
    def action_code(self) -> str:
        """The action letter, derived from the subtype unless given."""
        return self.action or ACTIONS.get(self.subtype, "E")


_TEXT_FIELDS = (
    "subtype",
    "server",
    "user",
    "client_id",
    "address",
    "resource",
    "query",
    "patient",
    "description",
)


def instant(moment: datetime) -> str:
    """FHIR instant of a naive UTC datetime."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reference(value: str) -> dict[str, Any]:
    if "/" in value and not value.startswith(("urn:", "http:", "https:")):
        return {"reference": value}
    if value.startswith(("http:", "https:")):
        return {"reference": value}
    return {"identifier": {"value": value}}


def _agents(f: AuditFacts) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    if f.user:
        agents.append(
            {
                "type": {
                    "coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]
                },
                "who": _reference(f.user),
                "requestor": True,
            }
        )
    client: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"value": f.client_id or "anonymous"}},
        "requestor": not f.user,
    }
    if f.address:
        client["network"] = {"address": f.address, "type": "2"}
    agents.append(client)
    agents.append(
        {
            "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
            "who": {"identifier": {"value": f.server}},
            "requestor": False,
            "network": {"address": f.server, "type": "5"},
        }
    )
    return agents


def _entities(f: AuditFacts) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if f.resource:
        entities.append(
            {
                "what": {"reference": f.resource},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if f.query is not None:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(f.query.encode()).decode(),
            }
        )
    if f.patient:
        entities.append(
            {
                "what": {"reference": f.patient},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    return entities


def audit_event(f: AuditFacts) -> dict[str, Any]:
    """Build the AuditEvent resource (without id; the store assigns it)."""
    system, code, display = f.event_type
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": system, "code": code, "display": display},
        "subtype": [{"system": f.subtype_system, "code": f.subtype}],
        "action": f.action_code,
        "recorded": instant(f.recorded),
        "outcome": str(f.outcome),
    }
    if f.description or f.outcome:
        event["outcomeDesc"] = f.description or OUTCOME_TEXT.get(f.outcome, "Failure")
    event["agent"] = _agents(f)
    event["source"] = {
        "observer": {"display": "rehabfhir", "identifier": {"value": f.server}},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = _entities(f)
    if entities:
        event["entity"] = entities
    return event


def auth_facts(
    kind: str,
    outcome: int,
    *,
    server: str,
    recorded: datetime,
    user: str | None,
    client_id: str | None,
    address: str | None,
    detail: str | None,
) -> AuditFacts:
    """Facts of an authentication event (login, token-issue, token-refresh, token-revoke).

    A sign-in is BALP's User Authentication event with DICOM's Login subtype (110122); the token
    events have no standard code and use ours. A failure is the same event with a failed outcome.
    """
    system, code = AUTH_SUBTYPES.get(kind, (AUTH_EVENT, kind))
    return AuditFacts(
        subtype=code,
        outcome=outcome,
        recorded=recorded,
        server=server,
        user=user,
        client_id=client_id,
        address=address,
        description=detail,
        event_type=USER_AUTHENTICATION,
        subtype_system=system,
        action="E",
    )
