"""The official HL7 packages the tests read, fetched with npm into a cache outside the clone.

FHIR_PACKAGE_CACHE (default ~/.cache/rehabfhir) is where .ci/run puts them; with npm on the
machine a missing package is fetched on first use.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

CACHE = pathlib.Path(os.environ.get("FHIR_PACKAGE_CACHE", pathlib.Path.home() / ".cache" / "rehabfhir"))


def package(name: str, version: str) -> pathlib.Path | None:
    """Return the path of `name-version.tgz`, fetching it with `npm pack` if needed (None if it cannot)."""
    path = CACHE / f"{name}-{version}.tgz"
    if not path.exists() and shutil.which("npm"):
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "pack", f"{name}@{version}", "--silent"],
            cwd=CACHE,
            capture_output=True,
            timeout=300,
            check=False,
        )
    return path if path.exists() else None
