"""The clinician page's home program adherence (issue 17, item 4): the patient page has the section,
the rows it draws come from progress `adherence` (computed by server/web/static/adherence.js, run here
under node, as a page would), and the page prints without the app's chrome."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from server.web import STATIC

REPORT = [
    {
        "plan": "CarePlan/1",
        "status": "completed",
        "start": "2026-11-16",
        "exercises": [
            {
                "exercise": "Bridges",
                "expected_per_week": 7,
                "days_recorded": 8,
                "percent": 46.4,
                "weeks": [
                    {"week": 1, "start": "2026-11-16", "credited": 5.5, "expected": 7, "percent": 78.6},
                    {"week": 2, "start": "2026-11-23", "credited": 1, "expected": 7, "percent": 14.3},
                ],
            },
            {
                "exercise": "Step-ups",
                "expected_per_week": None,
                "days_recorded": 0,
                "percent": None,
                "weeks": [],
            },
        ],
    }
]


def test_patient_page_has_the_adherence_section(app: Any) -> None:
    html = app.test_client().get("/app/patients/ada").get_data(as_text=True)
    assert 'id="h-adherence"' in html and 'id="adherence"' in html
    assert 'import { adherenceRows } from "./adherence.js";' in (STATIC / "patient.js").read_text()
    assert app.test_client().get("/app/static/adherence.js").status_code == 200


def test_adherence_rows_as_the_page_draws_them() -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed to run the page's module"
    script = (
        f"import {{ adherenceRows }} from {json.dumps((STATIC / 'adherence.js').as_uri())};"
        f"console.log(JSON.stringify(adherenceRows({json.dumps(REPORT)})));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    bridges, steps = json.loads(out.stdout)
    assert bridges["planLabel"] == "from 2026-11-16, completed" and bridges["plan"] == "CarePlan/1"
    assert (bridges["exercise"], bridges["overall"], bridges["expected"]) == (
        "Bridges",
        "46 %",
        "7 days a week",
    )
    assert bridges["weeks"] == [
        {"label": "Week 1 (from 2026-11-16)", "percent": "79 %", "detail": "5.5 of 7 days"},
        {"label": "Week 2 (from 2026-11-23)", "percent": "14 %", "detail": "1 of 7 days"},
    ]
    assert (steps["overall"], steps["percent"], steps["expected"], steps["weeks"]) == (
        "–",
        None,
        "as recorded",
        [],
    )


def test_pages_print_without_the_app_chrome() -> None:
    css = (STATIC / "app.css").read_text()
    printed = css.split("@media print", 1)[1]
    assert ".topbar nav" in printed and "button" in printed and "break-inside: avoid" in printed


def test_goal_status_says_a_goal_is_no_longer_pursued() -> None:
    """A cancelled goal whose last measure improved reads "cancelled (improving)", never "improving"."""
    node = shutil.which("node")
    assert node is not None, "node is needed to run the page's module"
    goals = [
        {"lifecycleStatus": "active", "achievementStatus": {"coding": [{"code": "improving"}]}},
        {"lifecycleStatus": "cancelled", "achievementStatus": {"coding": [{"code": "improving"}]}},
        {"lifecycleStatus": "completed", "achievementStatus": {"text": "achieved"}},
        {"lifecycleStatus": "on-hold"},
        {"lifecycleStatus": "proposed"},
    ]
    script = (
        f"import {{ goalStatus }} from {json.dumps((STATIC / 'dom.js').as_uri())};"
        f"console.log(JSON.stringify({json.dumps(goals)}.map(goalStatus)));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [
        "improving",
        "cancelled (improving)",
        "completed (achieved)",
        "on-hold",
        "proposed",
    ]
