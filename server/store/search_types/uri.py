"""uri search parameters in idx_uri (https://hl7.org/fhir/R4B/search.html#uri)."""

from __future__ import annotations

from typing import Any

from server.fhir.search.query import UriValue
from server.fhir.search.query import Value
from server.store.index_models import UriIndex
from server.store.search_types.base import Clause
from server.store.search_types.base import SqlType
from server.store.search_types.base import register


def condition(u: Any, v: Value, modifier: str | None) -> Clause:
    """Equal, :below (starts with) or :above (one of its parent paths) on an idx_uri row."""
    assert isinstance(v, UriValue)
    if modifier == "below":
        return u.uri.startswith(v.uri, autoescape=True)  # type: ignore[no-any-return]
    if modifier == "above":
        prefixes = {v.uri}
        head = v.uri
        while "/" in head.rstrip("/"):
            head = head.rstrip("/").rpartition("/")[0]
            if head.endswith(":/") or head.endswith(":"):
                break
            prefixes.add(head)
        return u.uri.in_(sorted(prefixes))  # type: ignore[no-any-return]
    return u.uri == v.uri  # type: ignore[no-any-return]


URI = register(SqlType("uri", UriIndex, "uris", ("param", "uri", "group"), condition, ("uri", "uri")))
