"""Check /rehab requests and responses against the OpenAPI document (JSON Schema 2020-12 via jsonschema).

The document is one `referencing` resource, so its `#/components/...` references resolve as
they would for any OpenAPI 3.1 tool.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing import Resource
from referencing.jsonschema import DRAFT202012

from server.api import openapi

URI = "urn:rehabfhir:openapi"
BASE = "http://testserver"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class OpenApiCheck:
    """Find the operation a request names and validate bodies against its declared schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry = Registry().with_resource(URI, Resource(contents=document, specification=DRAFT202012))
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in document["paths"]
        ]

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """Return (path template, operation object) for a request, or None when it is not documented."""
        path = path.split("?", 1)[0]
        for pattern, template in self.templates:
            op = self.document["paths"][template].get(method.lower()) if pattern.match(path) else None
            if op is not None:
                return template, op
        return None

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        validator = Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=self.registry)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(instance)
        ]

    def request(self, method: str, path: str, body: Any) -> list[str]:
        """Return what is wrong with a request body (empty when it validates)."""
        found = self.operation(method, path)
        assert found is not None, f"{method} {path} is not in the OpenAPI document"
        template, _ = found
        pointer = f"/paths/{_escape(template)}/{method.lower()}/requestBody/content/application~1json/schema"
        return self._errors(pointer, body)

    def response(self, method: str, path: str, status: int, content_type: str, body: Any) -> list[str]:
        """Return what is wrong with a response: undeclared status or media type, or a body off its schema."""
        found = self.operation(method, path)
        assert found is not None, f"{method} {path} is not in the OpenAPI document"
        template, op = found
        code = str(status) if str(status) in op["responses"] else "default"
        pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{code}"
        declared = op["responses"][code]
        if "$ref" in declared:
            pointer = declared["$ref"].removeprefix("#")
            declared = self.document["components"]["responses"][pointer.rsplit("/", 1)[1]]
        media = content_type.split(";", 1)[0].strip()
        if media not in declared.get("content", {}):
            return [f"{status} {media} is not declared for {method} {template}"]
        return self._errors(f"{pointer}/content/{_escape(media)}/schema", body)


@functools.lru_cache(maxsize=1)
def checker() -> OpenApiCheck:
    """The checker for the document as the test apps serve it."""
    return OpenApiCheck(openapi.document(BASE))


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Fail unless a /rehab answer is declared for its operation and its body validates (else: skip).

    Documented operations only: the description endpoints themselves, and paths /rehab does not
    serve (404s of the router), are not in the document.
    """
    check = checker()
    if check.operation(method, path) is None:
        return
    problems = check.response(method, path, status, content_type, orjson.loads(body))
    assert problems == [], f"{method} {path} -> {status}: the answer is off its declared schema: {problems}"
