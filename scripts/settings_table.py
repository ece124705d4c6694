"""Print every setting of server/settings.py as a Markdown table; --write puts it into README.md.

Usage: python scripts/settings_table.py [--write [README.md]]
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Any

from server.settings import declared

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default(field: dataclasses.Field[Any]) -> str:
    if field.metadata["shown"]:
        return str(field.metadata["shown"])
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "none"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def table() -> str:
    """Return the settings as a Markdown table: variable, type, default, meaning."""
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for field in declared():
        rows.append(
            f"| `{field.metadata['env']}` | {field.type} | {_default(field)} | {field.metadata['meaning']} |"
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
