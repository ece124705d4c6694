"""The README's catalog table is the one scripts/catalog_table.py generates from the code."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_readme_table_matches_catalog() -> None:
    spec = importlib.util.spec_from_file_location("catalog_table", ROOT / "scripts" / "catalog_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    between = readme.split(module.START, 1)[1].split(module.END, 1)[0]
    assert between == "\n" + module.table(), "run: python scripts/catalog_table.py --write"
    assert module.table().count("\n") == len(module.MEASURES) + 2
