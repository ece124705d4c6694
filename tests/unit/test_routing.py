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


def test_the_audit_and_the_metrics_classify_with_the_table() -> None:
    from server.audit import hook

    assert hook.classify is routing.interaction_of
    assert hook.Interaction is routing.Interaction
