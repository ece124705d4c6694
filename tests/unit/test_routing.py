"""The route table: one answer to "which interaction is this method and path" for all its users."""

from __future__ import annotations

from typing import Any

import pytest

from server.fhir import routing
from server.fhir.routing import Interaction

CASES = [
    ("GET", "/", Interaction("search-system")),
    ("POST", "/", Interaction("transaction")),
    ("GET", "/metadata", Interaction("capabilities")),
    ("GET", "/_history", Interaction("history-system")),
    ("POST", "/$export", Interaction("operation")),
    ("GET", "/Patient", Interaction("search-type", "Patient")),
    ("HEAD", "/Patient", Interaction("search-type", "Patient")),
    ("POST", "/Patient", Interaction("create", "Patient")),
    ("PUT", "/Patient", Interaction("update", "Patient")),
    ("DELETE", "/Patient", Interaction("delete", "Patient")),
    ("POST", "/Patient/_search", Interaction("search-type", "Patient")),
    ("GET", "/Patient/_search", Interaction("search-type", "Patient")),
    ("GET", "/Patient/_history", Interaction("history-type", "Patient")),
    ("GET", "/Patient/$everything", Interaction("operation", "Patient")),
    ("GET", "/Patient/1", Interaction("read", "Patient", "1")),
    ("HEAD", "/Patient/1", Interaction("read", "Patient", "1")),
    ("PUT", "/Patient/1", Interaction("update", "Patient", "1")),
    ("PATCH", "/Patient/1", Interaction("patch", "Patient", "1")),
    ("DELETE", "/Patient/1", Interaction("delete", "Patient", "1")),
    ("GET", "/Patient/1/_history", Interaction("history-instance", "Patient", "1")),
    ("GET", "/Patient/1/_history/2", Interaction("vread", "Patient", "1", "2")),
    ("POST", "/Patient/1/$everything", Interaction("operation", "Patient", "1")),
    ("GET", "/Patient/1/Observation", Interaction("search-type", "Observation")),
    # AuditEvent: its own routes (the audit trail's tables), named like every other type's.
    ("GET", "/AuditEvent", Interaction("search-type", "AuditEvent")),
    ("POST", "/AuditEvent/_search", Interaction("search-type", "AuditEvent")),
    ("POST", "/AuditEvent", Interaction("create", "AuditEvent")),
    ("PUT", "/AuditEvent", Interaction("update", "AuditEvent")),
    ("DELETE", "/AuditEvent", Interaction("delete", "AuditEvent")),
    ("GET", "/AuditEvent/$export-ndjson", Interaction("operation", "AuditEvent")),
    ("POST", "/AuditEvent/$verify", Interaction("operation", "AuditEvent")),
    ("GET", "/AuditEvent/7", Interaction("read", "AuditEvent", "7")),
    ("PUT", "/AuditEvent/7", Interaction("update", "AuditEvent", "7")),
    ("PATCH", "/AuditEvent/7", Interaction("patch", "AuditEvent", "7")),
    ("DELETE", "/AuditEvent/7", Interaction("delete", "AuditEvent", "7")),
    ("GET", "/AuditEvent/7/_history", Interaction("history-instance", "AuditEvent", "7")),
    ("GET", "/AuditEvent/7/_history/1", Interaction("vread", "AuditEvent", "7", "1")),
    # No route takes these (404/405): named after the method, for the audit trail.
    ("POST", "/Patient/1", Interaction("create", "Patient", "1")),
    ("PATCH", "/Patient", Interaction("patch", "Patient")),
    ("PUT", "/", Interaction("transaction")),
    ("DELETE", "/Patient/1/$x", Interaction("operation", "Patient", "1")),
]


@pytest.mark.parametrize(("method", "path", "expected"), CASES, ids=[f"{m} {p}" for m, p, _ in CASES])
def test_each_method_and_path_is_one_interaction(method: str, path: str, expected: Interaction) -> None:
    parts = [p for p in path.split("/") if p]
    assert routing.interaction_of(method, parts) == expected


def test_the_table_is_more_specific_first() -> None:
    found = routing.match("GET", ["Patient", "$everything"])
    assert found is not None and found[0].endpoint == "type_operation"
    found = routing.match("GET", ["Patient", "$"])  # "$" alone names no operation: an id
    assert found is not None and found[0].endpoint == "read_route"


def test_flask_serves_exactly_the_table(app: Any) -> None:
    rules = {
        (rule.endpoint.removeprefix("fhir."), rule.rule, frozenset(rule.methods - {"HEAD", "OPTIONS"}))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("fhir.")
    }
    table = {(r.endpoint, r.path, frozenset(r.methods)) for r in routing.ROUTES}
    assert rules == table


def _is_fhir_path(rule: str) -> bool:
    """Whether a Flask rule is in FHIR's URL space: the base itself, a type, or a system path."""
    from server.fhir.resources import resource_types

    first = rule.strip("/").split("/")[0]
    return first in ("", "metadata") or first[:1] in ("<", "$", "_") or first in resource_types()


def test_every_flask_rule_under_the_fhir_base_comes_from_the_table(app: Any) -> None:
    table = {(f"fhir.{r.endpoint}", r.path) for r in routing.ROUTES}
    fhir_rules = [r for r in app.url_map.iter_rules() if _is_fhir_path(r.rule)]
    assert {"/AuditEvent", "/AuditEvent/<id_>", "/<type_>"} <= {r.rule for r in fhir_rules}
    for rule in fhir_rules:  # AuditEvent too: no blueprint of its own any more
        assert (rule.endpoint, rule.rule) in table, (rule.endpoint, rule.rule)
    assert routing.missing_handlers() == set()  # the audit trail provided the AuditEvent handlers


def test_audit_event_routes_are_more_specific_than_the_per_type_ones() -> None:
    for method, parts, endpoint in [
        ("GET", ["AuditEvent"], "audit_search"),
        ("GET", ["AuditEvent", "_search"], "audit_search_post"),
        ("GET", ["AuditEvent", "$export-ndjson"], "audit_export_ndjson"),
        ("GET", ["AuditEvent", "$verify"], "audit_operation"),
        ("GET", ["AuditEvent", "1"], "audit_read"),
        ("GET", ["AuditEvent", "1", "_history", "1"], "audit_vread"),
        ("GET", ["AuditEvent", "1", "$validate"], "instance_operation"),  # no AuditEvent route: per type
        ("GET", ["Patient", "1"], "read_route"),
    ]:
        found = routing.match(method, parts)
        assert found is not None and found[0].endpoint == endpoint, (parts, found)


def test_a_bundle_entry_reaches_the_audit_event_routes() -> None:
    found = routing.match("DELETE", ["AuditEvent", "x"])
    assert found is not None and found[0].endpoint == "audit_delete" and found[0].in_bundle
    found = routing.match("GET", ["AuditEvent", "$export-ndjson"])
    assert found is not None and not found[0].in_bundle  # a stream: not in a Bundle


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/AuditEvent"),
        ("GET", "/Patient/1/AuditEvent"),
        ("POST", "/AuditEvent/_search"),
        ("GET", "/AuditEvent/$export-ndjson"),
        ("GET", "/AuditEvent/$verify"),
        ("GET", "/AuditEvent/1"),
        ("GET", "/AuditEvent/1/_history"),
        ("GET", "/AuditEvent/1/_history/1"),
        ("POST", "/AuditEvent"),
        ("PUT", "/AuditEvent/ehr-1"),
        ("DELETE", "/AuditEvent/1"),
    ],
)
def test_audit_event_routes_refuse_a_missing_or_bad_token_and_are_audited(
    app: Any, method: str, path: str
) -> None:
    import sqlalchemy as sa

    def rows() -> int:
        with app.extensions["rehabfhir.engine"].connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one())

    c = app.test_client()
    before = rows()
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = c.open(path, method=method, headers={**headers, "Accept": "*/*"})
        assert r.status_code == 401, (method, path, r.get_data(as_text=True))
        assert r.get_json()["resourceType"] == "OperationOutcome"
    assert rows() == before + 2  # each refusal is on the trail


def test_the_audit_and_the_metrics_classify_with_the_table() -> None:
    from server.audit import hook

    assert hook.classify is routing.interaction_of
    assert hook.Interaction is routing.Interaction
