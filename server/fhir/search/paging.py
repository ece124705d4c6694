"""Page sizes and paging cursors for searchset and history bundles.

https://hl7.org/fhir/R4B/http.html#paging
"""

from __future__ import annotations

from server.errors import InvalidRequestError

# Offsets, cursors and keys are bound as 64-bit integers (BIGINT on PostgreSQL, INTEGER on SQLite).
INT64_MAX = 2**63 - 1


def is_digits(value: str) -> bool:
    """Whether the text is ASCII digits only (str.isdigit also takes '²' and full-width digits)."""
    return value.isascii() and value.isdigit()


def nonnegative(value: str, name: str) -> int:
    """Parse a non-negative integer parameter the database can bind (at most INT64_MAX), else 400."""
    # Length first: int() of thousands of digits is slow and refused past 4300 digits.
    if not is_digits(value) or len(value.lstrip("0")) > 19 or int(value) > INT64_MAX:
        raise InvalidRequestError(
            f"Invalid {name} {value!r}: expected an integer from 0 to {INT64_MAX}",
            expression=(name,),
            message_id="MSG_PARAM_INVALID",
        )
    return int(value)


def page_size(value: str | None, *, default: int, maximum: int) -> int:
    """Parse _count: a non-negative integer, capped at the maximum (however large it is)."""
    if value is None or value == "":
        return default
    if not is_digits(value):
        raise InvalidRequestError(
            f"Invalid _count {value!r}: expected a non-negative integer",
            expression=("_count",),
            message_id="MSG_PARAM_INVALID",
        )
    # A server may return fewer than asked (R4B search.html#count): any larger number is the maximum.
    return maximum if len(value.lstrip("0")) > 19 else min(int(value), maximum)
