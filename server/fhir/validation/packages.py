"""FHIR NPM packages (an Implementation Guide's .tgz): the conformance resources a profile needs.

https://confluence.hl7.org/display/FHIR/NPM+Package+Specification

A package is a gzipped tar whose `package/` folder holds package.json (name, version) and one
JSON resource per file. `read_package` returns the StructureDefinitions, ValueSets and
CodeSystems in it (other files are skipped); `rehabfhir ig install` stores them and the server
holds the profiles among them (server.fhir.validation.profiles).
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequestError

KINDS = ("StructureDefinition", "ValueSet", "CodeSystem")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class Package:
    """The package's name and version, and its conformance resources by file name."""

    name: str
    version: str
    resources: list[tuple[str, dict[str, Any]]]


def _resource_id(file: str, resource: dict[str, Any]) -> str:
    """The resource's id, else the last part of its canonical URL (which must make a valid id)."""
    id_ = resource.get("id") or str(resource.get("url") or "").rstrip("/").rsplit("/", 1)[-1]
    if not isinstance(id_, str) or not _ID.match(id_):
        raise InvalidRequestError(f"{file}: no usable id (id or the end of url)", expression=("id",))
    return id_


def read_package(path: str) -> Package:
    """Read an NPM package .tgz; refuse one without package/package.json."""
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise InvalidRequestError(f"{path}: not a package (.tgz): {exc}") from None
    manifest: dict[str, Any] | None = None
    found: list[tuple[str, dict[str, Any]]] = []
    with tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if not member.isfile() or not name.startswith("package/") or not name.endswith(".json"):
                continue
            if name.count("/") != 1:  # package/other/, package/example/: not the package's own
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            try:
                doc = json.load(handle)
            except ValueError as exc:
                raise InvalidRequestError(f"{name}: not JSON: {exc}") from None
            if name == "package/package.json":
                manifest = doc
            elif isinstance(doc, dict) and doc.get("resourceType") in KINDS:
                doc = {**doc, "id": _resource_id(name, doc)}
                found.append((name, doc))
    if not isinstance(manifest, dict) or not manifest.get("name"):
        raise InvalidRequestError(f"{path}: package/package.json with a name is missing")
    return Package(str(manifest["name"]), str(manifest.get("version") or ""), found)
