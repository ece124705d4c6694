"""Parse FHIR date, dateTime and instant values into the half-open UTC range they denote.

https://hl7.org/fhir/R4B/search.html#date
"""

from __future__ import annotations

import re
from datetime import datetime
from datetime import timedelta

from server.errors import InvalidRequestError

DATE_MIN = datetime(1, 1, 1)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59)

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def parse_date_range(value: str) -> tuple[datetime, datetime]:
    """Return the naive-UTC range [low, high) a date/dateTime/instant value covers."""
    m = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise InvalidRequestError(f"invalid date {value!r}", message_id="MSG_DATE_FORMAT")
    y, mo, d = int(m["y"]), int(m["m"] or 1), int(m["d"] or 1)
    try:
        low = datetime(y, mo, d, int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0))
    except ValueError as err:
        raise InvalidRequestError(f"invalid date {value!r}: {err}", message_id="MSG_DATE_FORMAT") from None
    if m["f"]:
        digits = m["f"][:6]
        low = low.replace(microsecond=int(digits.ljust(6, "0")))
        step = timedelta(microseconds=10 ** (6 - len(digits)))
    elif m["S"]:
        step = timedelta(seconds=1)
    elif m["M"]:
        step = timedelta(minutes=1)
    elif m["d"]:
        step = timedelta(days=1)
    else:
        return _month_range(y, mo, bool(m["m"]))
    high = low + step if low <= DATE_MAX - step else DATE_MAX
    tz = m["tz"]
    if tz and tz != "Z":  # a local time: shift to UTC (no zone at all is taken as UTC)
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        shift = -offset if tz[0] == "+" else offset
        return _clamp(low, shift), _clamp(high, shift)
    return low, high


def _month_range(y: int, mo: int, has_month: bool) -> tuple[datetime, datetime]:
    low = datetime(y, mo, 1)
    if has_month:
        high = datetime(y + (mo == 12), mo % 12 + 1, 1) if (y, mo) != (9999, 12) else DATE_MAX
    else:
        high = datetime(y + 1, 1, 1) if y < 9999 else DATE_MAX
    return low, high


def _clamp(moment: datetime, shift: timedelta) -> datetime:
    try:
        return moment + shift
    except OverflowError:
        return DATE_MIN if shift < timedelta(0) else DATE_MAX
