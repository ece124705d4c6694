"""Left/right comparison of a measure's series: same-day pairs, limb symmetry index or deficit.

Left and right are compared only on the same day (the day as recorded, i.e. the clinic's
local date), the last value of each side that day; each pair shows its date. Limb symmetry
index = involved / uninvolved x 100 when both values are positive magnitudes; for a signed
value (knee extension: -10 is a 10 degree deficit, 0 is neutral) a ratio means nothing, so
only the deficit involved - uninvolved is given. Without an involved side only left - right is given.
Ordinal grades are compared in grade steps.
"""

from __future__ import annotations

from typing import Any

from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get


def rank(measure: Measure, grade: str) -> int:
    """Return a grade's position on the measure's ordinal scale."""
    return next(i for i, g in enumerate(measure.grades) if g.code == grade)


def attach_symmetry(entries: list[dict[str, Any]], involved: str | None) -> None:
    """Set `symmetry` on every series entry: the left/right comparison of sided ones, else None."""

    def pairing(e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["measure"], e["body_site"], tuple(sorted(e["defined_by"].items())))

    sided = {(pairing(e), e["side"]): e for e in entries if e["side"] in ("left", "right")}
    for e in entries:
        e["symmetry"] = None
    for (group, side), left in sided.items():
        right = sided.get((group, "right"))
        if side != "left" or right is None:
            continue
        measure = get(left["measure"])
        assert measure is not None
        result = limb_symmetry(measure, left["series"], right["series"], involved)
        left["symmetry"] = right["symmetry"] = result


def limb_symmetry(
    measure: Measure, left: list[dict[str, Any]], right: list[dict[str, Any]], involved: str | None
) -> dict[str, Any]:
    """Compare left and right on the days both were measured (the last value of each side that day)."""
    by_day: dict[str, dict[str, Any]] = {}
    for side, points in (("left", left), ("right", right)):
        for p in points:
            by_day.setdefault(str(p["date"])[:10], {})[side] = p["value"]
    pairs = []
    for day in sorted(d for d, v in by_day.items() if len(v) == 2):
        values = by_day[day]
        pair: dict[str, Any] = {"date": day, "left": values["left"], "right": values["right"]}
        if measure.grades:
            pair["grade_steps_left_minus_right"] = rank(measure, values["left"]) - rank(
                measure, values["right"]
            )
        elif involved in ("left", "right"):
            inv, uninv = values[involved], values["right" if involved == "left" else "left"]
            pair["deficit"] = round(inv - uninv, 4)
            # a ratio only of two positive magnitudes: -10 deg knee extension is a deficit, not a size
            pair["lsi"] = round(inv / uninv * 100, 2) if inv > 0 and uninv > 0 else None
        else:
            pair["left_minus_right"] = round(values["left"] - values["right"], 4)
        pairs.append(pair)
    how = (
        "grades compared in steps"
        if measure.grades
        else "limb symmetry index = involved / uninvolved x 100 when both are positive; "
        "otherwise (signed values, e.g. an extension deficit) only the deficit involved - uninvolved"
    )
    out: dict[str, Any] = {
        "involved": involved,
        "method": how,
        "pairs": pairs,
        "latest": pairs[-1] if pairs else None,
    }
    if not pairs:
        out["note"] = "no same-day left/right pair: values from different days are not compared"
    elif involved is None and not measure.grades:
        out["note"] = "involved side not given: only left - right is shown"
    return out
