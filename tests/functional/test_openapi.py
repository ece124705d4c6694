"""The /rehab API's OpenAPI 3.1 document: valid, open without a token, not audited, complete;
every other /rehab endpoint still refuses a missing or bad token; README's requests are its
examples, validate against it and succeed on a running server with the scopes it declares.
(Every /rehab answer any test receives through FhirClient is checked too: tests/conftest.py.)"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from openapi_spec_validator import validate

from fhir_mapping import catalog
from fhir_mapping import outcomes
from server.api import openapi
from server.api.app_routes import CSP
from server.api.openapi_examples import EXAMPLES
from tests.conftest import FhirClient
from tests.conftest import token_for
from tests.openapi_check import OpenApiCheck
from tests.openapi_check import checker

SPEC_PATH = "/rehab/openapi.json"


def _audit_count(app: Any) -> int:
    with app.extensions["rehabfhir.engine"].connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one())


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi.document("https://clinic.example/fhir")
    validate(document)  # openapi-spec-validator: OpenAPI 3.1 schema and references
    assert document["openapi"] == "3.1.0"
    flows = document["components"]["securitySchemes"]["smart"]["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == "https://clinic.example/fhir/auth/authorize"
    assert flows["clientCredentials"]["tokenUrl"] == "https://clinic.example/fhir/auth/token"


def test_openapi_json_needs_no_token_and_is_not_audited(app: Any) -> None:
    client = app.test_client()
    before = _audit_count(app)
    r = client.get(SPEC_PATH)
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == openapi.document("http://testserver/fhir")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    again = client.get(SPEC_PATH, headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert client.get(SPEC_PATH, headers={"Authorization": "Bearer not-a-token"}).status_code == 200
    assert _audit_count(app) == before


def test_docs_page_needs_no_token_and_loads_only_our_files(app: Any) -> None:
    client = app.test_client()
    before = _audit_count(app)
    r = client.get("/rehab/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert r.headers["Content-Security-Policy"] == CSP
    page = r.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    assert 'data-spec="/rehab/openapi.json"' in page and "<script>" not in page
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert _audit_count(app) == before


def test_every_rehab_route_is_documented(app: Any) -> None:
    document = checker().document
    served = {
        (method, rule.rule.replace("<id_>", "{id}"))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("rehab.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == set(_operations(document))


def test_operations_declare_security_and_errors() -> None:
    document = checker().document
    scopes = set(document["components"]["securitySchemes"]["smart"]["flows"]["clientCredentials"]["scopes"])
    for method, path in _operations(document):
        op = document["paths"][path][method.lower()]
        assert op["security"], (method, path)
        assert {"401", "default"} <= set(op["responses"]), (method, path)
        for requirement in op["security"]:
            system = [s for s in requirement["smart"] if s.startswith("system/")]
            assert set(system) <= scopes


def test_enumerations_carry_the_catalog() -> None:
    schemas = checker().document["components"]["schemas"]
    assert schemas["Measure"]["enum"] == [m.key for m in catalog.MEASURES]
    knee = catalog.get("joint_rom_knee_flexion")
    assert knee is not None
    line = schemas["Measure"]["x-enum-descriptions"][schemas["Measure"]["enum"].index(knee.key)]
    assert "unit `deg`" in line and "-20 to 170 deg" in line and "side required" in line
    assert schemas["Instrument"]["enum"] == list(outcomes.INSTRUMENTS)
    assert len(schemas["Finding"]["allOf"]) == len(catalog.MEASURES)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"measure": "joint_rom_knee_flexion", "value": 95, "unit": "deg"}, "'side' is a required property"),
        (
            {"measure": "joint_rom_knee_flexion", "value": 500, "unit": "deg", "side": "left"},
            "500 is greater",
        ),
        ({"measure": "joint_rom_knee_flexion", "value": 95, "unit": "furlong", "side": "left"}, "'furlong'"),
        ({"measure": "tug_time", "value": 14, "unit": "s", "side": "left"}, "should not be valid"),
        ({"measure": "mmt_grade", "value": "6", "side": "left"}, "'6' is not one of"),
        ({"measure": "pain_nrs", "value": 11}, "11 is greater"),
        ({"measure": "grip_strength", "value": 50}, "'unit' is a required property"),
        ({"measure": "no_such_measure", "value": 1}, "'no_such_measure' is not one of"),
    ],
    ids=[
        "side-needed",
        "range",
        "unit",
        "side-forbidden",
        "grade",
        "range-no-unit",
        "unit-needed",
        "unknown",
    ],
)
def test_finding_rules_refuse_what_the_server_refuses(app: Any, body: dict[str, Any], problem: str) -> None:
    payload = {"patient": "123", "date": "2026-11-20T10:00:00Z", "findings": [body]}
    errors = checker().request("POST", "/rehab/assessments", payload)
    assert any(problem in e for e in errors), errors
    r = FhirClient(app.test_client()).call(
        "POST", "/rehab/assessments", payload, content_type="application/json"
    )
    assert r.status_code == 400 and r.get_json()["issue"][0]["expression"][0].startswith("findings[0]")


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ({str(i): 3 for i in range(1, 20)}, "does not have enough properties"),
        ({**{str(i): 3 for i in range(1, 21)}, "21": 3}, "'21' is not one of"),
        ({**{str(i): 3 for i in range(1, 20)}, "20": 5}, "5 is greater"),
    ],
    ids=["missing", "unknown-item", "range"],
)
def test_instrument_rules(items: dict[str, int], problem: str) -> None:
    payload = {"patient": "123", "date": "2026-11-20", "instrument": "lefs", "items": items}
    errors = checker().request("POST", "/rehab/outcomes", payload)
    assert any(problem in e for e in errors), errors


@pytest.mark.parametrize(
    "header", [None, "Bearer not-a-token", "Basic Zm9vOmJhcg=="], ids=["none", "bad", "basic"]
)
def test_other_rehab_endpoints_refuse_a_missing_or_bad_token(app: Any, header: str | None) -> None:
    client = app.test_client()
    check: OpenApiCheck = checker()
    for method, path in _operations(check.document):
        url = path.replace("{id}", "123")
        headers = {"Authorization": header} if header else {}
        r = client.open(url, method=method, json={} if method == "POST" else None, headers=headers)
        assert r.status_code == 401, (method, url, r.status_code)
        assert r.get_json(force=True)["issue"][0]["code"] == "login"
        assert "WWW-Authenticate" in r.headers
        assert check.response(method, url, 401, r.content_type, r.get_json(force=True)) == []


# -- README's requests -----------------------------------------------------------------------------

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_requests() -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, body) of every /rehab curl line in README's "For clinics" section."""
    section = README.read_text(encoding="utf-8").split("## For clinics", 1)[1].split("\n## ", 1)[0]
    found: list[tuple[str, str, dict[str, Any] | None]] = []
    for match in re.finditer(r"\$B(/rehab/[^\s'\"]+)(?: -d '(.*?)')?\n", section, re.DOTALL):
        body = json.loads(match.group(2)) if match.group(2) else None
        found.append(("POST" if body is not None else "GET", match.group(1), body))
    return found


def test_readme_requests_are_the_documents_examples_and_validate() -> None:
    requests = readme_requests()
    check = checker()
    documented = {(m, p) for m, p in _operations(check.document) if "{" not in p}
    assert {(m, p) for m, p, _ in requests} >= documented  # every fixed path has a README line
    posts = {path: body for method, path, body in requests if method == "POST"}
    assert posts == {path: example for path, (_, example) in EXAMPLES.items()}
    for method, path, body in requests:
        assert check.operation(method, path) is not None, (method, path)
        if body is not None:
            assert check.request(method, path, body) == [], path


def _system_scopes(check: OpenApiCheck, method: str, path: str) -> str:
    found = check.operation(method, path)
    assert found is not None
    scopes = [s for req in found[1]["security"] for s in req["smart"] if s.startswith("system/")]
    return " ".join(scopes) or "system/Patient.rs"  # the catalog needs any valid token


@pytest.mark.server
def test_readme_requests_succeed_on_a_running_server(live_server: str, database_url: str) -> None:
    """Each README request, with a token holding only the scopes the document declares for it."""
    check = checker()
    admin = {"Authorization": "Bearer " + token_for(live_server, database_url)}
    r = requests.put(
        live_server + "/Patient/123",
        json={"resourceType": "Patient", "id": "123", "name": [{"family": "Readme"}]},
        headers={**admin, "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    for method, path, body in readme_requests():
        token = token_for(live_server, database_url, _system_scopes(check, method, path))
        r = requests.request(
            method, live_server + path, json=body, headers={"Authorization": "Bearer " + token}, timeout=60
        )
        assert r.status_code == (201 if method == "POST" else 200), (path, r.text)
        problems = check.response(method, path, r.status_code, r.headers["Content-Type"], r.json())
        assert problems == [], (path, problems)
    progress = requests.get(live_server + "/rehab/patients/123/progress", headers=admin, timeout=60).json()
    assert {m["measure"] for m in progress["measures"]} >= {"joint_rom_knee_flexion", "tug_time", "odi_score"}


def test_readme_points_to_the_document_and_the_docs_page() -> None:
    section = README.read_text(encoding="utf-8").split("## For clinics", 1)[1].split("\n## ", 1)[0]
    assert "`/rehab/openapi.json`" in section and "/rehab/docs" in section
