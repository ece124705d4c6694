"""Page sizes and paging cursors for searchset and history bundles.

https://hl7.org/fhir/R4B/http.html#paging
"""

from __future__ import annotations

from server.errors import InvalidRequestError


def page_size(value: str | None, *, default: int, maximum: int) -> int:
    """Parse _count: a non-negative integer, capped at the maximum."""
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise InvalidRequestError(
            f"Invalid _count {value!r}: expected a non-negative integer",
            expression=("_count",),
            message_id="MSG_PARAM_INVALID",
        )
    return min(int(value), maximum)
