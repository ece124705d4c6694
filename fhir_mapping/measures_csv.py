"""GET /rehab/patients/{id}/measures.csv: every measurement point of a progress report, one CSV row each.

Rows follow the progress report: the longitudinal series (each point once, in order), the values
taken after treatment in a session (context `within-session`; the value before is already in its
series) and every point not counted (`excluded` true, with the reason). The series keys (measure,
side, body site, method, assistive device, position, protocol, context) are columns, so a
spreadsheet can filter and pivot on them. RFC 4180 (CRLF line ends, quoted where needed).
"""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = (
    "observation",
    "date",
    "measure",
    "display",
    "context",
    "side",
    "body_site",
    "method",
    "assistive_device",
    "position",
    "protocol",
    "value",
    "unit",
    "entered_value",
    "entered_unit",
    "excluded",
    "reason",
)


def _keys(head: dict[str, Any], context: str) -> dict[str, Any]:
    defined = head.get("defined_by") or {}
    return {
        "measure": head["measure"],
        "display": head.get("display"),
        "context": context,
        "side": head.get("side"),
        "body_site": head.get("body_site"),
        **{k: defined.get(k) for k in ("method", "assistive_device", "position", "protocol")},
    }


def _point(keys: dict[str, Any], point: dict[str, Any], unit: str | None) -> dict[str, Any]:
    entered = point.get("entered") or {}
    return {
        **keys,
        "observation": point["observation"],
        "date": point["date"],
        "value": point["value"],
        "unit": None if point.get("grade") is not None else unit,
        "entered_value": entered.get("value"),
        "entered_unit": entered.get("unit"),
        "excluded": "false",
    }


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the CSV rows of a progress report (analytics.report)."""
    out = []
    for m in report["measures"]:
        keys = _keys(m, "longitudinal")
        out += [_point(keys, p, m.get("unit")) for p in m["series"]]
    for m in report["within_session"]:
        keys = _keys(m, "within-session")
        out += [_point(keys, s["post"], m.get("unit")) for s in m["sessions"] if s.get("post")]
    for e in report["excluded"]:
        out.append(
            {
                "observation": e["observation"],
                "date": e.get("date"),
                "measure": e["measure"],
                "value": e.get("value"),
                "unit": e.get("unit"),
                "excluded": "true",
                "reason": e["reason"],
            }
        )
    return out


def to_csv(report: dict[str, Any]) -> str:
    """Return the report as CSV text with a header row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows(report):
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return buffer.getvalue()
