"""The episode of care on the patient page, in a real browser (issue 17): plan of care with the visits
used of those authorized and the over-limit warning, the plan's goals, a day of home program in the
adherence table, the goals' status once discharged, the discharge summary and its print stylesheet.
The episode is written over HTTP through /rehab with a system token."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS
from tests.browser.conftest import Site
from tests.browser.conftest import failed_requests
from tests.browser.conftest import shot
from tests.browser.conftest import sign_in
from tests.conftest import token_for
from tests.functional.test_episode_goals import KNEE
from tests.functional.test_episode_plan import CERT

pytestmark = [pytest.mark.browser, pytest.mark.server]
# CERT authorizes 2 visits from 2026-11-20 to 2026-12-31, 2 a week x 6 weeks; KNEE targets 120 deg

SESSIONS = ("2026-11-21T09:00:00Z", "2026-11-23T09:00:00Z", "2026-11-25T09:00:00Z")  # the third is over
# The scopes the pages asked for before episodes were shown: no EpisodeOfCare, Composition,
# ServiceRequest or Condition.
OLD_PAGE_SCOPES = (
    "system/Patient.rs system/Observation.rs system/Goal.rs system/CarePlan.rs system/Encounter.rs "
    "system/Procedure.rs system/QuestionnaireResponse.rs"
)


def _post(site: Site, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(site.base + path, json=body, headers={"Authorization": "Bearer " + token}, timeout=60)
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def episode(site: Site) -> str:
    """Ada's episode: a plan of care for 2 visits with daily Bridges, one day of them done, 3 sessions
    (one over), a knee measure meeting the goal, discharged."""
    token = token_for(site.base, site.database_url)
    opened = {
        "patient": "ada",
        "start": "2026-11-20",
        "condition": {"system": "icd-10-cm", "code": "M17.12"},
        "care_manager": "pt1",
    }
    eid = _post(site, token, "/rehab/episodes", opened)["references"]["episode"][0].split("/")[1]
    plan = {"patient": "ada", "episode": eid, "date": "2026-11-20", "goals": [KNEE], "certification": CERT}
    daily = {"times": 1, "period": 1, "period_unit": "d"}
    plan["exercises"] = [{"exercise": "Bridges", "sets": 3, "reps": 10, "frequency": daily}]
    careplan = _post(site, token, "/rehab/plans", plan)["references"]["careplan"][0].split("/")[1]
    done = {"exercise": "Bridges", "status": "done", "sets": 3, "reps": 10}
    day = {"patient": "ada", "plan": careplan, "date": "2026-11-21", "exercises": [done]}
    assert _post(site, token, "/rehab/adherence", day)["plan"] == careplan
    for day, value in (("2026-11-20", 95), ("2026-11-27", 125)):
        finding = {"measure": "joint_rom_knee_flexion", "value": value, "unit": "deg", "side": "left"}
        body = {"patient": "ada", "episode": eid, "date": f"{day}T10:00:00Z", "findings": [finding]}
        _post(site, token, "/rehab/assessments", body)
    for date in SESSIONS:
        session = {"cpt": "97112", "minutes": 15, "description": "balance training"}
        answer = _post(
            site,
            token,
            "/rehab/sessions",
            {"patient": "ada", "episode": eid, "date": date, "interventions": [session]},
        )
    assert answer["warnings"] == ["visit 3 of 2 authorized for 2026-11-20 to 2026-12-31"]
    discharge = {"date": "2026-12-01", "reason": "Goals met", "note": "Continue the home program"}
    _post(site, token, f"/rehab/episodes/{eid}/discharge", discharge)
    return str(eid)


def test_patient_page_shows_the_episode_and_its_discharge_summary(
    page: Any, site: Site, episode: str
) -> None:
    sign_in(page, site, "/app/patients/ada", site.clinician)
    article = page.locator(f"article.episode[data-episode='{episode}']")
    article.wait_for()
    expect(page.locator("#status")).to_be_hidden()
    assert article.get_attribute("data-status") == "finished"
    assert "M17.12" in article.locator("h3").inner_text()
    assert article.locator("dd[data-field=period]").inner_text() == "2026-11-20 to 2026-12-31"
    assert article.locator("dd[data-field=frequency]").inner_text() == "2 visits a week × 6 weeks"
    # three sessions in the certified period, two authorized: over by one, none left
    visits = article.locator("dd[data-field=visits]")
    assert visits.inner_text() == "3 used of 2 authorized (0 left)"
    assert visits.get_attribute("class") == "over"
    warnings = article.locator("ul.warnings li").all_inner_texts()
    assert len(warnings) == 1 and warnings[0].startswith(
        "visit 3 of 2 authorized for 2026-11-20 to 2026-12-31"
    )
    # the plan's goal (knee flexion 120 deg): met by 125 at discharge; the seeded TUG goal is not the plan's
    assert article.locator(".episode-goals li").count() == 1
    summary = article.locator(".discharge-summary")
    assert summary.locator("h4").inner_text() == "Rehabilitation discharge summary"
    titles = summary.locator(".summary-section h5").all_inner_texts()
    for title in ("Reason for discharge", "Visits"):
        assert title in titles
    assert len(titles) >= 5  # reason, condition, measures, goals, visits (and the home program)
    assert "Goals met" in summary.inner_text() and "Continue the home program" in summary.inner_text()
    assert "3 visits used" in summary.inner_text()
    # baseline 95 vs discharge 125 in the measures table, rebuilt from the narrative as plain cells
    cells = summary.locator(".narrative table td").all_inner_texts()
    assert any("95" in c for c in cells) and any("125" in c for c in cells)
    assert summary.locator(".narrative [href], .narrative script, .narrative [style]").count() == 0
    shot(page, "20-episode-discharge")
    assert page.console_errors == []
    assert failed_requests(page, site) == []


def test_adherence_and_goal_status_as_the_page_draws_them(page: Any, site: Site, episode: str) -> None:
    """One day of daily Bridges done in week 1 of the plan (from its start, 2026-11-20): 1 of 7 days, 14 %,
    still shown once the discharge completed the plan; the knee goal met (125 of 120 deg): achieved."""
    sign_in(page, site, "/app/patients/ada", site.clinician)
    page.locator(f"article.episode[data-episode='{episode}'] .episode-goals li").wait_for()
    # The seeded plan-1 (active, Bridges, no day recorded) has its row too: this one has week 1.
    row = page.locator(
        "#adherence-table tbody tr", has=page.locator("li", has_text="Week 1 (from 2026-11-20)")
    )
    expect(row).to_have_count(1)
    cells = row.locator("td").all_inner_texts()
    assert [c.strip() for c in cells[:3]] == ["Bridges", "7 days a week", "14 %"]
    assert cells[4].strip() == "from 2026-11-20, completed"  # the discharged episode's plan
    week = row.locator("ul.weeks li")
    assert week.all_inner_texts() == ["Week 1 (from 2026-11-20): 14 %"]
    assert week.get_attribute("title") == "1 of 7 days"
    assert row.locator("meter").get_attribute("value") == "14"
    # The goals table: the episode's knee goal achieved, and no longer pursued since the discharge
    # completed it; the seeded TUG goal, outside the episode, still sought: improving.
    knee = page.locator("#goal-table tbody tr", has_text="Knee flexion")
    expect(knee).to_have_count(1)
    assert knee.locator("td").last.inner_text() == "completed (achieved)"
    assert knee.locator("td").nth(1).inner_text() == "120 deg"
    tug = page.locator("#goal-table tbody tr", has_text="Timed Up and Go under 10 seconds")
    assert tug.locator("td").last.inner_text() == "improving"
    article = page.locator(f"article.episode[data-episode='{episode}']")
    assert article.locator(".episode-goals li").inner_text().endswith(": completed (achieved)")
    shot(page, "22-episode-adherence-goals")
    assert page.console_errors == []
    assert failed_requests(page, site) == []


def test_discharge_summary_prints_alone(page: Any, site: Site, episode: str) -> None:
    sign_in(page, site, "/app/patients/ada", site.clinician)
    article = page.locator(f"article.episode[data-episode='{episode}']")
    article.locator(".discharge-summary").wait_for()
    # what "Print discharge summary" sets before window.print(), under the print media type
    page.evaluate(
        "(id) => { document.body.dataset.print = 'summary'; "
        "document.querySelector(`article.episode[data-episode='${id}']`).classList.add('printing'); }",
        episode,
    )
    page.emulate_media(media="print")
    assert article.locator(".discharge-summary").is_visible()
    assert page.locator("#patient-name").is_visible() and page.locator("#patient-facts").is_visible()
    assert article.locator(".summary-section").first.is_visible()
    for hidden in (
        ".topbar",
        ".footer",
        "#measures",
        "#goals",
        "#sessions",
        "#adherence",
        "button.print-summary",
    ):
        assert page.locator(hidden).first.is_hidden(), hidden
    assert article.locator(".plan-of-care").is_hidden()
    shot(page, "21-discharge-summary-print")
    pdf = page.pdf(path=str(ARTIFACTS / "21-discharge-summary.pdf"), format="A4")
    assert pdf[:4] == b"%PDF"
    page.emulate_media(media="screen")
    page.evaluate("() => { delete document.body.dataset.print; }")
    assert page.locator("#measures").is_visible()


def test_narrative_keeps_text_and_tables_only(page: Any, site: Site) -> None:
    page.goto(site.base + "/app/")
    out = page.evaluate("""async () => {
        const { narrative } = await import('/app/static/episode.js');
        const div = '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">Goals <b>met</b></p>'
            + '<script>window.hit = 1</script><a href="javascript:x()">link</a>'
            + '<img src="x" onerror="window.hit = 2"/>'
            + '<table><tr><td style="color:red">95</td></tr></table></div>';
        const node = narrative({ div });
        document.body.append(node);
        return { html: node.innerHTML, hit: window.hit || 0 };
    }""")
    assert out == {
        "html": '<div><p>Goals <b>met</b></p>link<table class="data compact"><tbody><tr><td>95</td></tr>'
        "</tbody></table></div>",
        "hit": 0,
    }


def test_page_sign_in_carries_the_episode_scopes(page: Any, site: Site) -> None:
    sign_in(page, site, "/app/patients", site.clinician)
    scope = page.evaluate("JSON.parse(sessionStorage.getItem('rehabfhir.session')).scope").split()
    for needed in ("EpisodeOfCare", "Composition", "ServiceRequest", "Condition"):
        assert f"user/{needed}.rs" in scope


def test_a_token_without_the_episode_scopes_is_refused(site: Site, episode: str) -> None:
    token = token_for(site.base, site.database_url, OLD_PAGE_SCOPES)
    headers = {"Authorization": "Bearer " + token}
    r = requests.get(f"{site.base}/rehab/episodes/{episode}", headers=headers, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    r = requests.get(f"{site.base}/EpisodeOfCare?patient=ada", headers=headers, timeout=30)
    assert r.status_code == 403, r.text
