"""NUL in request bodies and audit facts; standard reason phrases on the status line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from server.api.responses import StandardReasonPhrases
from server.api.responses import standard_status
from server.audit.chain import columns
from server.audit.events import AuditFacts
from server.fhir.resources import nul_path


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"resourceType": "Patient", "name": [{"family": "a\x00"}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "name": [{"given": ["x", "y\x00"]}]}, "Patient.name[0].given[1]"),
        ({"resourceType": "Patient", "a\x00": 1}, "Patient.a\ufffd"),
        ({"resourceType": "Pat\x00ient"}, "resourceType"),
        ([{"op": "add", "value": "\x00"}], "[0].value"),
        ({"assessment": {"note": "\x00"}}, "assessment.note"),
        ("\x00", "(body)"),
        ({"resourceType": "Patient", "name": [{"family": "tab\tok"}]}, None),
        ({"resourceType": "Patient", "multipleBirthInteger": 0}, None),
    ],
    ids=["value", "list", "key", "resourceType", "patch", "no-resourceType", "bare", "tab", "zero"],
)
def test_nul_path(doc: Any, path: str | None) -> None:
    assert nul_path(doc) == path


def test_nul_path_walks_deep_documents_without_recursion() -> None:
    doc: Any = "\x00"
    for _ in range(5000):
        doc = [doc]
    assert nul_path(doc) == "[0]" * 5000


def test_audit_facts_replace_nul_so_the_record_can_be_stored() -> None:
    facts = AuditFacts(
        "read", 4, datetime(2024, 1, 1), "http://x", resource="Patient/a\x00", query="GET /a\x00"
    )
    cols = columns(facts)
    assert (cols["resource"], cols["query"]) == ("Patient/a\ufffd", "GET /a\ufffd")
    assert "\x00" not in cols["body"] and "\\u0000" not in cols["body"]


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ("401 UNAUTHORIZED", "401 Unauthorized"),
        ("200 OK", "200 OK"),
        ("422 UNPROCESSABLE ENTITY", "422 Unprocessable Entity"),
        ("503 SERVICE UNAVAILABLE", "503 Service Unavailable"),
        ("599 WHATEVER", "599 WHATEVER"),
    ],
)
def test_standard_status(status: str, line: str) -> None:
    assert standard_status(status) == line


def test_middleware_rewrites_the_status_it_passes_on() -> None:
    def app(_environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 NOT FOUND", [("Content-Type", "text/plain")])
        return [b"x"]

    seen: list[str] = []
    body = StandardReasonPhrases(app)({}, lambda status, headers, exc_info=None: seen.append(status))
    assert (seen, list(body)) == (["404 Not Found"], [b"x"])
