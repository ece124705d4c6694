"""Outcome analytics: per measure and side the series, baseline, latest, change, MCID and asymmetry.

Baseline = the earliest effective value (not the first one stored); latest = the most recent.
change = latest - baseline; percent_change = change / |baseline| x 100 (none for a zero baseline).
Improvement is the change in the measure's better direction; the MCID is reached when the
improvement is at least the MCID (absolute, or as % of baseline for ODI-style MCIDs).
Asymmetry index (Robinson 1987 symmetry index) on the latest left and right values:
|L - R| / ((L + R) / 2) x 100.
https://hl7.org/fhir/R4B/observation.html
"""

from __future__ import annotations

import math
from typing import Any

from fhir_mapping.catalog import get
from fhir_mapping.observations import read_observation

SKIPPED_STATUS = ("entered-in-error", "cancelled", "registered")


def asymmetry_index(left: float, right: float) -> float | None:
    """Return |L - R| / mean(L, R) x 100, or None when both are zero."""
    mean = (abs(left) + abs(right)) / 2
    return None if mean == 0 else round(abs(left - right) / mean * 100, 2)


def rms(values: list[float]) -> float:
    """Root mean square."""
    return math.sqrt(sum(v * v for v in values) / len(values))


def _when(obs: dict[str, Any]) -> str | None:
    return (
        obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start") or obs.get("issued")
    )


def _numeric(measure_key: str, value: Any) -> float:
    measure = get(measure_key)
    assert measure is not None
    if measure.grades:
        return next(g.rank for g in measure.grades if g.code == value)
    return float(value)


def summarise(measure_key: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """Return baseline, latest, change, % change, MCID reached and trend of a series sorted by date."""
    measure = get(measure_key)
    assert measure is not None
    baseline, latest = points[0]["value"], points[-1]["value"]
    change = round(latest - baseline, 4)
    out: dict[str, Any] = {
        "baseline": baseline,
        "latest": latest,
        "change": change,
        "percent_change": None if baseline == 0 else round(change / abs(baseline) * 100, 2),
        "mcid": measure.mcid,
        "mcid_kind": measure.mcid_kind if measure.mcid else None,
        "mcid_reached": None,
        "trend": None,
    }
    if measure.direction is None:
        return out
    improvement = change if measure.direction == "higher" else -change
    if len(points) < 2:
        out["trend"] = "baseline only"
    else:
        out["trend"] = "improving" if improvement > 0 else "worsening" if improvement < 0 else "stable"
    if measure.mcid is not None and len(points) > 1:
        if measure.mcid_kind == "percent":
            out["mcid_reached"] = baseline != 0 and improvement / abs(baseline) * 100 >= measure.mcid
        else:
            out["mcid_reached"] = improvement >= measure.mcid - 1e-9
    return out


def progress(observations: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Return one progress entry per (measure, side, site) from (reference, Observation) pairs."""
    groups: dict[tuple[str, str | None, str | None], list[dict[str, Any]]] = {}
    for ref, obs in observations:
        when = _when(obs)
        if obs.get("status") in SKIPPED_STATUS or not when:
            continue
        finding = read_observation(obs)
        if finding is None:
            continue
        key = (finding["measure"], finding.get("side"), finding.get("body_site"))
        point = {"date": when, "value": _numeric(finding["measure"], finding["value"]), "observation": ref}
        if isinstance(finding["value"], str):
            point["grade"] = finding["value"]
        groups.setdefault(key, []).append(point)
    out = []
    for (measure_key, side, site), points in sorted(
        groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])
    ):
        points.sort(key=lambda p: p["date"])
        measure = get(measure_key)
        assert measure is not None
        entry = {
            "measure": measure_key,
            "display": measure.display,
            "unit": measure.unit,
            "side": side,
            "body_site": site,
            "direction": measure.direction,
            "series": points,
            **summarise(measure_key, points),
            "asymmetry_index": None,
        }
        out.append(entry)
    _asymmetry(out)
    return out


def _asymmetry(entries: list[dict[str, Any]]) -> None:
    latest = {(e["measure"], e["body_site"], e["side"]): e for e in entries if e["side"] in ("left", "right")}
    for (measure, site, side), e in latest.items():
        other = latest.get((measure, site, "right" if side == "left" else "left"))
        if other is not None:
            left, right = (e, other) if side == "left" else (other, e)
            e["asymmetry_index"] = asymmetry_index(left["latest"], right["latest"])
