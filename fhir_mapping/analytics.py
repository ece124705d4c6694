"""Outcome analytics: trustworthy, comparable series per measure, with change, MCID, trend and symmetry.

Series. A point is an Observation of a catalog measure, placed at the instant it was taken
(effectiveDateTime, effectivePeriod.start or issued; time zones honoured, a date without a
time counts from its midnight UTC) and ordered by that instant. Points share a series only
when they are comparable: same measure, side, body site, method (active vs passive ROM),
assistive device, body position and protocol; `defined_by` says which. A value taken after
treatment within a session (pain after) is not longitudinal: each session's pre/post pair is
reported under `within_session`, never in a longitudinal series; the pre-treatment value also
counts longitudinally (the state at the start of the visit, as at an assessment).

Trust. Only final, amended or corrected results with a value of the measure's kind, a unit
that converts to the measure's unit and a converted value in the catalog's range count; every
other point of a known measure is listed under `excluded` with its reason.

Change. baseline = the earliest point, latest = the most recent; change = latest - baseline in
the measure's unit; percent_change = change / |baseline| x 100 (none for a zero baseline); the
MCID is reached when the improvement (change in the better direction) is at least the MCID
(absolute, or % of baseline). `last_step` is the move from the previous point to the latest.

Trend, from every point. Numeric measures: the ordinary least-squares slope of value on time,
and the fitted change over the whole period (slope x span). It is improving / worsening when
the fitted change in the better direction reaches the threshold (the measure's MDC when known,
else its MCID) and stable within it; with neither known the slope's sign decides and
`threshold` is null. Ordinal measures (MMT, Modified Ashworth) are never subtracted as numbers:
changes are counted in grade steps and the trend is the Mann-Kendall S, the number of
improving minus worsening pairs over all pairs of points in time order.

Symmetry (symmetry.py). Left and right are compared only on the same day (the day as recorded,
i.e. the clinic's local date); each pair shows its date. Limb symmetry index = involved /
uninvolved x 100 when both values are positive; for a signed value (knee extension: -10 is a
10 degree deficit) only the deficit involved - uninvolved is given. Without an involved side
(`?involved=left|right`) only left - right is given.
https://hl7.org/fhir/R4B/observation.html
"""

from __future__ import annotations

import math
from datetime import UTC
from datetime import datetime
from typing import Any

from fhir_mapping import codes
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get
from fhir_mapping.observations import ext
from fhir_mapping.observations import finding_of
from fhir_mapping.symmetry import attach_symmetry
from fhir_mapping.symmetry import rank
from fhir_mapping.units import convert
from server.errors import InvalidRequestError

TRUSTED_STATUS = ("final", "amended", "corrected")
POST = "post-treatment"
PRE = "pre-treatment"
_DAY = 86400.0
Key = tuple[str, str | None, str | None, str | None, str | None, str | None, str | None]


def asymmetry_index(left: float, right: float) -> float | None:
    """Return |L - R| / mean(L, R) x 100 (Robinson), or None when both are zero (sensor RMS only)."""
    mean = (abs(left) + abs(right)) / 2
    return None if mean == 0 else round(abs(left - right) / mean * 100, 2)


def rms(values: list[float]) -> float:
    """Root mean square."""
    return math.sqrt(sum(v * v for v in values) / len(values))


def instant(text: str | None) -> datetime | None:
    """Return the UTC instant a FHIR date/dateTime starts at, or None when it is not one."""
    if not isinstance(text, str):
        return None
    padded = {4: f"{text}-01-01", 7: f"{text}-01"}.get(len(text), text)
    try:
        moment = datetime.fromisoformat(padded.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(obs: dict[str, Any]) -> str | None:
    period = obs.get("effectivePeriod") or {}
    return (
        obs.get("effectiveDateTime")
        or period.get("start")
        or obs.get("effectiveInstant")
        or obs.get("issued")
    )


def _norm(text: Any) -> str | None:
    words = " ".join(str(text).lower().split()) if text else ""
    return None if words in ("", "none", "no", "no device", "without device") else words


def _key(finding: dict[str, Any]) -> Key:
    return (
        finding["measure"],
        finding.get("side"),
        finding.get("body_site"),
        _norm(finding.get("method")),
        _norm(finding.get("assistive_device")),
        _norm(finding.get("position")),
        finding.get("protocol"),
    )


def _trusted_value(measure: Measure, obs: dict[str, Any], finding: dict[str, Any]) -> tuple[Any, str | None]:
    """Return (value in the measure's unit or grade, None) or (None, why the point does not count)."""
    status = obs.get("status")
    if status not in TRUSTED_STATUS:
        return None, f"status {status!r}: only final, amended or corrected results count"
    value = finding["value"]
    if value is None:
        return None, f"no value of {measure.key}'s kind"
    if measure.grades:
        return value, None
    assert measure.unit is not None and measure.low is not None and measure.high is not None
    unit = finding.get("unit")
    canonical = convert(float(value), unit, measure.unit)
    if canonical is None:
        return None, (
            f"no unit, and {measure.key} has several"
            if unit is None
            else f"unit {unit!r} is not {measure.unit}"
        )
    if not measure.low <= canonical <= measure.high:
        return (
            None,
            f"{canonical:g} {measure.unit} is outside {measure.key}'s range {measure.low:g}-{measure.high:g}",
        )
    return codes.number(canonical), None


def _collect(
    observations: list[tuple[str, dict[str, Any]]],
) -> tuple[dict[Key, list[dict[str, Any]]], dict[tuple[str, Key], dict[str, Any]], list[dict[str, Any]]]:
    series: dict[Key, list[dict[str, Any]]] = {}
    sessions: dict[tuple[str, Key], dict[str, Any]] = {}
    excluded: list[dict[str, Any]] = []
    for ref, obs in observations:
        finding = finding_of(obs)
        if finding is None:
            continue  # not a catalog measure: not a progress point at all
        measure = get(finding["measure"])
        assert measure is not None
        when = _when(obs)
        moment = instant(when)
        value, reason = _trusted_value(measure, obs, finding)
        if moment is None:
            value, reason = None, "no effective date or time"
        if reason is not None:
            excluded.append(
                {"observation": ref, "measure": measure.key, "date": when, "value": finding["value"]}
                | {"unit": finding.get("unit"), "status": obs.get("status"), "reason": reason}
            )
            continue
        assert moment is not None
        point: dict[str, Any] = {
            "date": when,
            "instant": moment.isoformat().replace("+00:00", "Z"),
            "value": value,
            "observation": ref,
        }
        if measure.grades:
            point["grade"] = value
        elif finding.get("unit") not in (None, measure.unit):
            point["entered"] = {"value": finding["value"], "unit": finding["unit"]}
        key = _key(finding)
        timing = (ext(obs, codes.EXT_SESSION_TIMING) or {}).get("valueCode")
        encounter = (obs.get("encounter") or {}).get("reference")
        if timing in (PRE, POST) and encounter:
            sessions.setdefault((encounter, key), {})[timing] = point
        if timing != POST:
            series.setdefault(key, []).append(point)
    return series, sessions, excluded


def _order(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(points, key=lambda p: (p["instant"], p["observation"]))


def _better(measure: Measure, delta: float) -> str:
    if measure.direction is None or delta == 0:
        return "stable" if delta == 0 else "changed"
    return "improving" if (delta > 0) == (measure.direction == "higher") else "worsening"


def _rank(measure: Measure, grade: str) -> int:
    return rank(measure, grade)


def _days(a: dict[str, Any], b: dict[str, Any]) -> float:
    return (instant(b["instant"]) - instant(a["instant"])).total_seconds() / _DAY  # type: ignore[operator]


def slope(points: list[dict[str, Any]]) -> float | None:
    """Return the least-squares slope of value on time in units per day, or None without a time span."""
    xs = [_days(points[0], p) for p in points]
    ys = [float(p["value"]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _threshold(measure: Measure, baseline: float) -> tuple[float | None, str | None]:
    if measure.mdc is not None:
        return measure.mdc, "MDC"
    if measure.mcid is not None and measure.mcid_kind == "percent":
        return (measure.mcid * abs(baseline) / 100, "MCID") if baseline else (None, None)
    if measure.mcid is not None:
        return measure.mcid, "MCID"
    return None, None


def _numeric_trend(measure: Measure, points: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    per_day = slope(points)
    if per_day is None:
        return None, {"method": "least-squares slope", "reason": "all points at one instant"}
    fitted = per_day * _days(points[0], points[-1])
    threshold, kind = _threshold(measure, float(points[0]["value"]))
    detail = {
        "method": "least-squares slope of value on time over all points; fitted change = slope x span",
        "slope_per_30_days": round(per_day * 30, 4),
        "fitted_change": round(fitted, 4),
        "threshold": None if threshold is None else round(threshold, 4),
        "threshold_kind": kind,
    }
    if measure.direction is None:
        return None, detail
    if threshold is not None and abs(fitted) < threshold - 1e-9:
        return "stable", detail
    return _better(measure, fitted), detail


def _ordinal_trend(measure: Measure, points: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    ranks = [_rank(measure, p["grade"]) for p in points]
    s = sum((b > a) - (b < a) for i, a in enumerate(ranks) for b in ranks[i + 1 :])
    sign = 1 if measure.direction == "higher" else -1
    detail = {"method": "Mann-Kendall S: improving minus worsening pairs of points", "s": s * sign}
    detail["pairs"] = len(ranks) * (len(ranks) - 1) // 2
    return _better(measure, s), detail


def summarise(measure_key: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """Return baseline, latest, change, MCID, last step and trend of a series ordered by instant."""
    measure = get(measure_key)
    assert measure is not None
    first, last = points[0], points[-1]
    if measure.grades:
        steps = _rank(measure, last["grade"]) - _rank(measure, first["grade"])
        out: dict[str, Any] = {
            "scale": "ordinal",
            "baseline": first["grade"],
            "latest": last["grade"],
            "change": None,
            "grade_steps": steps,
            "percent_change": None,
        }
    else:
        change = round(last["value"] - first["value"], 4)
        out = {
            "scale": "numeric",
            "baseline": first["value"],
            "latest": last["value"],
            "change": change,
            "percent_change": None if first["value"] == 0 else round(change / abs(first["value"]) * 100, 2),
        }
    out |= {
        "mcid": measure.mcid,
        "mcid_kind": measure.mcid_kind if measure.mcid else None,
        "mcid_reached": None,
    }
    out |= {"mdc": measure.mdc, "last_step": None, "trend": None, "trend_detail": None}
    if len(points) < 2:
        out["trend"] = "baseline only" if measure.direction else None
        return out
    out["last_step"] = _step(measure, points[-2], last)
    if measure.grades:
        out["trend"], out["trend_detail"] = _ordinal_trend(measure, points)
        out["change_direction"] = _better(measure, out["grade_steps"])
        return out
    out["trend"], out["trend_detail"] = _numeric_trend(measure, points)
    if measure.mcid is not None and measure.direction is not None:
        improvement = out["change"] if measure.direction == "higher" else -out["change"]
        if measure.mcid_kind == "percent":
            out["mcid_reached"] = (
                first["value"] != 0 and improvement / abs(first["value"]) * 100 >= measure.mcid
            )
        else:
            out["mcid_reached"] = improvement >= measure.mcid - 1e-9
    return out


def _step(measure: Measure, prev: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    days = round(_days(prev, last), 3)
    if measure.grades:
        steps = _rank(measure, last["grade"]) - _rank(measure, prev["grade"])
        return {"from": prev["grade"], "to": last["grade"], "grade_steps": steps, "days": days} | {
            "direction": _better(measure, steps)
        }
    change = round(last["value"] - prev["value"], 4)
    return {"from": prev["value"], "to": last["value"], "change": change, "days": days} | {
        "direction": _better(measure, change)
    }


def _head(measure: Measure, key: Key, context: str) -> dict[str, Any]:
    _, side, site, method, assistive, position, protocol = key
    return {
        "measure": measure.key,
        "display": measure.display,
        "unit": measure.unit,
        "side": side,
        "body_site": site,
        "defined_by": {
            "method": method,
            "assistive_device": assistive,
            "position": position,
            "protocol": protocol,
            "context": context,
        },
        "direction": measure.direction,
    }


def _within(measure: Measure, pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for encounter, pair in sorted(pairs, key=lambda kv: (kv[1].get(PRE) or kv[1][POST])["instant"]):
        pre, post = pair.get(PRE), pair.get(POST)
        item: dict[str, Any] = {"encounter": encounter, "pre": pre, "post": post, "change": None}
        if pre and post and not measure.grades:
            item["change"] = round(post["value"] - pre["value"], 4)
            item["minutes_apart"] = round(_days(pre, post) * 1440, 1)
            item["direction"] = _better(measure, item["change"])
        out.append(item)
    return out


def report(observations: list[tuple[str, dict[str, Any]]], involved: str | None = None) -> dict[str, Any]:
    """Return the longitudinal series, the within-session changes and the excluded points."""
    series, sessions, excluded = _collect(observations)
    measures = []
    for key in sorted(series, key=lambda k: tuple(str(x) for x in k)):
        measure = get(key[0])
        assert measure is not None
        points = _order(series[key])
        entry = _head(measure, key, "longitudinal") | {"series": points} | summarise(measure.key, points)
        measures.append(entry)
    attach_symmetry(measures, involved)
    blocks: dict[Key, list[tuple[str, dict[str, Any]]]] = {}
    for (encounter, key), pair in sessions.items():
        blocks.setdefault(key, []).append((encounter, pair))
    within = []
    for key in sorted(blocks, key=lambda k: tuple(str(x) for x in k)):
        measure = get(key[0])
        assert measure is not None
        items = _within(measure, blocks[key])
        within.append(_head(measure, key, "within-session") | {"sessions": items})
    order = sorted(excluded, key=lambda e: (e["measure"], str(instant(e["date"]) or ""), e["observation"]))
    return {"measures": measures, "within_session": within, "excluded": order}


def involved_side(text: str | None) -> str | None:
    """Return the involved side a request names (left or right), or None; 400 for anything else."""
    if text not in (None, "left", "right"):
        raise InvalidRequestError(f"involved is left or right, not {text!r}", expression=("involved",))
    return text


def progress(
    observations: list[tuple[str, dict[str, Any]]], involved: str | None = None
) -> list[dict[str, Any]]:
    """Return the longitudinal series only (see `report`)."""
    return list(report(observations, involved)["measures"])
