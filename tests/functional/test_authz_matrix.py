"""Authorization matrix: routes x grants x data placement, each answer compared with an independent oracle.

The world (tests/functional/authz_world.py) is seeded once per database with a system token:
patients A and B with vital-signs and laboratory Observations, an Encounter and a Condition each,
a shared Organization and Practitioner, deleted Observations of A and B, a deleted Patient B2,
an Observation moved from B to A, and a Device, a Task and an Observation of A that point to B.
Every grant holds a real token issued by the server (client_credentials or the authorization
code flow with login and consent). The oracle decides from each version's JSON alone what a
grant sees; it never calls the server's policy code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.functional.authz_world import ALL_TYPES
from tests.functional.authz_world import BASE
from tests.functional.authz_world import CATEGORY
from tests.functional.authz_world import GRANTS
from tests.functional.authz_world import GRIP
from tests.functional.authz_world import IDS
from tests.functional.authz_world import LABELS
from tests.functional.authz_world import PAIN
from tests.functional.authz_world import VERSIONS
from tests.functional.authz_world import Grant
from tests.functional.authz_world import World
from tests.functional.authz_world import categories
from tests.functional.authz_world import compartments_of
from tests.functional.authz_world import current_versions
from tests.functional.authz_world import entry_key
from tests.functional.authz_world import read_status
from tests.functional.authz_world import rebase
from tests.functional.authz_world import references
from tests.functional.authz_world import sees
from tests.functional.authz_world import shared_world
from tests.functional.authz_world import visible_versions
from tests.functional.authz_world import vread_status

GRANT_NAMES = tuple(GRANTS)
PATIENT_GRANTS = tuple(g for g in GRANT_NAMES if GRANTS[g].kind == "patient")
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def world(session_app: Any) -> World:
    """The seeded world of this database (seeded again after another test emptied or changed it).

    The read routes below write nothing but AuditEvents (their own table), so they share it as is.
    """
    return shared_world(session_app)


def _ctx(route: str, grant: str, item: str = "") -> str:
    return f"[{route} | grant {grant}" + (f" | {item}]" if item else "]")


def _get(world: World, grant: str, path: str) -> Any:
    return world.client(grant).call("GET", path)


def _bundle(world: World, grant: str, path: str, where: str) -> list[dict[str, Any]]:
    """The entries of a searchset/history answer (all pages); the answer must be 200."""
    client = world.client(grant)
    entries: list[dict[str, Any]] = []
    while path:
        r = client.call("GET", path)
        assert r.status_code == 200, f"{where} GET {path}: {r.status_code} {r.get_data(as_text=True)[:400]}"
        body = r.get_json()
        entries += body.get("entry", [])
        nxt = [x["url"] for x in body.get("link", []) if x["relation"] == "next"]
        path = nxt[0][len(BASE) :] if nxt else ""
    return entries


def _status(world: World, grant: str, path: str, expected: int | tuple[int, ...], where: str) -> Any:
    r = _get(world, grant, path)
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert r.status_code in allowed, (
        f"{where} GET {path}: expected {'/'.join(map(str, allowed))}, got {r.status_code}: "
        f"{r.get_data(as_text=True)[:300]}"
    )
    return r


def _live_visible(world: World, grant: Grant, type_: str | None = None) -> set[str]:
    """Labels of current, non-deleted items the grant sees (optionally of one type)."""
    return {
        i.label
        for i in world.items.values()
        if (type_ is None or i.type == type_) and i.live is not None and sees(grant, i.live, world.a)
    }


def _known(world: World, entries: list[dict[str, Any]]) -> set[str]:
    """Labels of the seeded items among Bundle entries."""
    by_ref = world.by_ref()
    return {by_ref[k].label for e in entries if (k := entry_key(e)[:2]) in by_ref}


def _no_leak(world: World, grant: Grant, entries: list[dict[str, Any]], where: str) -> None:
    """Every resource in a Bundle (seeded or not) must be one the oracle lets the grant see."""
    for e in entries:
        res = e.get("resource")
        if res is None or res.get("resourceType") == "OperationOutcome":
            continue
        assert sees(grant, res, world.a), (
            f"{where}: {world.label(res['resourceType'], res['id'])} "
            f"(version {res.get('meta', {}).get('versionId')}) must not be in the Bundle"
        )


def _diff(where: str, got: set[Any], want: set[Any]) -> str:
    return f"{where}: unexpected {sorted(got - want)}, missing {sorted(want - got)}"


def _outcome(r: Any, where: str) -> None:
    body = r.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", f"{where}: a refusal must carry no resource: {body}"


# ---------------------------------------------------------------------------------------- read


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("label", LABELS)
def test_read(world: World, grant: str, label: str) -> None:
    item, g = world.items[label], GRANTS[grant]
    want = read_status(g, item, world.a)
    where = _ctx("read", grant, label)
    r = _status(world, grant, f"/{item.ref}", want, where)
    if want == 200:
        assert r.get_json()["id"] == item.id and r.get_json()["meta"]["versionId"] == item.current.vid
    else:
        _outcome(r, where)


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize(
    ("label", "vid"), [(k, str(v)) for k, n in VERSIONS.items() for v in range(1, n + 1)]
)
def test_vread(world: World, grant: str, label: str, vid: str) -> None:
    item, g = world.items[label], GRANTS[grant]
    want = vread_status(g, item, vid, world.a)
    where = _ctx("vread", grant, f"{label} version {vid}")
    r = _status(world, grant, f"/{item.ref}/_history/{vid}", want, where)
    if want == 200:
        assert r.get_json()["meta"]["versionId"] == vid
    else:
        _outcome(r, where)


# ------------------------------------------------------------------------------------- history


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("label", LABELS)
def test_instance_history(world: World, grant: str, label: str) -> None:
    item, g = world.items[label], GRANTS[grant]
    where = _ctx("instance _history", grant, label)
    path = f"/{item.ref}/_history"
    want = set(visible_versions(g, item, world.a))
    if not g.may(item.type, "r"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    if not want:  # nothing of it is visible: as if it did not exist
        _outcome(_status(world, grant, path, 404, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    got = {entry_key(e)[2] for e in entries}
    assert got == want, _diff(where + " versions", got, want)


def _visible_pairs(world: World, g: Grant, types: tuple[str, ...] | None) -> set[tuple[str, str]]:
    return {
        (i.label, v)
        for i in world.items.values()
        if types is None or i.type in types
        for v in visible_versions(g, i, world.a)
    }


def _history_pairs(world: World, entries: list[dict[str, Any]]) -> set[tuple[str, str]]:
    by_ref = world.by_ref()
    out = set()
    for e in entries:
        type_, id_, vid = entry_key(e)
        if (type_, id_) in by_ref:
            out.add((by_ref[(type_, id_)].label, str(vid)))
    return out


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("type_", ALL_TYPES)
def test_type_history(world: World, grant: str, type_: str) -> None:
    g = GRANTS[grant]
    where = _ctx("type _history", grant, type_)
    path = f"/{type_}/_history?_count=500"
    if not g.may(type_, "r"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    assert {entry_key(e)[0] for e in entries} <= {type_}, where
    got, want = _history_pairs(world, entries), _visible_pairs(world, g, (type_,))
    assert got == want, _diff(where + " (item, version)", got, want)


@pytest.mark.parametrize("grant", GRANT_NAMES)
def test_system_history(world: World, grant: str) -> None:
    g = GRANTS[grant]
    where = _ctx("system _history", grant)
    entries = _bundle(world, grant, "/_history?_count=500", where)
    _no_leak(world, g, entries, where)
    for e in entries:
        assert g.may(entry_key(e)[0], "r"), f"{where}: {entry_key(e)} is of a type the grant does not name"
    got, want = _history_pairs(world, entries), _visible_pairs(world, g, None)
    assert got == want, _diff(where + " (item, version)", got, want)


# -------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("type_", (*ALL_TYPES, "AuditEvent"))
def test_type_search(world: World, grant: str, type_: str) -> None:
    g = GRANTS[grant]
    where = _ctx("type search", grant, type_)
    path = f"/{type_}?_count=500"
    if not g.may(type_, "s"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    got, want = _known(world, entries), _live_visible(world, g, type_)
    assert got == want, _diff(where, got, want)


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize(
    "types", ("", "Observation,Encounter", "Patient,Observation"), ids=("all", "obs+enc", "pat+obs")
)
def test_system_search(world: World, grant: str, types: str) -> None:
    g = GRANTS[grant]
    where = _ctx(f"system search _type={types or '(none)'}", grant)
    path = "/?_count=500" + (f"&_type={types}" if types else "")
    listed = tuple(types.split(",")) if types else None
    if listed and not all(g.may(t, "s") for t in listed):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    want = {x for x in _live_visible(world, g) if listed is None or world.items[x].type in listed}
    got = _known(world, entries)
    assert got == want, _diff(where, got, want)


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("owner", ("A", "B"))
@pytest.mark.parametrize("type_", ("Observation", "Encounter", "Condition"))
def test_compartment_search(world: World, grant: str, owner: str, type_: str) -> None:
    g = GRANTS[grant]
    pid = world.items[f"{owner}.patient"].id
    where = _ctx(f"compartment search Patient/{owner}/{type_}", grant)
    path = f"/Patient/{pid}/{type_}?_count=500"
    if not g.may(type_, "s"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    if g.kind == "patient" and pid != world.a:
        _outcome(_status(world, grant, path, 404, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    want = {x for x in _live_visible(world, g, type_) if pid in compartments_of(world.items[x].live or {})}
    got = _known(world, entries)
    assert got == want, _diff(where, got, want)


# Include / revinclude: (query, base type, [(source type, element, target type, reverse)]).
INCLUDES = {
    "Observation _include subject,performer,encounter": (
        "/Observation?_count=500&_include=Observation:subject&_include=Observation:performer"
        "&_include=Observation:encounter",
        "Observation",
        [
            ("Observation", "subject", False),
            ("Observation", "performer", False),
            ("Observation", "encounter", False),
        ],
    ),
    "Patient _revinclude Observation,Encounter,Condition:subject": (
        "/Patient?_count=500&_revinclude=Observation:subject&_revinclude=Encounter:subject"
        "&_revinclude=Condition:subject",
        "Patient",
        [("Observation", "subject", True), ("Encounter", "subject", True), ("Condition", "subject", True)],
    ),
    "Practitioner _revinclude Observation:performer": (
        "/Practitioner?_count=500&_revinclude=Observation:performer",
        "Practitioner",
        [("Observation", "performer", True)],
    ),
    "Condition _include encounter,subject": (
        "/Condition?_count=500&_include=Condition:encounter&_include=Condition:subject",
        "Condition",
        [("Condition", "encounter", False), ("Condition", "subject", False)],
    ),
    "Encounter _revinclude Observation:encounter": (
        "/Encounter?_count=500&_revinclude=Observation:encounter",
        "Encounter",
        [("Observation", "encounter", True)],
    ),
}


def _refs(body: dict[str, Any] | None, element: str) -> set[str]:
    return {r.removeprefix(BASE + "/") for r in references((body or {}).get(element))}


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("name", tuple(INCLUDES))
def test_include_revinclude(world: World, grant: str, name: str) -> None:
    g = GRANTS[grant]
    path, base, links = INCLUDES[name]
    where = _ctx(name, grant)
    if not g.may(base, "s"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    matches = _live_visible(world, g, base)
    included: set[str] = set()
    live = {x: world.items[x] for x in _live_visible(world, g)}
    for src_type, element, reverse in links:
        for m in matches:
            target = world.items[m]
            for x, cand in live.items():
                if reverse and cand.type == src_type and target.ref in _refs(cand.live, element):
                    included.add(x)
                if not reverse and cand.ref in _refs(target.live, element):
                    included.add(x)
    got_match = _known(world, [e for e in entries if e.get("search", {}).get("mode", "match") == "match"])
    assert got_match == matches, _diff(where + " matches", got_match, matches)
    got_all, want_all = _known(world, entries), matches | included
    assert got_all == want_all, _diff(where + " matches+includes", got_all, want_all)


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("category", ("vital-signs", "laboratory"))
def test_has(world: World, grant: str, category: str) -> None:
    g = GRANTS[grant]
    where = _ctx(f"Patient?_has:Observation:subject:category={category}", grant)
    path = f"/Patient?_has:Observation:subject:category={category}&_count=500"
    if not g.may("Patient", "s"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    if not g.may("Observation", "s"):  # the inner search names a type the grant lacks: 403 or nothing
        r = _status(world, grant, path, (200, 403), where)
        if r.status_code == 200:
            assert _known(world, r.get_json().get("entry", [])) == set(), where + ": leaks through _has"
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    obs = [world.items[x] for x in _live_visible(world, g, "Observation")]
    want = {
        p
        for p in _live_visible(world, g, "Patient")
        if any(
            world.items[p].ref in _refs(o.live, "subject")
            and (CATEGORY, category) in categories(o.live or {})
            for o in obs
        )
    }
    got = _known(world, entries)
    assert got == want, _diff(where, got, want)


CHAINS = {
    "Observation?subject:Patient.family=FamilyA": ("Observation", "subject", "FamilyA"),
    "Observation?subject:Patient.family=FamilyB": ("Observation", "subject", "FamilyB"),
    "Observation?performer:Patient.family=FamilyB": ("Observation", "performer", "FamilyB"),
    "Encounter?subject:Patient.family=FamilyB": ("Encounter", "subject", "FamilyB"),
    "Condition?subject:Patient.family=FamilyA": ("Condition", "subject", "FamilyA"),
}


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("query", tuple(CHAINS))
def test_chain(world: World, grant: str, query: str) -> None:
    g = GRANTS[grant]
    base, element, family = CHAINS[query]
    where = _ctx(query, grant)
    path = "/" + query + "&_count=500"
    if not g.may(base, "s"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    # The chain may only go through patients the grant sees (else it reveals their names).
    patients = {
        world.items[p].ref
        for p in _live_visible(world, g, "Patient")
        if any(n.get("family") == family for n in (world.items[p].live or {}).get("name", []))
    }
    want = {x for x in _live_visible(world, g, base) if _refs(world.items[x].live, element) & patients}
    got = _known(world, entries)
    assert got == want, _diff(where, got, want)


# --------------------------------------------------------------------------------- $everything


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("owner", ("A", "B"))
def test_everything(world: World, grant: str, owner: str) -> None:
    g = GRANTS[grant]
    pid = world.items[f"{owner}.patient"].id
    where = _ctx(f"Patient/{owner}/$everything", grant)
    path = f"/Patient/{pid}/$everything?_count=500"
    if g.kind == "patient" and pid != world.a:
        _outcome(_status(world, grant, path, 404, where), where)
        return
    if not g.may("Patient", "r"):
        _outcome(_status(world, grant, path, 403, where), where)
        return
    entries = _bundle(world, grant, path, where)
    _no_leak(world, g, entries, where)
    got = _known(world, entries)
    visible = _live_visible(world, g)
    members = {x for x in visible if pid in compartments_of(world.items[x].live or {})}
    assert members <= got, _diff(where + " (the compartment's visible resources)", got & members, members)
    assert got <= visible, _diff(where, got, visible)
    assert f"{owner}.patient" in got, where


# ------------------------------------------------------------------------------ /rehab progress


def _pain_and_grip(world: World, g: Grant, pid: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for x in sorted(_live_visible(world, g, "Observation")):
        body = world.items[x].live or {}
        if f"Patient/{pid}" not in _refs(body, "subject"):
            continue
        codes = {c.get("code") for c in body.get("code", {}).get("coding", [])}
        if PAIN in codes:
            out.setdefault("pain_nrs", []).append(body["valueInteger"])
        if GRIP in codes:
            out.setdefault("grip_strength", []).append(body["valueQuantity"]["value"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("grant", GRANT_NAMES)
@pytest.mark.parametrize("owner", ("A", "B"))
def test_rehab_progress(world: World, grant: str, owner: str) -> None:
    g = GRANTS[grant]
    pid = world.items[f"{owner}.patient"].id
    where = _ctx(f"/rehab/patients/{owner}/progress", grant)
    path = f"/rehab/patients/{pid}/progress"
    if not g.may("Observation", "s"):
        _status(world, grant, path, 403, where)
        return
    if g.kind == "patient" and pid != world.a:
        _status(world, grant, path, 404, where)
        return
    r = _status(world, grant, path, 200, where)
    got = {m["measure"]: sorted(p["value"] for p in m["series"]) for m in r.get_json()["measures"]}
    want = _pain_and_grip(world, g, pid)
    assert got == want, f"{where}: measures {got}, expected {want}"


# -------------------------------------------------------------------------------------- $export


@pytest.mark.parametrize(
    ("grant", "path"),
    [(g, "/$export?_type=Observation") for g in PATIENT_GRANTS]
    + [(g, "/Patient/$export") for g in PATIENT_GRANTS]
    + [("auditor", "/$export?_type=Observation"), ("practitioner", "/$export?_type=AuditEvent")],
)
def test_export_kick_off_refused(world: World, grant: str, path: str) -> None:
    where = _ctx(f"$export kick-off {path}", grant)
    r = world.client(grant).call("GET", path, headers=ASYNC)
    assert r.status_code == 403, (
        f"{where}: expected 403, got {r.status_code} {r.get_data(as_text=True)[:300]}"
    )


# --------------------------------------------------------------------------------------- batch


def _read_requests(world: World, g: Grant) -> list[tuple[str, str, int | tuple[int, ...]]]:
    """(what, url, expected status) for every read-like request the matrix makes plainly."""
    out: list[tuple[str, str, int | tuple[int, ...]]] = []
    for label, item in world.items.items():
        out.append((f"read {label}", item.ref, read_status(g, item, world.a)))
        for v in item.versions:
            out.append(
                (
                    f"vread {label} v{v.vid}",
                    f"{item.ref}/_history/{v.vid}",
                    vread_status(g, item, v.vid, world.a),
                )
            )
    for type_ in ALL_TYPES:
        out.append((f"search {type_}", f"{type_}?_count=500", 200 if g.may(type_, "s") else 403))
    return out


@pytest.mark.parametrize("grant", GRANT_NAMES)
def test_batch_reads_answer_as_plain_requests(world: World, grant: str) -> None:
    g = GRANTS[grant]
    requests = _read_requests(world, g)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": url}} for _, url, _ in requests],
    }
    r = world.client(grant).call("POST", "/", bundle)
    assert r.status_code == 200, f"{_ctx('batch', grant)}: {r.status_code} {r.get_data(as_text=True)[:300]}"
    out = r.get_json()["entry"]
    assert len(out) == len(requests)
    wrong = []
    for (what, _, want), entry in zip(requests, out, strict=True):
        status = int(entry["response"]["status"].split()[0])
        allowed = want if isinstance(want, tuple) else (want,)
        if status not in allowed:
            wrong.append(f"{what}: {status} (expected {want})")
        res = entry.get("resource")
        if (
            res
            and res.get("resourceType") not in ("OperationOutcome", "Bundle")
            and not sees(g, res, world.a)
        ):
            wrong.append(f"{what}: body of {world.label(res['resourceType'], res['id'])} leaked")
        if res and res.get("resourceType") == "Bundle":
            for e in res.get("entry", []):
                if e.get("resource") and not sees(g, e["resource"], world.a):
                    wrong.append(
                        f"{what}: {world.label(e['resource']['resourceType'], e['resource']['id'])} leaked"
                    )
    assert not wrong, f"{_ctx('batch entries', grant)}:\n  " + "\n  ".join(wrong)


# -------------------------------------------------------------------------------------- writes


def _obs_for(world: World, patient: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": IDS + ":new", "value": tag}],
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
        "code": {"text": "written by the matrix"},
        "subject": {"reference": f"Patient/{world.items[patient].id}"},
        **extra,
    }


def _writes(world: World) -> dict[str, tuple[str, str, dict[str, str], Any]]:
    """Named writes: (method, path, headers, body). Conditional criteria use the seeded identifiers."""
    a, b = world.items["A.patient"].id, world.items["B.patient"].id
    obs_b = world.items["B.obs-vital"]
    return {
        "create Observation for A": ("POST", "/Observation", {}, _obs_for(world, "A.patient", "a1")),
        "create Observation for B": ("POST", "/Observation", {}, _obs_for(world, "B.patient", "b1")),
        "create Observation for A performed by Patient/B": (
            "POST",
            "/Observation",
            {},
            _obs_for(world, "A.patient", "a2", performer=[{"reference": f"Patient/{b}"}]),
        ),
        "create Device for B": (
            "POST",
            "/Device",
            {},
            {"resourceType": "Device", "patient": {"reference": f"Patient/{b}"}},
        ),
        "create Organization": ("POST", "/Organization", {}, {"resourceType": "Organization", "name": "X"}),
        "update B.obs-vital to subject A": (
            "PUT",
            f"/{obs_b.ref}",
            {},
            {**(obs_b.versions[0].body or {}), "subject": {"reference": f"Patient/{a}"}},
        ),
        "delete B.obs-vital": ("DELETE", f"/{obs_b.ref}", {}, None),
        "delete org": ("DELETE", f"/{world.items['org'].ref}", {}, None),
        "update practitioner": (
            "PUT",
            f"/{world.items['practitioner'].ref}",
            {},
            {**(world.items["practitioner"].versions[0].body or {}), "name": [{"family": "Rewritten"}]},
        ),
        "conditional create If-None-Exist patient=B": (
            "POST",
            "/Observation",
            {"If-None-Exist": f"patient={b}"},
            _obs_for(world, "A.patient", "a3"),
        ),
        "conditional update Observation?patient=B": (
            "PUT",
            f"/Observation?patient={b}",
            {},
            _obs_for(world, "A.patient", "a4"),
        ),
        "conditional delete Observation?identifier=B.obs-lab": (
            "DELETE",
            f"/Observation?identifier={IDS}|B.obs-lab",
            {},
            None,
        ),
    }


# Expected status per write and grant: the patient-A write token, the read-only patient tokens ("ro"),
# the practitioner and the auditor. Conditional writes whose criteria match only B's data are "no
# match" for A. The practitioner runs only the writes that leave the seeded data as it is.
ANY_REFUSAL = (403, 404)
WRITE_EXPECT: dict[str, dict[str, tuple[int, ...]]] = {
    "create Observation for A": {"patientA-write": (201,), "practitioner": (201,)},
    "create Observation for B": {"patientA-write": (403,), "practitioner": (201,)},
    "create Observation for A performed by Patient/B": {"patientA-write": (403,), "practitioner": (201,)},
    "create Device for B": {"patientA-write": (403,), "practitioner": (201,)},
    "create Organization": {"patientA-write": (403,), "practitioner": (201,)},
    "update B.obs-vital to subject A": {"patientA-write": ANY_REFUSAL},
    "delete B.obs-vital": {"patientA-write": ANY_REFUSAL},
    "delete org": {"patientA-write": (403,)},
    "update practitioner": {"patientA-write": (403,)},
    "conditional create If-None-Exist patient=B": {"patientA-write": (201,), "practitioner": (412,)},
    "conditional update Observation?patient=B": {"patientA-write": (201,), "practitioner": (412,)},
    "conditional delete Observation?identifier=B.obs-lab": {"patientA-write": (200, 204, 404)},
}
WRITE_CASES = [
    (name, grant, row.get(grant, (403,) if grant in ("patientA", "patientA-vitals", "auditor") else None))
    for name, row in WRITE_EXPECT.items()
    for grant in ("patientA-write", "patientA", "patientA-vitals", "practitioner", "auditor")
]
WRITE_CASES = [(n, g, w) for n, g, w in WRITE_CASES if w is not None]


def _unchanged(world: World, labels: list[str], where: str) -> None:
    """B's and the shared seeded items are as before (a refused or no-match write changed nothing)."""
    stored = current_versions(world.app, world)
    changed = [x for x in labels if stored.get(x) != world.items[x].current.vid]
    assert not changed, f"{where}: changed {changed}"


@pytest.fixture
def write_world(session_app: Any) -> Iterator[World]:
    """The seeded world, possibly changed by earlier (wrongly accepted) writes."""
    w = shared_world(session_app, pristine=False)
    yield w
    rebase(w)


@pytest.mark.parametrize(("name", "grant", "want"), WRITE_CASES, ids=[f"{g}:{n}" for n, g, _ in WRITE_CASES])
@pytest.mark.parametrize("via", ("plain", "batch"))
def test_write(write_world: World, name: str, grant: str, want: tuple[int, ...], via: str) -> None:
    world = write_world
    method, path, headers, body = _writes(world)[name]
    where = _ctx(f"{name} ({method} {path}, {via})", grant)
    status, answer = _send(world, grant, method, path, headers, body, via, where)
    assert status in want, f"{where}: expected {'/'.join(map(str, want))}, got {status}: {str(answer)[:300]}"
    if grant != "practitioner":
        if status in (200, 201) and answer and answer.get("resourceType") not in (None, "OperationOutcome"):
            assert sees(GRANTS[grant], answer, world.a), f"{where}: answered with a resource A may not see"
        guarded = [x for x in world.items if not x.startswith("A.") and x != "moved.obs"]
        _unchanged(world, guarded, where)


def _send(
    world: World, grant: str, method: str, path: str, headers: dict[str, str], body: Any, via: str, where: str
) -> tuple[int, Any]:
    """Send a write plainly or as the only entry of a batch; return (status, resource or outcome)."""
    client = world.client(grant)
    if via == "plain":
        r = client.call(method, path, body, headers=headers)
        return r.status_code, r.get_json(force=True, silent=True)
    request: dict[str, Any] = {"method": method, "url": path.lstrip("/")}
    if "If-None-Exist" in headers:
        request["ifNoneExist"] = headers["If-None-Exist"]
    entry: dict[str, Any] = {"request": request}
    if body is not None:
        entry["resource"] = body
    r = client.call("POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert r.status_code == 200, f"{where}: batch answered {r.status_code} {r.get_data(as_text=True)[:300]}"
    out = r.get_json()["entry"][0]
    return int(out["response"]["status"].split()[0]), out.get("resource") or out["response"].get("outcome")
