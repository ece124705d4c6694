"""The authorization matrix's world: seeded data, real tokens per grant, and an independent oracle.

The oracle below is written from the brief (issue 11, item 8) and the official R4B Patient
CompartmentDefinition; it deliberately imports nothing from server.fhir.access (or any server
policy code): it looks only at the JSON of each stored version.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import sqlalchemy as sa

import tests.conftest as conftest
from tests.conftest import FhirClient
from tests.conftest import client_credentials_token
from tests.functional.auth_flows import add_app
from tests.functional.auth_flows import add_user
from tests.functional.auth_flows import authorize_params
from tests.functional.auth_flows import exchange
from tests.functional.auth_flows import get_code

BASE = "http://testserver/fhir"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITAL = f"{CATEGORY}|vital-signs"
LOINC = "http://loinc.org"
PAIN, GRIP = "72514-3", "83173-5"  # catalog measures pain_nrs and grip_strength
IDS = "urn:authz"  # every seeded resource has identifier IDS|<its label>

# Official R4B Patient CompartmentDefinition (hl7.fhir.r4b.core 4.3.0), for the types used here:
# type -> the elements behind its compartment parameters. Patient is also in its own compartment.
# Organization, Practitioner, Device and Task are not members (Device, Task: no Patient param).
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Patient": ("link",),
    "Observation": ("subject", "performer"),  # subject, performer
    "Encounter": ("subject",),  # patient
    "Condition": ("subject", "asserter"),  # patient, asserter
    "AuditEvent": ("agent", "entity"),  # patient = agent.who | entity.what where Patient
}
CLINICAL_TYPES = ("Patient", "Observation", "Encounter", "Condition", "Organization", "Practitioner")
ALL_TYPES = (*CLINICAL_TYPES, "Device", "Task")
PRACTICE_TYPES = (*ALL_TYPES, "Group")


# ---------------------------------------------------------------------------------------- grants


@dataclass(frozen=True)
class Grant:
    """What a token was granted, in the oracle's terms."""

    name: str
    kind: str  # system | user | patient
    scope: str
    types: frozenset[str] | None = None  # None: every type
    banned: frozenset[str] = frozenset()  # types never allowed (role caps)
    interactions: str = "cruds"
    category: dict[str, str] = field(default_factory=dict)  # type -> the only category code granted
    role: str | None = None

    def may(self, type_: str, interaction: str) -> bool:
        """Whether the grant names the type and the interaction (else the type-level answer is 403)."""
        if type_ in self.banned or interaction not in self.interactions:
            return False
        return self.types is None or type_ in self.types


GRANTS: dict[str, Grant] = {
    g.name: g
    for g in (
        Grant("system", "system", "system/*.cruds"),
        # The role cap does not grant a practitioner `user/*` (it would include AuditEvent): the app
        # names the clinical types, and asks for AuditEvent too, which the cap must cut.
        Grant(
            "practitioner",
            "user",
            "openid fhirUser " + " ".join(f"user/{t}.cruds" for t in (*PRACTICE_TYPES, "AuditEvent")),
            types=frozenset(PRACTICE_TYPES),
            banned=frozenset({"AuditEvent"}),
            role="practitioner",
        ),
        Grant(
            "auditor",
            "user",
            "openid fhirUser user/*.cruds",
            types=frozenset({"AuditEvent", "Patient"}),
            interactions="rs",
            role="auditor",
        ),
        Grant("patientA", "patient", "launch/patient openid fhirUser patient/*.rs", interactions="rs"),
        Grant(
            "patientA-vitals",
            "patient",
            f"launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs?category={VITAL}",
            types=frozenset({"Patient", "Observation"}),
            interactions="rs",
            category={"Observation": "vital-signs"},
        ),
        Grant("patientA-write", "patient", "launch/patient openid fhirUser patient/*.cruds"),
    )
}
# The seeded items (labels) and how many versions each has; see seed().
VERSIONS: dict[str, int] = {
    "org": 1,
    "practitioner": 1,
    **{f"{w}.{k}": 1 for w in "AB" for k in ("patient", "encounter", "obs-vital", "obs-lab", "condition")},
    "A.obs-deleted": 2,  # 1 live, 2 tombstone
    "B.obs-deleted": 2,
    "B2.patient-deleted": 2,
    "moved.obs": 2,  # 1 subject B, 2 subject A
    "B.device": 1,  # Device.patient = B
    "B.task": 1,  # Task.for = B
    "A.obs-performer-B": 1,  # subject A, performer Patient/B
}
LABELS = tuple(VERSIONS)

# ---------------------------------------------------------------------------------------- oracle


def references(node: Any) -> Iterator[str]:
    """Every Reference.reference anywhere inside a JSON value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def _patient_ids(refs: Iterator[str]) -> set[str]:
    out = set()
    for ref in refs:
        ref = ref.removeprefix(BASE + "/")
        kind, _, rest = ref.partition("/")
        if kind == "Patient" and rest:
            out.add(rest.split("/")[0])
    return out


def patients_of(body: dict[str, Any]) -> set[str]:
    """The patients a version points to: any Patient reference, plus its own id for a Patient."""
    found = _patient_ids(references(body))
    if body["resourceType"] == "Patient":
        found.add(body["id"])
    return found


def compartments_of(body: dict[str, Any]) -> set[str]:
    """The Patient compartments a version is a member of (official compartment parameters)."""
    type_ = body["resourceType"]
    if type_ not in PATIENT_COMPARTMENT:
        return set()
    found = _patient_ids(r for el in PATIENT_COMPARTMENT[type_] for r in references(body.get(el)))
    if type_ == "Patient":
        found.add(body["id"])
    return found


def categories(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (c.get("system", ""), c.get("code", ""))
        for cc in body.get("category", [])
        for c in cc.get("coding", [])
    }


def sees(grant: Grant, body: dict[str, Any], patient: str) -> bool:
    """Whether a (non-deleted) version is visible to the grant; `patient` is a patient grant's patient."""
    type_ = body["resourceType"]
    if not grant.may(type_, "r"):
        return False
    if type_ in grant.category and (CATEGORY, grant.category[type_]) not in categories(body):
        return False
    if grant.kind != "patient":
        return True
    pointed = patients_of(body)
    if type_ in PATIENT_COMPARTMENT and patient not in compartments_of(body):
        return False
    return pointed <= {patient}


@dataclass(frozen=True)
class Version:
    vid: str
    deleted: bool
    body: dict[str, Any] | None  # None for a tombstone


@dataclass
class Item:
    label: str
    type: str
    id: str
    versions: list[Version]

    @property
    def ref(self) -> str:
        return f"{self.type}/{self.id}"

    @property
    def current(self) -> Version:
        return self.versions[-1]

    @property
    def live(self) -> dict[str, Any] | None:
        return None if self.current.deleted else self.current.body


def visible_versions(grant: Grant, item: Item, patient: str) -> list[str]:
    """The version ids of an item the grant sees: a tombstone iff the version before it."""
    out: list[str] = []
    before = False
    for v in item.versions:
        now = before if v.deleted else sees(grant, v.body or {}, patient)
        if now:
            out.append(v.vid)
        before = now
    return out


def read_status(grant: Grant, item: Item, patient: str) -> int:
    """The expected status of GET [type]/[id]."""
    if not grant.may(item.type, "r"):
        return 403
    if item.current.vid not in visible_versions(grant, item, patient):
        return 404
    return 410 if item.current.deleted else 200


def vread_status(grant: Grant, item: Item, vid: str, patient: str) -> int:
    """The expected status of GET [type]/[id]/_history/[vid]."""
    if not grant.may(item.type, "r"):
        return 403
    if vid not in visible_versions(grant, item, patient):
        return 404
    deleted = next(v.deleted for v in item.versions if v.vid == vid)
    return 410 if deleted else 200


# ----------------------------------------------------------------------------------------- world


def _obs(subject: str, category: str, code: str | None, value: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]} if code else {"text": "unmapped"},
        "subject": {"reference": subject},
        "effectiveDateTime": f"2026-10-{value % 28 + 1:02d}T10:00:00Z",
    }
    if code == GRIP:
        body["valueQuantity"] = {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        }
    else:
        body["valueInteger"] = value
    body.update(extra)
    return body


def _collect(fhir: FhirClient, path: str) -> list[dict[str, Any]]:
    """The entries of a Bundle, following next links."""
    entries: list[dict[str, Any]] = []
    while path:
        r = fhir.call("GET", path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.get_data(as_text=True)[:300]}"
        bundle = r.get_json()
        entries += bundle.get("entry", [])
        nxt = [x["url"] for x in bundle.get("link", []) if x["relation"] == "next"]
        path = nxt[0][len(BASE) :] if nxt else ""
    return entries


def entry_key(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    """(type, id, versionId) of a Bundle entry, for a resource or a tombstone (request.url)."""
    res = entry.get("resource")
    if res is not None:
        return res["resourceType"], res["id"], res.get("meta", {}).get("versionId")
    url = entry.get("request", {}).get("url") or entry.get("fullUrl", "")
    parts = url.removeprefix(BASE + "/").split("/")
    etag = re.search(r"\d+", entry.get("response", {}).get("etag", ""))
    return parts[0], parts[1], etag.group(0) if etag else None


@dataclass
class World:
    """Seeded data and one real token per grant."""

    app: Any
    system: FhirClient
    items: dict[str, Item]
    tokens: dict[str, str]
    usernames: dict[str, str]
    dirty: bool = False

    @property
    def a(self) -> str:
        return self.items["A.patient"].id

    @property
    def b(self) -> str:
        return self.items["B.patient"].id

    def client(self, grant: str) -> FhirClient:
        return FhirClient(self.app.test_client(), self.tokens[grant])

    def by_ref(self) -> dict[tuple[str, str], Item]:
        return {(i.type, i.id): i for i in self.items.values()}

    def label(self, type_: str, id_: str) -> str:
        item = self.by_ref().get((type_, id_))
        return item.label if item else f"{type_}/{id_}"

    def refresh(self, label: str) -> None:
        """Re-read an item's versions with the system token (after a write)."""
        item = self.items[label]
        item.versions = versions_of(self.system, item.type, item.id)


def versions_of(fhir: FhirClient, type_: str, id_: str) -> list[Version]:
    out = []
    for e in _collect(fhir, f"/{type_}/{id_}/_history?_count=100"):
        _, _, vid = entry_key(e)
        res = e.get("resource")
        deleted = res is None or e.get("request", {}).get("method") == "DELETE"
        out.append(Version(str(vid), deleted, None if deleted else res))
    return sorted(out, key=lambda v: int(v.vid))


def seed(app: Any) -> World:
    """Create the data with a system token and mint one token per grant through the real flows."""
    fhir = FhirClient(app.test_client(), client_credentials_token(app))
    made: dict[str, tuple[str, str]] = {}

    def create(label: str, body: dict[str, Any]) -> str:
        body = {**body, "identifier": [{"system": IDS, "value": label}]}
        made[label] = (body["resourceType"], fhir.create(body)["id"])
        return made[label][1]

    org = create("org", {"resourceType": "Organization", "name": "Rehab Clinic"})
    doc = create("practitioner", {"resourceType": "Practitioner", "name": [{"family": "Physio"}]})
    for who in ("A", "B"):
        pid = create(
            f"{who}.patient",
            {
                "resourceType": "Patient",
                "name": [{"family": f"Family{who}"}],
                "managingOrganization": {"reference": f"Organization/{org}"},
            },
        )
        subject = f"Patient/{pid}"
        enc = create(
            f"{who}.encounter",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": subject},
            },
        )
        create(
            f"{who}.obs-vital",
            _obs(
                subject,
                "vital-signs",
                PAIN,
                7 if who == "A" else 9,
                encounter={"reference": f"Encounter/{enc}"},
                performer=[{"reference": f"Practitioner/{doc}"}],
            ),
        )
        create(f"{who}.obs-lab", _obs(subject, "laboratory", GRIP, 20 if who == "A" else 40))
        create(
            f"{who}.condition",
            {
                "resourceType": "Condition",
                "subject": {"reference": subject},
                "code": {"text": "knee pain"},
                "encounter": {"reference": f"Encounter/{enc}"},
            },
        )
        create(f"{who}.obs-deleted", _obs(subject, "vital-signs", PAIN, 3))
        assert fhir.call("DELETE", f"/Observation/{made[f'{who}.obs-deleted'][1]}").status_code in (200, 204)
    a, b = made["A.patient"][1], made["B.patient"][1]
    create("B2.patient-deleted", {"resourceType": "Patient", "name": [{"family": "FamilyB2"}]})
    assert fhir.call("DELETE", f"/Patient/{made['B2.patient-deleted'][1]}").status_code in (200, 204)
    moved = create("moved.obs", _obs(f"Patient/{b}", "vital-signs", None, 11))
    body = _obs(
        f"Patient/{a}", "vital-signs", None, 12, id=moved, identifier=[{"system": IDS, "value": "moved.obs"}]
    )
    r = fhir.call("PUT", f"/Observation/{moved}", body)
    assert r.status_code == 200, r.get_data(as_text=True)
    create("B.device", {"resourceType": "Device", "patient": {"reference": f"Patient/{b}"}})
    create(
        "B.task",
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{b}"},
        },
    )
    create(
        "A.obs-performer-B",
        _obs(f"Patient/{a}", "vital-signs", PAIN, 1, performer=[{"reference": f"Patient/{b}"}]),
    )
    items = {label: Item(label, t, i, versions_of(fhir, t, i)) for label, (t, i) in made.items()}
    assert {k: len(v.versions) for k, v in items.items()} == VERSIONS
    suffix = secrets.token_hex(3)
    users = {"pat": f"pat-{suffix}", "doc": f"doc-{suffix}", "aud": f"aud-{suffix}"}
    return World(app, fhir, items, mint_tokens(app, a, doc, users), users)


def user_token(app: Any, username: str, scope: str) -> dict[str, Any]:
    """A token from the authorization-code flow (login, consent, PKCE) for an existing user."""
    client_id, _ = add_app(app, scope)
    verifier = secrets.token_urlsafe(48)
    c = app.test_client()
    got = get_code(c, authorize_params(client_id, scope, verifier), username)
    assert "code" in got, f"{username} {scope}: {got}"
    r = exchange(c, client_id, got["code"], verifier)
    assert r.status_code == 200, r.get_data(as_text=True)
    return {**r.get_json(), "client_id": client_id}


def mint_tokens(app: Any, patient: str, practitioner: str, users: dict[str, str]) -> dict[str, str]:
    """Create the users; get each grant's token (client_credentials, or login + consent + PKCE)."""
    add_user(app, users["pat"], "patient", f"Patient/{patient}")
    add_user(app, users["doc"], "practitioner", f"Practitioner/{practitioner}")
    add_user(app, users["aud"], "auditor", None)
    tokens = {}
    for grant in GRANTS.values():
        if grant.kind == "system":
            tokens[grant.name] = client_credentials_token(app, grant.scope)
            continue
        user = {"patient": "pat", "user": "doc" if grant.role == "practitioner" else "aud"}[grant.kind]
        tok = user_token(app, users[user], grant.scope)
        if grant.kind == "patient":
            assert tok.get("patient") == patient, tok
        tokens[grant.name] = tok["access_token"]
    return tokens


# ------------------------------------------------------------------------------ the shared world

_WORLDS: dict[int, tuple[World, tuple[int, int]]] = {}


def _fingerprint(app: Any) -> tuple[int, int]:
    """Row count and version sum of the resource table: any write or truncation changes it."""
    with app.extensions["rehabfhir.engine"].connect() as conn:
        count, versions = conn.execute(sa.text("SELECT count(*), sum(version) FROM resource")).one()
    return int(count), int(versions or 0)


def current_versions(app: Any, world: World) -> dict[str, str]:
    """The current version (as stored) of every seeded item, by label; absent ones are left out."""
    ids = {i.id: i.label for i in world.items.values()}
    with app.extensions["rehabfhir.engine"].connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, version FROM resource WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": list(ids)},
        ).all()
    return {ids[r[0]]: str(r[1]) for r in rows}


def shared_world(app: Any, *, pristine: bool = True) -> World:
    """The seeded world of this database, seeded again when another test emptied it (or left it dirty).

    `pristine=False` (the write matrix) accepts a dirty world: each write's expectation holds
    whatever earlier writes did, and reseeding after every wrongly accepted write would be slow.
    """
    cached = _WORLDS.get(id(app))
    if cached is not None and (not pristine or not cached[0].dirty) and _fingerprint(app) == cached[1]:
        world = cached[0]
        if current_versions(app, world) == {i.label: i.current.vid for i in world.items.values()}:
            return world
    _empty(app)
    world = seed(app)
    _WORLDS[id(app)] = (world, _fingerprint(app))
    return world


def _empty(app: Any) -> None:
    """What the `app` fixture does before a test: empty tables (and audit witness), reset limiters."""
    conftest._truncate(app.extensions["rehabfhir.engine"])
    forget = getattr(conftest, "_forget_witness", None)
    if forget is not None:
        forget(app)
    auth = app.extensions["rehabfhir.auth"]
    auth.login_limiter.reset()
    auth.token_limiter.reset()


def rebase(world: World) -> None:
    """Accept what a test wrote: new resources are fine; a changed seeded item makes the world dirty.

    A dirty world still answers the oracle (it judges every version as stored), but no longer looks
    as seeded, so the next test that asks for the world gets a fresh one.
    """
    stored = current_versions(world.app, world)
    for label, item in world.items.items():
        if stored.get(label) != item.current.vid:
            world.refresh(label)
            world.dirty = True
    _WORLDS[id(world.app)] = (world, _fingerprint(world.app))
