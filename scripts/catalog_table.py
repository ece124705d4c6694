"""Print the rehab measure catalog as a Markdown table; --write puts it into README.md between the markers.

Usage: python scripts/catalog_table.py [--write [README.md]]
"""

from __future__ import annotations

import pathlib
import sys

from fhir_mapping.catalog import MEASURES
from fhir_mapping.catalog import Measure

START, END = "<!-- catalog:start -->", "<!-- catalog:end -->"


def _range(m: Measure) -> str:
    if m.grades:
        return " ".join(g.code for g in m.grades)
    return f"{m.low:g} to {m.high:g}"


def _codes(m: Measure) -> str:
    sent = []
    for c in m.codes:
        system = "LOINC" if c.system.endswith("loinc.org") else "SNOMED"
        qualifier = f" ({c.side or c.protocol})" if c.side or c.protocol else ""
        sent.append(
            f"{system} {c.code}{qualifier}" if c.sent else f"~~{system} {c.code}~~ ({c.status}, not sent)"
        )
    return "; ".join(sent) or "— (our code only)"


def _mcid(m: Measure) -> str:
    if m.mcid is None:
        return "—"
    return f"{m.mcid:g}{' % of baseline' if m.mcid_kind == 'percent' else ''}"


def _mdc(m: Measure) -> str:
    return "—" if m.mdc is None else f"{m.mdc:g}"


def table() -> str:
    """Return the catalog as a Markdown table."""
    rows = [
        "| measure | category | unit (also accepted) | valid range | side | better | MCID | MDC"
        " | standard codes | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in MEASURES:
        units = f"`{m.unit}`" + (f" ({', '.join(u for u in m.input_units if u != m.unit)})" if m.unit else "")
        rows.append(
            f"| `{m.key}` {m.display} | {m.category} | {units if m.unit else 'graded'} | {_range(m)} | "
            f"{m.laterality} | {m.direction or '—'} | {_mcid(m)} | {_mdc(m)} | {_codes(m)} | {m.status} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    """Print the table, or write it into the README."""
    if not argv or argv[0] != "--write":
        sys.stdout.write(table())
        return 0
    path = pathlib.Path(argv[1] if len(argv) > 1 else "README.md")
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{START}\n{table()}{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
