"""The pages in a real browser: sign-in, patient picker, charts with seeded data, auditor console."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from playwright.sync_api import expect

from fhir_mapping import analytics
from fhir_mapping.observations import build_observation
from tests.browser.conftest import Site
from tests.browser.conftest import failed_requests
from tests.browser.conftest import shot
from tests.browser.conftest import sign_in
from tests.browser.seed import DATES
from tests.browser.seed import GRIP_LEFT
from tests.browser.seed import PAIN_OUT_OF_RANGE
from tests.browser.seed import TUG
from tests.browser.seed import TUG_PRELIMINARY
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
    sign_in(page, site, "/app/patients", site.clinician, screenshots=True)
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
    tug = page.locator("figure.measure[data-measure=tug_time]")
    # the preliminary TUG (TUG_PRELIMINARY) is not a point: four, in time order
    assert tug.locator("svg.chart circle.point").count() == len(TUG)
    assert tug.locator("svg.chart line.target").count() == 1  # goal target from Goal/goal-tug
    assert tug.locator("svg.chart line.baseline").count() == 1
    assert tug.locator("td[data-col=date]").all_inner_texts() == list(DATES)
    assert tug.locator("td[data-col=value]").all_inner_texts() == [f"{v:.1f}" for v in TUG]
    assert "Series: longitudinal · no method, device, position or protocol recorded" in tug.inner_text()
    # change 11.1 - 16.4 = -5.3 s, -5.3 / 16.4 = -32.3 %
    assert "baseline 16.4 s · latest 11.1 s · change −5.3 (−32.3 %)" in tug.locator(".summary").inner_text()
    # least squares on days x = 0, 14, 28, 42 (mean 21) and y = 16.4, 14.2, 12.9, 11.1 (mean 13.65):
    # Sxy = -21 x 2.75 - 7 x 0.55 + 7 x -0.75 + 21 x -2.55 = -120.4, Sxx = 441 + 49 + 49 + 441 = 980,
    # slope = -0.12286 s/day = -3.69 s per 30 days; fitted change = slope x 42 days = -5.16 s;
    # TUG has no MDC or MCID in the catalog, so the slope's sign decides: improving (lower is better)
    assert tug.locator(".trend").inner_text() == (
        "Trend: improving — least-squares slope −3.69 s per 30 days over all 4 points; "
        "fitted change −5.16 s (no MDC or MCID known: the slope's sign decides)"
    )
    assert tug.locator(".last-step").inner_text() == "Last step: 12.9 → 11.1 s (−1.8) in 14 days, improving"

    grip = page.locator(".sided[data-measure=grip_strength]")
    assert grip.locator("figure.measure").count() == 2  # left and right side by side
    left = grip.locator("figure.measure[data-side=left]")
    assert left.locator("svg.chart circle.point").count() == len(GRIP_LEFT)
    # the dial's "kg" is kilogram-force: stored as entered, read as kgf
    assert left.locator("td[data-col=entered]").all_inner_texts() == [f"{v:g} kg" for v in GRIP_LEFT]
    # no involved side: the latest same-day pair, 2026-02-16: 27.5 - 32 = -4.5 kgf
    symmetry = grip.locator(".symmetry-latest")
    assert symmetry.inner_text() == "Left − right −4.5 kgf (27.5 vs 32 kgf, same-day pair of 2026-02-16)"
    assert grip.locator("table.pairs tbody tr").count() == len(DATES)  # one pair per seeded day
    shot(page, "03-patient-progress")
    # left involved: LSI = 27.5 / 32 x 100 = 85.94 % (shown 85.9), deficit 27.5 - 32 = -4.5 kgf;
    # the first pair, 2026-01-05: 18 / 30 x 100 = 60 %
    page.select_option("#involved", "left")
    expect(symmetry).to_have_text(
        "Limb symmetry index 85.9 % (left ÷ right: 27.5 ÷ 32 kgf, same-day pair of 2026-02-16); "
        "deficit −4.5 kgf"
    )
    assert page.url.endswith("/app/patients/ada?involved=left")
    first_pair = grip.locator("table.pairs tbody tr").first.locator("td").all_inner_texts()
    assert first_pair == ["2026-01-05", "18", "30", "60", "−12"]

    # pain 6 before and 3 after treatment in visit-1 is a within-session change, not a trend:
    # 3 - 6 = -3 in 45 minutes (09:00 to 09:45); the longitudinal pain series is the 6 alone
    pain = page.locator("figure.measure[data-measure=pain_nrs]")
    assert pain.locator("td[data-col=value]").all_inner_texts() == ["6"]
    assert pain.locator(".trend").inner_text() == "Trend: baseline only (one point)"
    row = page.locator("#within-table tbody tr")
    assert row.count() == 1
    columns = ("session", "pre", "post", "change", "apart")
    cells = [row.locator(f"td[data-col={c}]").inner_text() for c in columns]
    assert cells == ["2026-02-16 09:00 UTC", "6", "3", "−3 score, improving", "45 min"]
    # listed, with the reason, never counted: pain 42 on a 0-10 scale and the preliminary TUG
    excluded = page.locator("#excluded-table tbody tr")
    assert excluded.locator("td[data-col=value]").all_inner_texts() == [
        f"{PAIN_OUT_OF_RANGE[1]} score",
        f"{TUG_PRELIMINARY[1]} s",
    ]
    reasons = excluded.locator("td[data-col=reason]").all_inner_texts()
    assert reasons == [
        "42 {score} is outside pain_nrs's range 0-10",
        "status 'preliminary': only final, amended or corrected results count",
    ]
    assert "Bridges" in page.inner_text("#program")
    assert "Timed Up and Go under 10 seconds" in page.inner_text("#goals")
    assert "Neuromuscular reeducation" in page.inner_text("#sessions")
    assert page.locator("#session-table tbody tr").first.locator("td.num").all_inner_texts() == ["6", "3"]
    shot(page, "03c-patient-progress-involved-left")
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


def _apply(page: Any) -> None:
    page.locator("#audit-filters button[type=submit]").click()
    expect(page.locator("#status")).to_be_hidden()


def test_audit_console_filters_sorts_and_exports(page: Any, site: Site, browser: Any) -> None:
    # Leave a trail first: a clinician opens Ada's page through the app.
    other = browser.new_context()
    clinician = other.new_page()
    sign_in(clinician, site, "/app/patients/ada", site.clinician)
    expect(clinician.locator("#patient-name")).to_have_text("Ada Lovelace")
    for pid in ("xss", "empty", "ada"):  # enough traffic for more than one page of events
        clinician.goto(site.base + "/app/patients/" + pid)
        expect(clinician.locator("#status")).to_be_hidden()
    other.close()

    sign_in(page, site, "/app/audit", site.auditor)
    expect(page.locator("#chain")).not_to_have_text("Checking the hash chain…")
    if "unknown" in (page.get_attribute("#chain", "class") or ""):
        pytest.skip("the audit trail (AuditEvent search and $verify, issue 6) is not wired here yet")
    expect(page.locator("#chain")).to_have_class("banner ok")
    assert "Hash chain intact through event" in page.inner_text("#chain")
    page.locator("#audit-table tbody tr").first.wait_for()
    assert page.locator("#audit-table tbody tr").count() == 20  # first page
    expect(page.locator("#pager button[data-rel=next]")).to_be_enabled()
    shot(page, "06-audit-console")

    # paging
    first_page = page.locator("#audit-table tbody tr").first.get_attribute("data-id")
    page.click("#pager button[data-rel=next]")
    expect(page.locator("#page-no")).to_have_text("Page 2")
    assert page.locator("#audit-table tbody tr").first.get_attribute("data-id") != first_page

    # filters: patient + client app + action + date range
    page.fill("input[name=patient]", "ada")
    page.fill("input[name=client]", "rehabfhir-web")
    page.select_option("select[name=action]", "R")
    page.fill("input[name=from]", "2000-01-01")
    page.fill("input[name=to]", "2100-12-31")
    _apply(page)
    assert set(page.locator("#audit-table td[data-col=patient]").all_inner_texts()) == {"Patient/ada"}
    assert set(page.locator("#audit-table td[data-col=client]").all_inner_texts()) == {"rehabfhir-web"}
    assert set(page.locator("#audit-table td[data-col=action]").all_inner_texts()) == {"R"}
    shown = page.locator("#audit-table tbody tr").count()

    # sort by a column the server sorts (outcome), then by one it cannot (client app, within the page)
    page.locator("button.sort[data-sort=recorded]").click()
    expect(page.locator("th:has(button[data-sort=recorded])")).to_have_attribute("aria-sort", "ascending")
    times = page.locator("#audit-table td[data-col=recorded]").all_inner_texts()
    assert times == sorted(times)
    page.locator("button.sort[data-sort=client]").click()
    expect(page.locator("th:has(button[data-sort=client])")).to_have_attribute("aria-sort", "ascending")

    with page.expect_download() as dl:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(dl.value.path().read_text())))
    assert len(rows) >= shown
    assert {r["action"] for r in rows} == {"R"} and {r["patient"] for r in rows} == {"Patient/ada"}
    with page.expect_download() as dl:
        page.click("#export-ndjson")
    events = [json.loads(line) for line in dl.value.path().read_text().splitlines()]
    assert sorted(e["id"] for e in events) == sorted(r["id"] for r in rows)
    assert all(e["resourceType"] == "AuditEvent" and e["action"] == "R" for e in events)

    page.locator("#audit-table tbody tr").first.click()
    expect(page.locator("#event-dialog")).to_be_visible()
    assert json.loads(page.inner_text("#event-json"))["resourceType"] == "AuditEvent"
    shot(page, "07-audit-event-json")
    assert page.console_errors == []


def test_audit_console_empty_filter_result(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/audit", site.auditor)
    expect(page.locator("#chain")).not_to_have_text("Checking the hash chain…")
    page.fill("input[name=patient]", "no-such-patient")
    _apply_empty(page)
    assert "No audit events match" in page.inner_text("#status")
    shot(page, "08-audit-empty")


def _apply_empty(page: Any) -> None:
    page.locator("#audit-filters button[type=submit]").click()
    expect(page.locator("#status.empty, #status.error")).to_be_visible()


def _progress_payload() -> dict[str, Any]:
    """A progress answer computed by the server's own analytics from hand-made findings.

    TUG with a walker (its own series beside the seeded TUG without one), ODI (an MCID in % of
    baseline) and manual muscle testing left and right (ordinal grades).
    """
    findings = [
        *[("2026-01-05", "tug_time", 24.0, {"unit": "s", "assistive_device": "walker"})],
        *[("2026-01-19", "tug_time", 21.0, {"unit": "s", "assistive_device": "walker"})],
        *[(d, "tug_time", v, {"unit": "s"}) for d, v in zip(DATES, TUG, strict=True)],
        ("2026-01-05", "odi_score", 50, {}),
        ("2026-02-02", "odi_score", 40, {}),
        ("2026-01-05", "mmt_grade", "3", {"side": "left", "body_site": "gluteus_medius"}),
        ("2026-01-05", "mmt_grade", "4", {"side": "right", "body_site": "gluteus_medius"}),
        ("2026-02-02", "mmt_grade", "4-", {"side": "left", "body_site": "gluteus_medius"}),
        ("2026-02-02", "mmt_grade", "4", {"side": "right", "body_site": "gluteus_medius"}),
    ]
    observations = [
        (f"Observation/o{i}", build_observation({"measure": key, "value": value, **more}, "ada", date))
        for i, (date, key, value, more) in enumerate(findings)
    ]
    return {"patient": "Patient/ada", **analytics.report(observations)}


def test_patient_view_draws_every_part_of_a_progress_answer(page: Any, site: Site) -> None:
    payload = _progress_payload()
    page.route(
        "**/rehab/patients/ada/progress",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(payload)),
    )
    sign_in(page, site, "/app/patients/ada", site.clinician)
    page.locator("figure.measure").first.wait_for()
    tugs = page.locator("figure.measure[data-measure=tug_time]")
    assert tugs.count() == 2  # with and without a walker: not one series
    walker = tugs.filter(has_text="device walker")
    assert walker.locator("svg.chart circle.point").count() == 2
    assert walker.locator("svg.chart line.target").count() == 1  # the goal's 10 s target
    # 21 - 24 = -3 s over 14 days: -3 / 14 x 30 = -6.43 s per 30 days
    trend = walker.locator(".trend").inner_text()
    assert "least-squares slope −6.43 s per 30 days over all 2 points" in trend
    plain = tugs.filter(has_text="no method, device, position or protocol recorded")
    assert plain.locator("td[data-col=value]").all_inner_texts() == [f"{v:.1f}" for v in TUG]

    odi = page.locator("figure.measure[data-measure=odi_score]")
    # MCID 18 % of the baseline 50 = 9 points; 40 - 50 = -10 (-20 %): 20 % >= 18 %, reached
    assert "change −10 (−20 %) · MCID 18 % of baseline reached" in odi.locator(".summary").inner_text()
    assert odi.locator("svg.chart rect.mcid-band").count() == 1
    assert odi.locator("tfoot td.num").inner_text() == "9"
    # fitted change over two points = the change, -10, against the MCID of 9 points: improving
    assert "fitted change −10 score against the MCID of 9 score" in odi.locator(".trend").inner_text()

    mmt = page.locator(".sided[data-measure=mmt_grade]")
    assert mmt.locator("figure.measure").first.get_attribute("data-side") == "left"
    assert mmt.locator("svg.chart").count() == 0  # grades are not drawn as numbers
    left = mmt.locator("figure.measure[data-side=left]")
    # Oxford scale 0, 1, 1+, 2-, 2, 2+, 3-, 3, 3+, 4-, ...: 3 -> 4- is two grade steps
    step = left.locator(".last-step").inner_text()
    assert step == "Last step: grade 3 → 4- (+2 steps) in 28 days, improving"
    assert "Mann-Kendall S +1 over 1 pairs of points" in left.locator(".trend").inner_text()
    # same-day pair 2026-02-02: 4- vs 4 is one step weaker on the left
    assert mmt.locator(".symmetry-latest").inner_text() == (
        "Left − right −1 grade steps (grades 4- and 4, same-day pair of 2026-02-02)"
    )
    assert "Every recorded point counts" in page.inner_text("#excluded")
    assert "No values recorded before and after treatment" in page.inner_text("#within-session")
    assert "Timed Up and Go under 10 seconds" in page.inner_text("#goals")
    pain = page.locator("#session-table tbody tr").first.locator("td.num").all_inner_texts()
    assert pain == ["6", "3"]  # before, after
    shot(page, "03b-patient-progress-charts")
    assert page.console_errors == []


def test_token_lives_in_this_tab_only_and_sign_out_forgets_it(page: Any, site: Site, browser: Any) -> None:
    sign_in(page, site, "/app/patients", site.clinician)
    stored = json.loads(page.evaluate("sessionStorage.getItem('rehabfhir.session')"))
    assert stored["access_token"] and "user/Patient.rs" in stored["scope"]
    assert page.evaluate("localStorage.length") == 0
    assert all(
        c["name"] != "access_token" and stored["access_token"] not in c["value"]
        for c in page.context.cookies()
    )
    for cookie in page.context.cookies():
        assert cookie["httpOnly"] and cookie["sameSite"] in ("Lax", "Strict"), cookie
    other = browser.new_context()  # another browser session: not signed in
    fresh = other.new_page()
    fresh.goto(site.base + "/app/patients")
    fresh.locator("#sign-in-main").wait_for()
    other.close()
    page.click("#sign-out")
    page.wait_for_url(site.base + "/app/")
    page.locator("#sign-in-main").wait_for()
    assert page.evaluate("sessionStorage.getItem('rehabfhir.session')") is None


def test_rejected_token_shows_sign_in_again(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients", site.clinician)
    page.evaluate("""() => {
        const s = JSON.parse(sessionStorage.getItem('rehabfhir.session'));
        s.access_token = s.access_token.slice(0, -4) + 'AAAA';
        sessionStorage.setItem('rehabfhir.session', JSON.stringify(s));
    }""")
    page.reload()
    expect(page.locator("#status")).to_contain_text("Your sign-in has expired or was revoked")
    shot(page, "09-token-rejected")


def test_pkce_sha256_fallback_matches_webcrypto(page: Any, site: Site) -> None:
    page.goto(site.base + "/app/")
    result = page.evaluate("""async () => {
        const { sha256 } = await import('/app/static/sha256.js');
        const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
        const out = [];
        for (const text of ['', 'abc', 'x'.repeat(55), 'y'.repeat(64), 'verifier-' + 'z'.repeat(120)]) {
            const data = new TextEncoder().encode(text);
            out.push([hex(sha256(data)), hex(await crypto.subtle.digest('SHA-256', data))]);
        }
        return out;
    }""")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example
    assert result[1][0] == abc
    assert all(ours == webcrypto for ours, webcrypto in result)


def test_clinician_sign_in_carries_no_audit_access(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients", site.clinician)
    stored = json.loads(page.evaluate("sessionStorage.getItem('rehabfhir.session')"))
    assert "AuditEvent" not in stored["scope"]
    page.goto(site.base + "/app/audit")
    expect(page.locator("#status")).to_contain_text("carries no audit access")
    assert page.locator("#audit-table").is_hidden()
    assert not [f for f in page.failed if "/AuditEvent" in f]
