"""Topic-based Subscription (Backport IG on R4B): request checks, notification bundles, $status and $events.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/ · https://hl7.org/fhir/R4B/subscriptionstatus.html

A Subscription names a topic canonical in `criteria`, narrows it with backport-filter-criteria
extensions, and asks for a rest-hook channel. The server checks it against the topic and the
creating token, stores it as `requested` with its owner and grant (server.store.subscriptions
through the `Store` handed in by the composition), and the delivery worker does the handshake
and activates it. Codes: subscription-status (requested|active|error|off), subscription-
notification-type (handshake|heartbeat|event-notification|query-status|query-event), channel
type rest-hook, all hl7.fhir.r4b.core 4.3.0; the extension URLs and the payload content codes
(empty|id-only|full-resource) are the IG's (1.1.0).
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from server.errors import BusinessRuleError
from server.errors import ForbiddenError
from server.errors import InvalidRequestError
from server.errors import MethodNotAllowedError
from server.errors import NotFoundError
from server.fhir.access import OWNER_TAGS
from server.fhir.access import AccessContext
from server.fhir.access import owner_of
from server.fhir.access import owner_subject
from server.fhir.access import permits
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.http import instant
from server.fhir.interactions import capabilities
from server.fhir.interactions.create import create
from server.fhir.interactions.update import update
from server.fhir.operations import registry
from server.fhir.repository import FhirRepository
from server.fhir.resources import ID_RE
from server.fhir.subscriptions import topics

SD = f"{topics.IG}/StructureDefinition/"
FILTER = SD + "backport-filter-criteria"
HEARTBEAT = SD + "backport-heartbeat-period"
TIMEOUT = SD + "backport-timeout"
MAX_COUNT = SD + "backport-max-count"
CONTENT = SD + "backport-payload-content"
CONTENTS = ("empty", "id-only", "full-resource")
MEDIA_TYPES = ("application/fhir+json", "application/json")
TYPE = "Subscription"
REDACTED = "[redacted]"  # what a stored Subscription shows instead of a header's value
# The IG's (1.1.0) profile, operations and the R4B server CapabilityStatement this server instantiates.
PROFILE = SD + "backport-subscription"
OPERATIONS = {
    "status": f"{topics.IG}/OperationDefinition/backport-subscription-status",
    "events": f"{topics.IG}/OperationDefinition/backport-subscription-events",
}
SERVER_STATEMENT = f"{topics.IG}/CapabilityStatement/backport-subscription-server"


class Store(Protocol):
    """Subscription state storage (server.store.subscriptions), handed in by the composition."""

    def record(self, repo: FhirRepository, values: dict[str, Any]) -> None:
        """Store a new subscription's state inside the current transaction."""

    def state(self, repo: FhirRepository, id_: str) -> Any:
        """The subscription's state (StateView), or None."""

    def events(self, repo: FhirRepository, id_: str, since: int, until: int, limit: int) -> list[Any]:
        """Its stored events (EventView) numbered since..until, oldest first."""

    def owned(self, repo: FhirRepository, client_id: str, subject: str | None, limit: int) -> list[Any]:
        """The states of one owner's subscriptions (client, and user when given), by id."""


@dataclass(frozen=True, slots=True)
class Config:
    """What the composition decides: storage, whether http to loopback is allowed, limits."""

    store: Store
    allow_loopback: bool = False
    max_timeout: int = 30
    max_events: int = 100


_config: Config | None = None


def use(config: Config) -> None:
    """Set the storage and limits (once, by the app's composition)."""
    global _config
    _config = config


def _cfg() -> Config:
    if _config is None:
        raise NotFoundError("Subscriptions are not enabled on this server")
    return _config


def _invalid(message: str, where: str) -> BusinessRuleError:
    return BusinessRuleError(message, expression=(where,), message_id="MSG_SUBSCRIPTION_INVALID")


def _ext(element: Any, url: str) -> list[Any]:
    if not isinstance(element, dict):
        return []
    extensions = element.get("extension")
    return [
        next((v for k, v in e.items() if k.startswith("value")), None)
        for e in (extensions if isinstance(extensions, list) else ())
        if isinstance(e, dict) and e.get("url") == url
    ]


def _one_int(element: Any, url: str, where: str, low: int) -> int | None:
    values = _ext(element, url)
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], int) or isinstance(values[0], bool) or values[0] < low:
        raise _invalid(f"{url.rsplit('/', 1)[1]} must be one integer of at least {low}", where)
    return values[0]


def loopback(host: str) -> bool:
    """Whether a URL host is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(channel: dict[str, Any], allow_loopback: bool) -> str:
    endpoint = channel.get("endpoint")
    where = "Subscription.channel.endpoint"
    if not isinstance(endpoint, str) or not endpoint:
        raise _invalid("A rest-hook channel needs an endpoint", where)
    parts = urlsplit(endpoint)
    if parts.scheme == "https" and parts.hostname:
        return endpoint
    if parts.scheme == "http" and parts.hostname and loopback(parts.hostname) and allow_loopback:
        return endpoint
    raise _invalid("The endpoint must be an https URL (http only to loopback in development mode)", where)


def _headers(channel: dict[str, Any]) -> list[str]:
    headers = channel.get("header") or []
    if not isinstance(headers, list):
        raise _invalid("header is a list of 'Name: value' strings", "Subscription.channel.header")
    for n, header in enumerate(headers):
        name, sep, _value = str(header).partition(":")
        if not isinstance(header, str) or not sep or not name.strip() or any(c in header for c in "\r\n"):
            raise _invalid("A header is 'Name: value' on one line", f"Subscription.channel.header[{n}]")
    return list(headers)


def _redacted(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as stored and served: header values (often credentials) only in the state table."""
    channel = dict(resource.get("channel") or {})
    if channel.get("header"):
        channel["header"] = [f"{h.partition(':')[0].strip()}: {REDACTED}" for h in channel["header"]]
    return {**resource, "channel": channel}


def _restored(headers: list[str], old: Any) -> list[str]:
    """A PUT of the read resource sends REDACTED values back: keep the stored ones for those names."""
    kept = {h.partition(":")[0].strip().lower(): h for h in (old.headers if old is not None else ())}
    out = []
    for n, header in enumerate(headers):
        name, _, value = header.partition(":")
        if value.strip() == REDACTED:
            if name.strip().lower() not in kept:
                raise _invalid(
                    f"No stored value for header {name.strip()!r}", f"Subscription.channel.header[{n}]"
                )
            header = kept[name.strip().lower()]
        out.append(header)
    return out


def _filters(resource: dict[str, Any], topic: topics.Topic) -> list[tuple[str, str]]:
    allowed = {name for name, _definition, _text in topic.filters}
    out: list[tuple[str, str]] = []
    for n, value in enumerate(_ext(resource.get("_criteria"), FILTER)):
        where = f"Subscription.criteria.extension[{n}]"
        text = str(value or "")
        type_, sep, query = text.partition("?")
        if not sep:
            type_, query = topic.resource, text
        name, eq, wanted = query.partition("=")
        if type_ != topic.resource or not eq or name.split(":")[0] not in allowed or "&" in query:
            raise _invalid(
                f"Filter {text!r}: the topic allows one of {sorted(allowed)} on {topic.resource} per filter",
                where,
            )
        try:
            topics.matches(topic.resource, query, {"resourceType": topic.resource})
        except Exception:  # noqa: BLE001  a filter the search grammar refuses is the client's error
            raise _invalid(f"Filter {text!r} is not a valid search parameter", where) from None
        out.append((name, wanted))
    return out


def _end(value: Any) -> datetime | None:
    """Subscription.end as naive UTC; one already past is refused."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("end must be an instant", "Subscription.end") from None
    if moment.tzinfo is None:
        raise _invalid("end must be an instant with a time zone", "Subscription.end")
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment <= datetime.now(UTC).replace(tzinfo=None):
        raise _invalid("end is in the past", "Subscription.end")
    return moment


def ended(state: Any, moment: datetime) -> bool:
    """Whether the subscription's end (if any) has come."""
    return state.ends is not None and state.ends <= moment


def check(resource: dict[str, Any], ctx: AccessContext, cfg: Config) -> dict[str, Any]:
    """Check a Subscription against the IG, its topic and the token; return its state values."""
    topic = topics.BY_URL.get(str(resource.get("criteria") or ""))
    if topic is None:
        raise _invalid(
            "criteria must be the canonical URL of a SubscriptionTopic of this server",
            "Subscription.criteria",
        )
    if not ctx.can(topic.resource, "r"):
        raise ForbiddenError(f"The token may not read {topic.resource}: no notifications of this topic")
    channel = resource.get("channel") or {}
    if not isinstance(channel, dict) or channel.get("type") != "rest-hook":
        raise _invalid("Only the rest-hook channel is supported", "Subscription.channel.type")
    if (channel.get("payload") or "application/fhir+json") not in MEDIA_TYPES:
        raise _invalid(f"payload must be one of {', '.join(MEDIA_TYPES)}", "Subscription.channel.payload")
    contents = _ext(channel.get("_payload"), CONTENT) or ["id-only"]
    if len(contents) != 1 or contents[0] not in CONTENTS:
        raise _invalid(
            f"payload content must be one of {', '.join(CONTENTS)}", "Subscription.channel.payload"
        )
    where = "Subscription.channel.extension"
    timeout = _one_int(channel, TIMEOUT, where, 1) or min(10, cfg.max_timeout)
    if timeout > cfg.max_timeout:
        raise _invalid(f"timeout may be at most {cfg.max_timeout} seconds", where)
    return {
        "ends": _end(resource.get("end")),
        "topic": topic.url,
        "filters": _filters(resource, topic),
        "endpoint": _endpoint(channel, cfg.allow_loopback),
        "headers": _headers(channel),
        "content": contents[0],
        "heartbeat": _one_int(channel, HEARTBEAT, where, 1),
        "timeout": timeout,
        "max_count": _one_int(channel, MAX_COUNT, where, 1) or 1,
        "client_id": ctx.client_id,
        "subject": owner_subject(ctx),
        "grant_scopes": " ".join(sorted(ctx.scopes)),
        "patient": ctx.patient,
        "user_id": ctx.user,
        # What auth revokes: delivery stops when either is (server.subscriptions.grants).
        "token_id": ctx.token_id,
        "token_family": ctx.token_family,
    }


def _store(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, id_: str | None, **extra: Any
) -> FhirResponse:
    cfg = _cfg()
    ctx.require(TYPE, "c" if id_ is None else "u")
    if ctx.unrestricted:
        raise ForbiddenError("A subscription belongs to a client: create it with a client's token")
    if not isinstance(req.body, dict) or req.body.get("resourceType") != TYPE:
        raise InvalidRequestError("The body must be a Subscription", expression=("Subscription",))
    if req.header("if-none-exist"):
        raise InvalidRequestError("A Subscription is not created conditionally", expression=("Subscription",))
    resource = dict(req.body)
    values = check(resource, ctx, cfg)
    resource = _redacted(resource)
    resource["status"] = "requested"  # the handshake decides when it is active
    resource.pop("error", None)
    resource["meta"] = _owner_meta(resource.get("meta"), ctx)
    with repo.transaction():
        if id_ is None:
            id_ = extra.get("assigned_id") or str(uuid.uuid4())
            values["headers"] = _restored(values["headers"], None)
            resp = create(repo, ctx, req, TYPE, body=resource, assigned_id=id_)
        else:
            old = cfg.store.state(repo, id_)
            if old is not None and not owns(ctx, old):  # another owner's: invisible
                raise NotFoundError(f"No subscription {id_}", message_id="MSG_NO_EXIST")
            values["headers"] = _restored(values["headers"], old)
            resp = update(repo, ctx, req, TYPE, id_, body=resource)
        cfg.store.record(repo, {"id": id_, "status": "requested", "base_url": req.base_url, **values})
    return resp


def _owner_meta(meta: Any, ctx: AccessContext) -> dict[str, Any]:
    """The request's meta with one owner tag (server.fhir.access): the creating client and user."""
    meta = dict(meta) if isinstance(meta, dict) else {}
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") in OWNER_TAGS)]
    mine = owner_of(ctx)
    meta["tag"] = [*tags, mine] if mine is not None else tags
    return meta


def owns(ctx: AccessContext, state: Any) -> bool:
    """Whether the caller is the subscription's owner: its client, and its user when it has one."""
    return bool(ctx.client_id) and state.client_id == ctx.client_id and state.subject == owner_subject(ctx)


def create_subscription(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, **extra: Any
) -> FhirResponse:
    """POST /Subscription: check, store as requested with the owner's grant (the worker shakes hands)."""
    return _store(repo, ctx, req, None, **extra)


def update_subscription(repo: FhirRepository, ctx: AccessContext, req: FhirRequest, id_: str) -> FhirResponse:
    """PUT /Subscription/id by its owner: checked again, requested again (a new handshake)."""
    return _store(repo, ctx, req, id_)


def refuse_patch() -> FhirResponse:
    """PATCH /Subscription/id and a conditional PUT /Subscription?...: refused (PUT /Subscription/id)."""
    raise MethodNotAllowedError(
        "A Subscription is changed with PUT /Subscription/id (checked again, new handshake)"
    )


# -- notifications -----------------------------------------------------------------------------


def grant_context(state: Any, parse: Any) -> AccessContext:
    """The owner's access, rebuilt from the grant recorded on the subscription (`parse`: scopes -> policy)."""
    policy = parse(state.grant_scopes)
    rules = tuple(r for r in policy.rules if r.context != "patient" or state.patient is not None)
    return AccessContext(
        user=state.user_id,
        client_id=state.client_id,
        scopes=frozenset(policy.scopes),
        patient=state.patient,
        rules=rules,
    )


def wanted(state: Any, topic: topics.Topic, body: dict[str, Any]) -> bool:
    """Whether a version fits the subscription's filters (all of them)."""
    return all(topics.matches(topic.resource, f"{name}={value}", body) for name, value in state.filters)


def _instant(moment: datetime | None) -> str:
    return instant(moment or datetime.now(UTC).replace(tzinfo=None))


def notification(
    state: Any, kind: str, items: list[tuple[Any, dict[str, Any] | None]], content: str | None = None
) -> dict[str, Any]:
    """A notification Bundle (type history): the SubscriptionStatus, then one entry per event shown.

    `items` are (event, body): body None means the event is listed without its resource.
    """
    content = content or state.content
    base = state.base_url.rstrip("/")
    status: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "id": str(uuid.uuid4()),
        "status": state.status,
        "type": kind,
        "eventsSinceSubscriptionStart": str(state.events),
        "subscription": {"reference": f"{TYPE}/{state.id}"},
        "topic": state.topic,
    }
    entries: list[dict[str, Any]] = []
    events = []
    for event, body in items:
        note: dict[str, Any] = {"eventNumber": str(event.number), "timestamp": _instant(event.recorded)}
        if content != "empty":
            ref = f"{event.focus_type}/{event.focus_id}/_history/{event.focus_version}"
            note["focus"] = {"reference": f"{base}/{ref}"}
            entry: dict[str, Any] = {
                "fullUrl": f"{base}/{event.focus_type}/{event.focus_id}",
                "request": {"method": event.method, "url": f"{event.focus_type}/{event.focus_id}"},
                "response": {"status": "201" if event.method == "POST" else "200"},
            }
            if content == "full-resource" and body is not None:
                entry["resource"] = body
            entries.append(entry)
        events.append(note)
    if events:
        status["notificationEvent"] = events
    first = {
        "fullUrl": f"urn:uuid:{status['id']}",
        "resource": status,
        "request": {"method": "GET", "url": f"{TYPE}/{state.id}/$status"},
        "response": {"status": "200"},
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": _instant(None),
        "entry": [first, *entries],
    }


def shown(repo: FhirRepository, ctx: AccessContext, event: Any) -> tuple[bool, dict[str, Any] | None]:
    """Whether `ctx` may be told of the event, and the version's body (None if it is gone)."""
    stored = repo.read_version(event.focus_type, event.focus_id, event.focus_version)
    body = orjson.loads(stored.body) if stored is not None and stored.body else None
    return (body is not None and permits(ctx, event.focus_type, "r", body)), body


# -- operations ---------------------------------------------------------------------------------


def _owned(repo: FhirRepository, ctx: AccessContext, id_: str | None) -> Any:
    ctx.require(TYPE, "r")
    state = _cfg().store.state(repo, id_ or "")
    if state is None or state.error == "deleted":  # a deleted one is gone for $status and $events too
        raise NotFoundError(f"No subscription {id_}", message_id="MSG_NO_EXIST")
    if not ctx.unrestricted and not owns(ctx, state):  # another owner's: invisible
        raise NotFoundError(f"No subscription {id_}", message_id="MSG_NO_EXIST")
    return state


@registry.register(TYPE, "status", instance=True)
def status_operation(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Subscription/id/$status: a Bundle with the subscription's SubscriptionStatus (query-status)."""
    return FhirResponse(200, notification(_owned(repo, ctx, id_), "query-status", []))


MAX_STATUSES = 1000  # Subscription/$status answers for at most this many subscriptions


def _parameters(body: Any) -> list[tuple[str, str]]:
    """(name, value) of a POSTed Parameters resource's primitive parameters (anything else: none)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return []
    parameters = body.get("parameter")
    out = []
    for parameter in parameters if isinstance(parameters, list) else ():
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            continue
        values = [v for k, v in parameter.items() if k.startswith("value") and isinstance(v, str)]
        out.extend((parameter["name"], v) for v in values)
    return out


@registry.register(TYPE, "status", instance=False)
def statuses_operation(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Subscription/$status?id=a,b&status=active: a searchset of the caller's SubscriptionStatus.

    Ids the caller does not own (or that do not exist) are left out, as a search leaves out what
    the caller may not see; without an id, every subscription of the caller (at most MAX_STATUSES).
    """
    ctx.require(TYPE, "r")
    cfg = _cfg()
    given = [*req.params, *_parameters(req.body)]
    ids = [i for key, value in given if key == "id" for i in value.split(",") if i]
    wanted_status = {s for key, value in given if key == "status" for s in value.split(",") if s}
    if len(ids) > MAX_STATUSES:
        raise InvalidRequestError(f"At most {MAX_STATUSES} ids", expression=("id",))
    for value in ids:
        if not ID_RE.fullmatch(value):
            raise InvalidRequestError(f"{value[:80]!r} is not a resource id", expression=("id",))
    if ctx.unrestricted:
        states = [cfg.store.state(repo, i) for i in dict.fromkeys(ids)]
    elif not ctx.client_id:
        states = []
    elif ids:
        states = [s for s in (cfg.store.state(repo, i) for i in dict.fromkeys(ids)) if s and owns(ctx, s)]
    else:
        states = cfg.store.owned(repo, ctx.client_id, owner_subject(ctx), MAX_STATUSES)
    found = [s for s in states if s is not None and (not wanted_status or s.status in wanted_status)]
    entries = []
    for state in found:
        status = notification(state, "query-status", [])["entry"][0]["resource"]
        entries.append(
            {"fullUrl": f"urn:uuid:{status['id']}", "resource": status, "search": {"mode": "match"}}
        )
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": _instant(None),
        "total": len(entries),
        "entry": entries,
    }
    return FhirResponse(200, bundle)


_MAX_NUMBER = 2**63 - 1  # the event number column is a BIGINT: a larger bound matches no fewer events


def _number(req: FhirRequest, name: str, default: int) -> int:
    value = req.param(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()):  # str.isdigit alone also takes e.g. '²'
        raise InvalidRequestError(f"{name} must be an event number", expression=(name,))
    return min(int(value), _MAX_NUMBER)


@registry.register(TYPE, "events", instance=True)
def events_operation(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str | None
) -> FhirResponse:
    """Subscription/id/$events: stored events since..until (query-event), each judged for the caller now."""
    state = _owned(repo, ctx, id_)
    content = req.param("content") or state.content
    if content not in CONTENTS:
        raise InvalidRequestError(f"content must be one of {', '.join(CONTENTS)}", expression=("content",))
    since = _number(req, "eventsSinceNumber", 1)
    until = _number(req, "eventsUntilNumber", state.events)
    items = []
    for event in _cfg().store.events(repo, state.id, since, until, _cfg().max_events):
        allowed, body = shown(repo, ctx, event)
        if allowed:
            items.append((event, body))
    return FhirResponse(200, notification(state, "query-event", items, content))


@capabilities.contribute
def declare(statement: dict[str, Any], req: FhirRequest) -> None:
    """Say the server follows the IG: its statement, the profile, $status and $events."""
    entry = next((e for e in statement["rest"][0]["resource"] if e["type"] == TYPE), None)
    if entry is None:
        return
    statement.setdefault("instantiates", []).append(SERVER_STATEMENT)
    # Changed only by PUT /Subscription/id (refuse_patch): no patch, no conditional update.
    entry["interaction"] = [i for i in entry.get("interaction", ()) if i.get("code") != "patch"]
    entry["conditionalUpdate"] = False
    entry.setdefault("supportedProfile", []).append(PROFILE)
    entry.setdefault("operation", []).extend({"name": n, "definition": d} for n, d in OPERATIONS.items())
