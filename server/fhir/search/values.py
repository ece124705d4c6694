"""Pieces of search values shared by the parameter types: escapes, prefixes, numbers.

https://hl7.org/fhir/R4B/search.html#escaping and #prefix
"""

from __future__ import annotations

from decimal import Decimal
from decimal import InvalidOperation
from decimal import localcontext

from server.errors import InvalidRequestError

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_NUMBER_EXPONENT_MAX = 1000
_NUMBER_DIGITS_MAX = 1000


def bad(message: str, param: str) -> InvalidRequestError:
    """A 400 naming the parameter whose value is malformed."""
    return InvalidRequestError(message, expression=(param,), message_id="MSG_PARAM_INVALID")


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash, then undo the \\, \\| \\$ \\\\ escapes."""
    parts, current, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """Undo the backslash escapes of a search value."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_prefix(raw: str) -> tuple[str, str]:
    """(prefix, rest) of a number, date or quantity value; eq when it has none."""
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] in "-+."):
        return raw[:2], raw[2:]
    return "eq", raw


def parse_number(raw: str, param: str) -> tuple[Decimal, Decimal, Decimal]:
    """Return the number and its implicit precision range [low, high)."""
    try:
        number = Decimal(raw.strip())
    except InvalidOperation:
        raise bad(f"Invalid number {raw!r} for parameter {param}", param) from None
    if not number.is_finite():
        raise bad(f"Invalid number {raw!r} for parameter {param}", param)
    # Far beyond any stored value (JSON numbers here are doubles, |x| < 1e309) and within what both
    # databases bind as a numeric (PostgreSQL: 16383 digits after the point; SQLite: a double).
    if abs(number.adjusted()) > _NUMBER_EXPONENT_MAX or len(number.as_tuple().digits) > _NUMBER_DIGITS_MAX:
        raise bad(
            f"Number {raw!r} for parameter {param} is out of range: at most {_NUMBER_DIGITS_MAX} digits"
            f" and an exponent from -{_NUMBER_EXPONENT_MAX} to {_NUMBER_EXPONENT_MAX}",
            param,
        )
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    # Exact bounds: the default 28-digit context would round a longer number's range off it.
    with localcontext(prec=max(28, len(number.as_tuple().digits) + 2)):
        return number, number - half, number + half
