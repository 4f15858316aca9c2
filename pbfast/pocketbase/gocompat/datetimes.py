"""PocketBase's ``types.ParseDateTime``/``cast.ToTime``, its datetime layout, ``time.Time.String()`` and its
JSON form.

Pure functions (caches are thread-safe): safe from any thread.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from pbfast.pocketbase.gocompat.cast import stored_to_string


_ISO_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:(Z)|\s?([+-])(\d{2}):?(\d{2})(?:\s+[A-Za-z]{3,5})?|\s+(?:UTC|GMT|[A-Z]{3,5}))?)?"
)
_MONTHS: Final = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_DAY_MONTH_YEAR = re.compile(
    r"(?:[A-Z][a-z]{2},\s+)?(\d{1,2})\s+([A-Z][a-z]{2})\s+(\d{4})"
    r"(?:\s+(\d{2}):(\d{2})(?::(\d{2}))?\s*(?:([+-])(\d{2})(\d{2})|(?:UTC|GMT|[A-Z]{3,5}))?)?"
)


def _build_datetime(year: str, month: int, day: str, hour: str | None, minute: str | None, second: str | None,
                    fraction: str | None, sign: str | None, tz_hours: str | None, tz_minutes: str | None,
                    ) -> datetime | None:
    try:
        zone = UTC
        if sign and tz_hours is not None:
            offset = timedelta(hours=int(tz_hours), minutes=int(tz_minutes or 0))
            zone = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(int(year), month, int(day), int(hour or 0), int(minute or 0), int(second or 0),
                          micro, tzinfo=zone)
    except ValueError:
        return None
    return moment.astimezone(UTC)


def parse_datetime(value: Any) -> datetime | None:
    """PocketBase's ``types.ParseDateTime``: a UTC datetime, or None for the zero (empty/unparsable) date.

    Accepts ``2006-01-02 15:04:05.000Z`` and the other layouts ``cast.ToTime`` knows that matter in
    practice: RFC 3339 with ``T`` or a space, optional fraction and zone (``Z``, ``+07:00``, ``+0700``),
    bare dates, ``02 Jan 2006`` and RFC 1123 dates. Numbers are not dates (PocketBase sees them as
    float64 and cannot parse ``"1.7e+09"``).
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    match = _ISO_DATETIME.fullmatch(value)
    if match:
        year, month, day, hour, minute, second, fraction, _zulu, sign, tz_h, tz_m = match.groups()
        return _build_datetime(year, int(month), day, hour, minute, second, fraction, sign, tz_h, tz_m)
    match = _DAY_MONTH_YEAR.fullmatch(value)
    if match:
        day, month_name, year, hour, minute, second, sign, tz_h, tz_m = match.groups()
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        return _build_datetime(year, month, day, hour, minute, second, None, sign, tz_h, tz_m)
    return None


# A text already in PocketBase's layout whose parse and format give it back unchanged: a four-digit year from
# 1000 (Python writes smaller years unpadded), and a day every month has (29-31 take the long way).
CANONICAL_DATETIME: Final = re.compile(
    r"[1-9]\d{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8]) (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z")


def stored_datetime_text(stored: Any) -> str:
    """A stored date column as PocketBase shows it (``2006-01-02 15:04:05.000Z``, "" for the zero date):
    ``format_datetime_value(parse_datetime(stored_to_string(stored)))``, without the round trip for a text
    already in that form (what pbfast and PocketBase store)."""
    if type(stored) is str and CANONICAL_DATETIME.fullmatch(stored):
        return stored
    return format_datetime_value(parse_datetime(stored_to_string(stored)))


def format_datetime_value(moment: datetime | None) -> str:
    """A datetime in PocketBase's ``2006-01-02 15:04:05.000Z`` layout ("" for the zero date)."""
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def time_string(moment: datetime) -> str:
    """Go's ``time.Time.String()`` for a UTC time (used in ozzo's date threshold messages)."""
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + " +0000 UTC"


def time_json(moment: datetime) -> str:
    """Go's RFC 3339 JSON form of a UTC time (``2020-01-01T00:00:00Z``)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += ("." + f"{moment.microsecond:06d}").rstrip("0")
    return text + "Z"
