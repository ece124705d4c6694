"""The pages in a real browser: sign-in, patient picker, charts with seeded data, auditor console."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Site
from tests.browser.conftest import failed_requests
from tests.browser.conftest import shot
from tests.browser.conftest import sign_in
from tests.browser.seed import GRIP_LEFT
from tests.browser.seed import TUG
from tests.browser.seed import XSS_NAME

pytestmark = [pytest.mark.browser, pytest.mark.server]


def test_home_asks_to_sign_in(page: Any, site: Site) -> None:
    page.goto(site.base + "/app/")
    page.locator("#sign-in-main").wait_for()
    assert "Sign in to see this page" in page.inner_text("#status")
    shot(page, "01-home-signed-out")
    assert page.console_errors == []
    assert failed_requests(page, site) == []


def test_patient_pages_need_sign_in(page: Any, site: Site) -> None:
    page.goto(site.base + "/app/patients")
    page.locator("#sign-in-main").wait_for()
    assert page.locator("#patient-list").is_hidden()
    assert page.locator("#patient-search").is_hidden()


def test_picker_lists_patients_and_escapes_names(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients", site.clinician)
    page.locator("#patient-list tbody tr").first.wait_for()
    rows = page.locator("#patient-list tbody tr")
    assert rows.count() == 3
    names = page.locator("#patient-list tbody tr td:first-child").all_inner_texts()
    assert "Ada Lovelace" in names
    assert f"Mallory {XSS_NAME}" in names  # shown as text ...
    assert page.locator("#patient-list script").count() == 0  # ... never as markup
    assert page.dialogs == []
    shot(page, "02-patient-picker")
    page.fill("input[name=name]", "Lovel")
    page.locator("#patient-search button[type=submit]").click()
    expect(page.locator("#patient-list tbody tr")).to_have_count(1)
    page.locator("a.patient-link", has_text="Ada Lovelace").click()
    page.wait_for_url(site.base + "/app/patients/ada")
    expect(page.locator("#patient-name")).to_have_text("Ada Lovelace")
    assert page.console_errors == []
    assert failed_requests(page, site) == []


def test_patient_view_charts_seeded_series(page: Any, site: Site) -> None:
    if not site.rehab:
        pytest.skip("GET /rehab/patients/{id}/progress is not wired into this server yet (issue 7)")
    sign_in(page, site, "/app/patients/ada", site.clinician)
    page.locator("figure.measure").first.wait_for()
    assert page.inner_text("#patient-name") == "Ada Lovelace"
    tug = page.locator("figure.measure", has_text="Timed Up and Go")
    assert tug.locator("svg.chart circle.point").count() == len(TUG)
    assert tug.locator("svg.chart line.target").count() == 1  # goal target from Goal/goal-tug
    assert tug.locator("svg.chart line.baseline").count() == 1
    table_values = tug.locator("table tbody td.num").all_inner_texts()[::2]
    assert table_values == [f"{v:.1f}" for v in TUG]
    grip = page.locator(".sided", has_text="Grip strength")
    assert grip.locator("figure.measure").count() == 2  # left and right side by side
    left = grip.locator("figure.measure[data-side=left]")
    assert left.locator("svg.chart circle.point").count() == len(GRIP_LEFT)
    assert "Bridges" in page.inner_text("#program")
    assert "Timed Up and Go under 10 seconds" in page.inner_text("#goals")
    assert "Neuromuscular reeducation" in page.inner_text("#sessions")
    shot(page, "03-patient-progress")
    assert page.console_errors == []
    assert failed_requests(page, site) == []


def test_patient_view_escapes_script_name(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients/xss", site.clinician)
    expect(page.locator("#patient-name")).not_to_have_text("Patient")
    assert page.inner_text("#patient-name") == f"Mallory {XSS_NAME}"
    assert page.locator("main script").count() == 0
    assert page.dialogs == []
    expected = "No measurements recorded yet" if site.rehab else "does not offer the /rehab progress service"
    expect(page.locator("#measures")).to_contain_text(expected)
    expect(page.locator("#sessions")).to_contain_text("No treatment sessions recorded yet")
    shot(page, "04-patient-xss-and-empty")


def test_unknown_patient_has_a_designed_state(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients/nobody", site.clinician)
    page.locator("#status.state.empty").wait_for()
    assert "No patient with this id" in page.inner_text("#status")
    shot(page, "05-patient-not-found")


def test_audit_console_filters_sorts_and_exports(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/audit", site.auditor)
    page.locator("#chain").wait_for()
    expect(page.locator("#chain")).not_to_have_text("Checking the hash chain…")
    if not site.auth:
        pytest.skip("audit console needs the auth and audit packages")
    page.locator("#audit-table tbody tr").first.wait_for()
    shot(page, "06-audit-console")
    page.select_option("select[name=action]", "R")
    page.locator("#audit-filters button[type=submit]").click()
    page.wait_for_load_state("networkidle")
    actions = page.locator("#audit-table td[data-col=action]").all_inner_texts()
    assert actions and set(actions) == {"R"}
    with page.expect_download() as dl:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(dl.value.path().read_text())))
    assert rows and {r["action"] for r in rows} == {"R"}
    with page.expect_download() as dl:
        page.click("#export-ndjson")
    events = [json.loads(line) for line in dl.value.path().read_text().splitlines()]
    assert len(events) == len(rows)
    assert all(e["resourceType"] == "AuditEvent" and e["action"] == "R" for e in events)
    page.locator("#audit-table tbody tr").first.click()
    assert '"resourceType": "AuditEvent"' in page.inner_text("#event-json")
    shot(page, "07-audit-event-json")
