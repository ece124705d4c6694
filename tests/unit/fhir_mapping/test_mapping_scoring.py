"""Instrument scoring against worked examples of the published rules; missing-item rules."""

from __future__ import annotations

import pytest

from fhir_mapping import schemas
from fhir_mapping.outcomes import INSTRUMENTS
from fhir_mapping.outcomes import OutcomeSchema
from fhir_mapping.outcomes import problems
from fhir_mapping.outcomes import score
from server.errors import InvalidRequestError


def items(*values: int | None) -> dict[str, int]:
    return {str(i): v for i, v in enumerate(values, start=1) if v is not None}


@pytest.mark.parametrize(
    ("instrument", "answers", "expected"),
    [
        # LEFS: sum of 20 items 0-4, 0-80 (Binkley 1999)
        ("lefs", items(*[4] * 20), 80),
        ("lefs", items(*[0] * 20), 0),
        ("lefs", items(*([4] * 10 + [2] * 10)), 60),
        # ODI: total / (5 x sections answered) x 100. Fairbank's worked example: 16 points over all 10
        # sections = 16/50 = 32 %; with one section missed 16/45 x 100 = 35.56 %.
        ("odi", items(2, 2, 2, 2, 2, 2, 1, 1, 1, 1), 32),
        ("odi", items(2, 2, 2, 2, 2, 2, 1, 1, 2, None), 35.56),
        # NDI: 10 items 0-5, raw x 2 = %; one missing: / 45
        ("ndi", items(2, 2, 2, 2, 2, 2, 2, 2, 2, 2), 40),
        ("ndi", items(2, 2, 2, 2, 2, 2, 2, 2, 4, None), 44.44),
        # QuickDASH: ((sum / n) - 1) x 25
        ("quickdash", items(*[1] * 11), 0),
        ("quickdash", items(*[5] * 11), 100),
        ("quickdash", items(*[3] * 11), 50),
        ("quickdash", items(3, 3, 3, 3, 3, 2, 2, 2, 2, 2, None), 37.5),
        # ABC: mean of 16 items 0-100 %
        ("abc", items(*([100] * 8 + [50] * 8)), 75),
        ("abc", items(*([80] * 15 + [0])), 75),
        # Berg 14 x 0-4, FGA 10 x 0-3, DGI 8 x 0-3, Fugl-Meyer UE 33 x 0-2 and LE 17 x 0-2: sums
        ("berg", items(*[4] * 14), 56),
        ("berg", items(*([4] * 7 + [2] * 7)), 42),
        ("fga", items(*[3] * 10), 30),
        ("dgi", items(*([3] * 4 + [1] * 4)), 16),
        ("fugl_meyer_ue", items(*[2] * 33), 66),
        ("fugl_meyer_le", items(*([2] * 10 + [1] * 7)), 27),
    ],
)
def test_published_scoring(instrument: str, answers: dict[str, int], expected: float) -> None:
    spec = INSTRUMENTS[instrument]
    assert problems(spec, answers) == {}
    assert score(spec, answers) == expected


@pytest.mark.parametrize(
    ("instrument", "answers", "path"),
    [
        ("lefs", items(*([3] * 19)), "items"),  # LEFS needs every item
        ("odi", items(1, 1, 1, 1, 1, 1, 1, 1), "items"),  # two sections missing
        ("quickdash", items(*([3] * 9)), "items"),  # two missing
        ("abc", items(*([50] * 15)), "items"),
        ("lefs", {**items(*[3] * 20), "21": 2}, "items.21"),
        ("quickdash", items(*([0] * 11)), "items.1"),  # QuickDASH items start at 1
        ("abc", {**items(*[50] * 16), "3": 101}, "items.3"),
    ],
)
def test_missing_and_bad_items_are_refused(instrument: str, answers: dict[str, int], path: str) -> None:
    body = {"patient": "p1", "date": "2026-11-20", "instrument": instrument, "items": answers}
    with pytest.raises(InvalidRequestError) as err:
        schemas.load(OutcomeSchema(), body)
    assert path in err.value.expression


def test_boolean_is_not_an_item_answer() -> None:
    assert problems(INSTRUMENTS["lefs"], {**items(*[3] * 19), "20": True}) != {}
