"""/rehab/docs in headless Chromium: Swagger UI renders every operation of the OpenAPI document,
with README's request examples, without a token and without a CSP violation or failed load."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import shot
from tests.conftest import running_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def docs_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on an empty SQLite database: the docs need no data and no account."""
    url = "sqlite:///" + str(tmp_path_factory.mktemp("docs") / "docs.db")
    with running_server(url, workers=1) as base:
        yield base


def _document(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/rehab/openapi.json", timeout=30) as r:
        return json.load(r)  # type: ignore[no-any-return]


def test_docs_page_shows_every_endpoint_and_the_readme_examples(page: Any, docs_base: str) -> None:
    document = _document(docs_base)
    page.goto(docs_base + "/rehab/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    shown = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for block in page.locator(".opblock").all()
    }
    wanted = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert shown == wanted
    assert page.locator(".info .title").inner_text().startswith(document["info"]["title"])
    # The assessment's README example is the request example shown.
    operation = page.locator("#operations-clinic-postAssessment")
    operation.locator(".opblock-summary").click()
    example = operation.locator(".body-param__example, .highlight-code").first
    example.wait_for(timeout=10_000)
    assert "joint_rom_knee_flexion" in example.inner_text()
    assert page.locator("button.authorize").count() == 1  # the OAuth 2 scheme is offered
    shot(page, "docs-rehab")
    assert page.console_errors == []  # no script error, no CSP violation
    assert page.failed == []


def test_docs_static_files_are_the_vendored_ones() -> None:
    static = pathlib.Path(__file__).resolve().parents[2] / "server" / "web" / "static" / "swagger-ui"
    note = (static / "VENDORED.md").read_text(encoding="utf-8")
    assert "swagger-ui-dist **5.35.0**" in note and "Apache-2.0" in note
    assert (static / "LICENSE").exists() and (static / "NOTICE").exists()
    assert sorted(p.name for p in static.iterdir() if p.suffix in (".js", ".css")) == [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
    ]
