"""Search end to end: a table of queries and expected ids per parameter type, modifier and prefix.

Runs on SQLite and PostgreSQL (the database_url fixture of tests/conftest.py), over a
selection of official R4B examples plus generated resources (tests/functional/search_data.py).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import pytest

import server.fhir.interactions.search_type  # noqa: F401  (registers the CapabilityStatement part)
from tests.conftest import FhirClient
from tests.conftest import _truncate
from tests.functional.search_data import MARKER
from tests.functional.search_data import G
from tests.functional.search_data import load

BASE = "http://testserver/fhir"


@pytest.fixture
def data(session_app: Any) -> FhirClient:
    """The loaded search data set (loaded again only if another test emptied the tables)."""
    client = FhirClient(session_app.test_client())
    if client.call("GET", f"/{MARKER[0]}/{MARKER[1]}").status_code != 200:
        _truncate(session_app.extensions["rehabfhir.engine"])
        load(client)
    return client


def _get(client: FhirClient, path: str, **headers: str) -> dict[str, Any]:
    r = client.call("GET", path, headers=headers or None)
    assert r.status_code == 200, (path, r.get_data(as_text=True))
    return r.get_json(force=True)  # type: ignore[no-any-return]


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def _local(url: str) -> str:
    assert url.startswith(BASE + "/"), url
    parts = urlsplit(url)
    return parts.path[len("/fhir") :] + ("?" + parts.query if parts.query else "")


TABLE = [
    # token
    ("Patient?identifier=urn:mrn|m1", {"p1"}),
    ("Patient?identifier=m1", {"p1"}),
    ("Patient?identifier=urn:mrn|", {"p1", "p2"}),
    ("Patient?identifier=12345", {"example"}),
    ("Patient?gender=|female" + G, {"p1"}),
    ("Patient?gender=male,female" + G, {"p1", "p2"}),
    ("Patient?gender:not=male" + G, {"p1", "p3"}),
    ("Observation?code:text=body" + G, {"o1", "o2", "o6"}),
    ("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|m1", {"p1"}),
    ("Observation?subject:identifier=urn:mrn|m1", {"o6"}),
    ("Patient?active=false", {"p2"}),
    ("Observation?identifier=urn:obs|o3", {"o3"}),
    ("Observation?code=http://loinc.org|29463-7" + G, {"o1", "o2", "o6"}),
    ("Observation?code=http://loinc.org|29463-7&subject=Patient/example", {"example"}),
    ("Observation?_tag=urn:tags|t1", {"o1"}),
    ("Observation?_profile=http://example.org/fhir/StructureDefinition/weight", {"o1"}),
    ("Observation?_source=http://example.org/source/a", {"o1"}),
    ("Observation?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", {"o3"}),
    ("Observation?_id=o1,o3,nope", {"o1", "o3"}),
    # string
    ("Patient?family=muller", {"p1", "p2"}),
    ("Patient?family=MÜL", {"p1", "p2"}),
    ("Patient?family:exact=Müller", {"p1"}),
    ("Patient?family:exact=muller", set()),
    ("Patient?family:contains=smith", {"p2", "p3"}),
    ("Patient?family=chalm", {"example"}),
    ("Patient?name=anna", {"p1"}),
    ("Patient?address-city=zurich", {"p1"}),
    ("Patient?family=ghost", set()),
    ("Patient?family=muller,smith", {"p1", "p2", "p3"}),
    ("Patient?family=muller&given=bob", {"p2"}),
    ("Patient?family=100%25", set()),
    # date (date, dateTime, Period, Timing, instant)
    ("Patient?birthdate=1980" + G, {"p1"}),
    ("Patient?birthdate=1980-01" + G, {"p1"}),
    ("Patient?birthdate=1980-01-15", {"p1"}),
    ("Patient?birthdate=eq1980-01-16", set()),
    ("Patient?birthdate=1990" + G, {"p2"}),
    ("Patient?birthdate=1990-06-10", set()),
    ("Patient?birthdate=ap1990-06-10" + G, {"p2"}),
    ("Patient?birthdate=gt1990-06-15" + G, {"p2", "p3"}),
    ("Patient?birthdate=lt1990" + G, {"p1"}),
    ("Patient?birthdate=ge1990" + G, {"p2", "p3"}),
    ("Patient?birthdate=le1980-01-15" + G, {"p1"}),
    ("Patient?birthdate=ne1980-01-15" + G, {"p2", "p3"}),
    ("Patient?birthdate=1974-12-25", {"example"}),
    ("Encounter?date=2024-01" + G, {"e1"}),
    ("Encounter?date=2024-01-03" + G, set()),
    ("Encounter?date=sa2023-12-31" + G, {"e1"}),
    ("Encounter?date=eb2024-01-06" + G, {"e1"}),
    ("Encounter?date=eb2024-01-03" + G, set()),
    ("Encounter?date=ge2024-01-03" + G, {"e1"}),
    ("Observation?date=2024-01-02" + G, {"o1", "o4"}),
    ("Observation?date=2023-12-31" + G, {"o3"}),
    ("Observation?date=2024-01-02T10:00:00Z" + G, {"o1"}),
    ("Observation?date=2024-02-02" + G, set()),
    ("Observation?date=le2024-02-02" + G, {"o1", "o2", "o3", "o4", "o5", "o6", "o7"}),
    ("Observation?date=gt2024-01-15" + G, {"o2", "o5"}),
    ("Observation?date=ge2024-01-01&date=lt2024-02-01" + G, {"o1", "o4", "o5"}),
    ("CarePlan?activity-date=2024-03-01", {"cp1"}),
    ("Patient?_lastUpdated=gt2000-01-01" + G, {"p1", "p2", "p3"}),
    ("Patient?_lastUpdated=lt2000-01-01", set()),
    # number
    ("RiskAssessment?probability=0.25" + G, {"ra1"}),
    ("RiskAssessment?probability=0.2" + G, set()),
    ("RiskAssessment?probability=gt0.5" + G, {"ra2"}),
    ("RiskAssessment?probability=lt0.5" + G, {"ra1"}),
    ("RiskAssessment?probability=ge0.25" + G, {"ra1", "ra2"}),
    ("RiskAssessment?probability=le0.8" + G, {"ra1", "ra2"}),
    ("RiskAssessment?probability=ne0.25" + G, {"ra2"}),
    ("RiskAssessment?probability=ap0.26" + G, {"ra1"}),
    ("RiskAssessment?probability=sa0.25" + G, {"ra2"}),
    ("RiskAssessment?probability=eb0.8" + G, {"ra1"}),
    # quantity (UCUM-aware)
    ("Observation?value-quantity=70" + G, {"o1"}),
    ("Observation?value-quantity=70|http://unitsofmeasure.org|kg" + G, {"o1", "o2"}),
    ("Observation?value-quantity=70000|http://unitsofmeasure.org|g" + G, {"o1"}),
    ("Observation?value-quantity=gt60|http://unitsofmeasure.org|kg" + G, {"o1", "o2"}),
    ("Observation?value-quantity=lt3|http://unitsofmeasure.org|kg" + G, {"o6"}),
    ("Observation?value-quantity=80||/min", {"o3"}),
    ("Observation?value-quantity=ge80|http://unitsofmeasure.org|kg&subject=Patient/example", {"example"}),
    ("Observation?value-quantity=185|http://unitsofmeasure.org|[lb_av]", {"example"}),
    # reference
    ("Observation?subject=Patient/p1", {"o1", "o2"}),
    ("Observation?subject=p1", {"o1", "o2"}),
    (f"Observation?subject={BASE}/Patient/p1", {"o1", "o2"}),
    ("Observation?subject:Patient=p1", {"o1", "o2"}),
    ("Observation?subject:Group=p1", set()),
    ("Observation?patient=p2", {"o3", "o5"}),
    ("Observation?derived-from=Observation/o1", {"o5"}),
    ("Observation?subject=http://other.example/fhir/Patient/x9", {"o7"}),
    ("Encounter?subject=Patient/example", {"example"}),
    # uri
    ("ValueSet?url=http://example.org/fhir/ValueSet/rehab", {"vs2"}),
    ("ValueSet?url:below=http://example.org/fhir/ValueSet/rehab", {"vs1", "vs2"}),
    ("ValueSet?url:above=http://example.org/fhir/ValueSet/rehab/knee/left", {"vs1", "vs2"}),
    ("ValueSet?url=http://hl7.org/fhir/ValueSet/example-extensional", {"example-extensional"}),
    # composite (components matched within one element)
    (
        "Observation?code-value-quantity=http://loinc.org|29463-7$70|http://unitsofmeasure.org|kg" + G,
        {"o1", "o2"},
    ),
    ("Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100", {"o4", "blood-pressure"}),
    ("Observation?component-code-value-quantity=http://loinc.org|8462-4$gt100", set()),
    ("Observation?component-code-value-quantity=http://loinc.org|8462-4$lt70", {"blood-pressure"}),
    # :missing
    ("Patient?address-city:missing=true" + G, {"p2", "p3"}),
    ("Patient?address-city:missing=false" + G, {"p1"}),
    ("Observation?value-quantity:missing=true" + G, {"o4", "o5", "o7"}),
    ("Observation?subject:missing=true" + G, {"o6"}),
    ("Observation?performer:missing=false" + G, {"o1"}),
    ("Observation?code-value-quantity:missing=false" + G, {"o1", "o2", "o3", "o6"}),
    # chaining and reverse chaining
    ("Observation?subject.name=anna", {"o1", "o2"}),
    ("Observation?subject:Patient.family=smith", {"o4"}),
    ("Observation?subject.general-practitioner.family=doe", {"o1", "o2"}),
    ("Observation?subject.organization.name=rehab", {"o1", "o2"}),
    ("Observation?subject.identifier=urn:mrn|m2", {"o3", "o5"}),
    ("Patient?_has:Observation:patient:code=8867-4", {"p2"}),
    ("Patient?_has:Observation:subject:value-quantity=gt60|http://unitsofmeasure.org|kg" + G, {"p1"}),
    ("Patient?_has:Observation:patient:_has:Observation:derived-from:status=amended", {"p1"}),
    ("Patient?_has:Observation:patient:subject.family=muller" + G, {"p1", "p2"}),
]


@pytest.mark.parametrize(("query", "expected"), TABLE, ids=[q for q, _ in TABLE])
def test_search_table(data: FhirClient, query: str, expected: set[str]) -> None:
    bundle = _get(data, "/" + query)
    assert bundle["type"] == "searchset"
    assert set(_ids(bundle)) == expected
    assert bundle["total"] == len(expected)


def test_post_search_form(data: FhirClient) -> None:
    r = data.call(
        "POST", "/Patient/_search", "family=muller", content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 200
    assert set(_ids(r.get_json(force=True))) == {"p1", "p2"}


SORTS = [
    ("Patient?_sort=family" + G, ["p1", "p2", "p3"]),
    ("Patient?_sort=-family" + G, ["p3", "p2", "p1"]),
    ("Patient?_sort=-birthdate" + G, ["p3", "p2", "p1"]),
    ("Patient?_sort=_id" + G, ["p1", "p2", "p3"]),
    ("Patient?_sort=-_id" + G, ["p3", "p2", "p1"]),
    ("Observation?_sort=patient,-date&_id=o1,o2,o3,o5", ["o2", "o1", "o5", "o3"]),
    ("RiskAssessment?_sort=-probability" + G, ["ra2", "ra1"]),
    ("Observation?_sort=status,_id&_id=o1,o2,o5", ["o5", "o1", "o2"]),
]


@pytest.mark.parametrize(("query", "expected"), SORTS, ids=[q for q, _ in SORTS])
def test_sort(data: FhirClient, query: str, expected: list[str]) -> None:
    assert _ids(_get(data, "/" + query)) == expected


@pytest.mark.parametrize(
    "sort", ["", "&_sort=_id", "&_sort=-_lastUpdated", "&_sort=family", "&_sort=-birthdate,family"]
)
def test_paging_visits_every_match_once(data: FhirClient, sort: str) -> None:
    everything = _ids(_get(data, f"/Patient?_count=100{sort}"))
    seen: list[str] = []
    bundle = _get(data, f"/Patient?_count=2{sort}")
    pages = [bundle]
    while True:
        seen += _ids(bundle)
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(BASE + "/Patient?")
        if "next" not in links:
            break
        bundle = _get(data, _local(links["next"]))
        pages.append(bundle)
    assert seen == everything and len(set(seen)) == len(seen)
    back = {link["relation"]: link["url"] for link in pages[1]["link"]}["previous"]
    assert _ids(_get(data, _local(back))) == _ids(pages[0])


def test_keyset_paging_survives_changes(fhir: FhirClient) -> None:
    for i in range(6):
        fhir.call("PUT", f"/Patient/k{i}", {"resourceType": "Patient", "id": f"k{i}"})
    first = _get(fhir, "/Patient?_count=2")
    assert _ids(first) == ["k0", "k1"]
    assert fhir.call("DELETE", "/Patient/k0").status_code == 204
    fhir.call("PUT", "/Patient/k9", {"resourceType": "Patient", "id": "k9"})
    nxt = {link["relation"]: link["url"] for link in first["link"]}["next"]
    assert _ids(_get(fhir, _local(nxt))) == ["k2", "k3"]


INCLUDES = [
    ("Observation?_id=o1&_include=Observation:subject", {"p1"}),
    ("Observation?_id=o1&_include=Observation:subject:Patient", {"p1"}),
    ("Observation?_id=o1&_include=Observation:subject:Group", set()),
    (
        "Observation?_id=o1&_include=Observation:subject&_include:iterate=Patient:general-practitioner",
        {"p1", "pr1"},
    ),
    ("Observation?_id=o1&_include=*", {"p1", "pr1", "e1"}),
    ("Observation?_id=o5&_include=Observation:derived-from", {"o1"}),
    ("Patient?_id=p1&_revinclude=Observation:subject", {"o1", "o2"}),
    (
        "Patient?_id=p1&_revinclude=Observation:subject&_include:iterate=Observation:performer",
        {"o1", "o2", "pr1"},
    ),
    ("Observation?_id=o1,o2&_include=Observation:subject", {"p1"}),
]


@pytest.mark.parametrize(("query", "included"), INCLUDES, ids=[q for q, _ in INCLUDES])
def test_include(data: FhirClient, query: str, included: set[str]) -> None:
    bundle = _get(data, "/" + query)
    assert set(_ids(bundle, "include")) == included
    assert len(_ids(bundle, "include")) == len(included)
    for entry in bundle["entry"]:
        r = entry["resource"]
        assert entry["fullUrl"] == f"{BASE}/{r['resourceType']}/{r['id']}"


def test_summary_and_elements(data: FhirClient) -> None:
    (p1,) = _get(data, "/Patient?_id=p1&_summary=true")["entry"]
    assert "text" not in p1["resource"] and p1["resource"]["name"][0]["family"] == "Müller"
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in p1[
        "resource"
    ]["meta"]["tag"]
    (p1,) = _get(data, "/Patient?_id=p1&_summary=text")["entry"]
    assert set(p1["resource"]) <= {"resourceType", "id", "meta", "text"} and "text" in p1["resource"]
    (p1,) = _get(data, "/Patient?_id=p1&_summary=data")["entry"]
    assert "text" not in p1["resource"] and "address" in p1["resource"]
    (p1,) = _get(data, "/Patient?_id=p1&_elements=name,gender")["entry"]
    assert set(p1["resource"]) == {"resourceType", "id", "meta", "name", "gender"}
    counted = _get(data, "/Patient?_summary=count" + G)
    assert counted["total"] == 3 and "entry" not in counted


def test_totals_and_count(data: FhirClient) -> None:
    assert _get(data, "/Patient?_count=0&_totalMethod=count" + G)["total"] == 3
    b = _get(data, "/Patient?_count=1&_total=accurate" + G)
    assert b["total"] == 3 and len(b["entry"]) == 1
    assert "total" not in _get(data, "/Patient?_total=none" + G)
    b = _get(data, "/Patient?_count=1" + G)
    assert len(b["entry"]) == 1 and any(link["relation"] == "next" for link in b["link"])


def test_system_and_compartment_search(data: FhirClient) -> None:
    assert set(_ids(_get(data, "/?_type=Patient,Observation&_id=p1,o1"))) == {"p1", "o1"}
    assert set(_ids(_get(data, "/?_id=p1,org1"))) == {"p1", "org1"}
    assert set(_ids(_get(data, "/?_type=Patient&family=muller"))) == {"p1", "p2"}
    assert set(_ids(_get(data, "/Patient/p1/Observation"))) == {"o1", "o2"}
    assert set(_ids(_get(data, "/Patient/p1/Observation?date=2024-01-02"))) == {"o1"}
    assert set(_ids(_get(data, "/Patient/p1/*"))) >= {"p1", "o1", "o2", "e1", "cp1", "ra1"}
    assert set(_ids(_get(data, "/Practitioner/pr1/Observation"))) == {"o1"}
    link = _get(data, "/Patient/p1/Observation?_count=1")["link"][0]["url"]
    assert link.startswith(BASE + "/Patient/p1/Observation?")
    assert data.call("GET", "/Patient/p1/Organization").status_code == 404
    assert data.call("GET", "/?_type=Nope").status_code == 400


ERRORS = [
    ("Observation?date=garbage", {}),
    ("Observation?date=2024-13-45", {}),
    ("Observation?value-quantity=gtx", {}),
    ("Observation?value-quantity=1|a|b|c", {}),
    ("RiskAssessment?probability=abc", {}),
    ("Patient?family:foo=x", {}),
    ("Patient?gender:missing=maybe", {}),
    ("Observation?code-value-quantity=http://loinc.org|1", {}),
    ("Patient?_count=abc", {}),
    ("Patient?_summary=maybe", {}),
    ("Patient?_total=all", {}),
    ("Patient?_include=Nope:thing", {}),
    ("Patient?_include=Patient:family", {}),
    ("Patient?_cursor=!!!", {}),
    ("Patient?foo=bar", {"Prefer": "handling=strict"}),
    ("Patient?_sort=foo", {"Prefer": "handling=strict"}),
    ("Observation?subject.nope=1", {"Prefer": "handling=strict"}),
]


@pytest.mark.parametrize(("query", "headers"), ERRORS, ids=[q for q, _ in ERRORS])
def test_bad_parameters_are_400(data: FhirClient, query: str, headers: dict[str, str]) -> None:
    r = data.call("GET", "/" + query, headers=headers)
    assert r.status_code == 400, r.get_data(as_text=True)
    outcome = r.get_json(force=True)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "invalid"


def test_strict_names_the_parameter_and_lenient_ignores_it(data: FhirClient) -> None:
    r = data.call("GET", "/Patient?foo=bar&family=muller", headers={"Prefer": "handling=strict"})
    assert "foo" in r.get_json(force=True)["issue"][0]["diagnostics"]
    bundle = _get(data, "/Patient?foo=bar&family=muller&_format=json&_pretty=true")
    assert set(_ids(bundle)) == {"p1", "p2"}
    self_link = bundle["link"][0]["url"]
    assert "foo" not in self_link and "family=muller" in self_link
    assert any(e["search"]["mode"] == "outcome" for e in bundle["entry"])


def test_capability_statement_lists_search_params(data: FhirClient) -> None:
    statement = _get(data, "/metadata")
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient["searchParam"]}
    assert {"family", "identifier", "birthdate", "_id", "_lastUpdated", "_tag"} <= names
    assert "Patient:general-practitioner" in patient["searchInclude"]
    assert "Observation:subject" in patient["searchRevInclude"]


# -- conditional interactions -------------------------------------------------------------


def _patient(mrn: str, family: str = "Cond") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:cond", "value": mrn}],
        "name": [{"family": family}],
    }


def test_conditional_create(fhir: FhirClient) -> None:
    h = {"If-None-Exist": "identifier=urn:cond|a1"}
    first = fhir.call("POST", "/Patient", _patient("a1"), headers=h)
    assert first.status_code == 201
    again = fhir.call("POST", "/Patient", _patient("a1"), headers=h)
    assert again.status_code == 200 and again.get_json(force=True)["id"] == first.get_json(force=True)["id"]
    fhir.call("POST", "/Patient", _patient("a2"))
    multi = fhir.call("POST", "/Patient", _patient("a3"), headers={"If-None-Exist": "identifier=urn:cond|"})
    assert multi.status_code == 412
    bad = fhir.call("POST", "/Patient", _patient("a3"), headers={"If-None-Exist": "foo=bar"})
    assert bad.status_code == 400
    # A deleted winner no longer guards the criteria.
    assert fhir.call("DELETE", "/Patient/" + first.get_json(force=True)["id"]).status_code == 204
    third = fhir.call("POST", "/Patient", _patient("a1"), headers=h)
    assert third.status_code == 201 and third.get_json(force=True)["id"] != first.get_json(force=True)["id"]


def test_concurrent_conditional_creates_make_one(fhir: FhirClient, session_app: Any) -> None:
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        client = FhirClient(session_app.test_client())
        barrier.wait()
        r = client.call(
            "POST", "/Patient", _patient("race"), headers={"If-None-Exist": "identifier=urn:cond|race"}
        )
        results.append((r.status_code, r.get_json(force=True).get("id", "")))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in results) == [200] * 5 + [201]
    assert len({i for _, i in results}) == 1
    assert _get(fhir, "/Patient?identifier=urn:cond|race")["total"] == 1


def test_conditional_update_and_delete(fhir: FhirClient) -> None:
    created = fhir.call("PUT", "/Patient?identifier=urn:cond|u1", _patient("u1"))
    assert created.status_code == 201
    pid = created.get_json(force=True)["id"]
    updated = fhir.call("PUT", "/Patient?identifier=urn:cond|u1", _patient("u1", "Changed"))
    assert updated.status_code == 200
    body = updated.get_json(force=True)
    assert body["id"] == pid and body["meta"]["versionId"] == "2"
    with_id = fhir.call("PUT", "/Patient?identifier=urn:cond|u2", {**_patient("u2"), "id": "given-id"})
    assert with_id.status_code == 201 and with_id.get_json(force=True)["id"] == "given-id"
    wrong_id = fhir.call("PUT", "/Patient?identifier=urn:cond|u1", {**_patient("u1"), "id": "other"})
    assert wrong_id.status_code == 400
    assert fhir.call("PUT", "/Patient?identifier=urn:cond|", _patient("u3")).status_code == 412
    assert fhir.call("DELETE", "/Patient?identifier=urn:cond|").status_code == 412
    assert fhir.call("DELETE", "/Patient?identifier=urn:cond|u1").status_code == 204
    assert fhir.call("GET", f"/Patient/{pid}").status_code == 410
    assert fhir.call("DELETE", "/Patient?identifier=urn:cond|nothing").status_code == 204
    assert fhir.call("DELETE", "/Patient?foo=bar").status_code == 400


def test_reindex_rebuilds_index_rows(fhir: FhirClient, session_app: Any) -> None:
    import sqlalchemy as sa

    from server.store.index_models import StringIndex
    from server.store.reindex import reindex

    fhir.create(_patient("r1", "Reindexed"))
    engine = session_app.extensions["rehabfhir.engine"]
    with engine.begin() as conn:
        conn.execute(sa.delete(StringIndex))
    assert _get(fhir, "/Patient?family=reindexed")["total"] == 0
    calls: list[tuple[int, int]] = []
    factory = session_app.extensions["rehabfhir.sessions"]
    with factory() as session:
        assert reindex(session, lambda done, total: calls.append((done, total)), batch_size=1) == 1
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)
    assert _get(fhir, "/Patient?family=reindexed")["total"] == 1
