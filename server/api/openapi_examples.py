"""README's "For clinics" requests, as the OpenAPI document's request examples.

tests/functional/test_openapi.py keeps these equal to the curl lines in README.md, checks them
against the document and sends them to a running server.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "/rehab/episodes": (
        "An episode of care for left knee osteoarthritis (ICD-10-CM as the referral gives it)",
        {"patient": "123", "start": "2026-11-20", "condition": {"system": "icd-10-cm", "code": "M17.12"}},
    ),
    "/rehab/assessments": (
        "Knee flexion, pain and TUG: Observations under a panel and an Encounter",
        {
            "patient": "123",
            "date": "2026-11-20T10:00:00Z",
            "findings": [
                {
                    "measure": "joint_rom_knee_flexion",
                    "value": 95,
                    "unit": "deg",
                    "side": "left",
                    "method": "active",
                },
                {"measure": "pain_nrs", "value": 6},
                {"measure": "tug_time", "value": 14.2, "unit": "s", "assistive_device": "cane"},
            ],
        },
    ),
    "/rehab/plans": (
        "A range-of-motion goal and a home exercise",
        {
            "patient": "123",
            "date": "2026-11-20",
            "goals": [
                {
                    "measure": "joint_rom_knee_flexion",
                    "side": "left",
                    "target": 120,
                    "unit": "deg",
                    "due": "2027-01-15",
                }
            ],
            "exercises": [
                {
                    "exercise": "Bridges",
                    "sets": 3,
                    "reps": 10,
                    "hold": {"value": 5, "unit": "s"},
                    "frequency": {"times": 1, "period": 1, "period_unit": "d"},
                    "instructions": "Slow",
                }
            ],
        },
    ),
    "/rehab/adherence": (
        "A day of the home program, as a patient app sends it",
        {
            "patient": "123",
            "date": "2026-11-21",
            "exercises": [{"exercise": "Bridges", "status": "done", "sets": 3, "reps": 10, "pain": 2}],
        },
    ),
    "/rehab/sessions": (
        "Balance training and electrical stimulation, pain before and after",
        {
            "patient": "123",
            "date": "2026-11-21T09:00:00Z",
            "pain_before": 6,
            "pain_after": 4,
            "interventions": [
                {"cpt": "97112", "minutes": 15, "description": "balance training"},
                {
                    "cpt": "97032",
                    "modality": "electrical_stimulation",
                    "minutes": 10,
                    "parameters": [
                        {"parameter": "frequency", "value": 35, "unit": "Hz"},
                        {"parameter": "pulse_width", "value": 250, "unit": "us"},
                    ],
                },
            ],
        },
    ),
    "/rehab/outcomes": (
        "An Oswestry Disability Index with one section unanswered",
        {
            "patient": "123",
            "date": "2026-11-20",
            "instrument": "odi",
            "items": {"1": 2, "2": 2, "3": 2, "4": 2, "5": 2, "6": 2, "7": 1, "8": 1, "9": 2},
        },
    ),
    "/rehab/sensor-series": (
        "Surface EMG of both quadriceps",
        {
            "patient": "123",
            "date": "2026-11-20T10:00:00Z",
            "kind": "surface_emg",
            "device": {"name": "Trigno"},
            "body_site": "quadriceps",
            "period_ms": 1,
            "unit": "uV",
            "channels": [
                {"side": "left", "samples": [100, -200, 300]},
                {"side": "right", "samples": [100, 100, 200]},
            ],
        },
    ),
}
