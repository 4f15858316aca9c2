"""Datetime text formats: PocketBase's ``2006-01-02 15:04:05.000Z`` (UTC) for API fields, and RFC 3339
(normalised to UTC ``2006-01-02T15:04:05[.000000]Z``) for points in time given to and by restores: strictly
(:func:`parse_rfc3339`, what an operator gives), or as Litestream writes and takes them (:func:`parse_time`:
no zone means UTC, up to nanoseconds)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["format_datetime", "format_rfc3339", "parse_rfc3339", "parse_time"]

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<hours>\d{2}):(?P<minutes>\d{2}))")


# The text of the last second formatted (every record save stamps "now": ~0.4 us instead of ~2.5 us).
_last_second: tuple[int, str] = (-1, "")


def format_datetime(unix_seconds: float) -> str:
    """Format Unix seconds the way PocketBase shows dates (``2024-01-31 12:34:56.789Z``)."""
    global _last_second  # noqa: PLW0603 - a cache; a tuple is replaced whole, so threads see one or the other
    # Split as datetime.fromtimestamp does (microseconds rounded half to even, carried into the second).
    fraction, whole = math.modf(unix_seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros, whole = micros - 1_000_000, whole + 1.0
    elif micros < 0:
        micros, whole = micros + 1_000_000, whole - 1.0
    second = int(whole)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S."))
    return f"{last[1]}{micros // 1000:03d}Z"


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp (``2026-11-28T12:00:00Z``, ``2026-11-28T13:00:00.5+01:00``) as an aware UTC
    datetime; fractions beyond microseconds are truncated. Raises ValueError for anything else (a missing
    offset included: RFC 3339 requires one)."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    offset = UTC
    if match["sign"]:
        hours, minutes = int(match["hours"]), int(match["minutes"])
        if hours > 23 or minutes > 59:
            raise ValueError(f"invalid UTC offset in {text!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        offset = timezone(delta if match["sign"] == "+" else -delta)
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    try:
        return datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}").replace(
            tzinfo=offset).astimezone(UTC)
    except (ValueError, OverflowError) as err:  # month 13, second 60 (a leap second), year 0, ...
        raise ValueError(f"invalid date or time in {text!r}: {err}") from err


_LENIENT_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)?")


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp (up to nanoseconds; no zone means UTC) as Unix seconds. Raises ValueError."""
    match = _LENIENT_RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    return datetime.fromisoformat(head.replace(" ", "T") + zone).timestamp() + (float("0." + fraction)
                                                                                 if fraction else 0.0)


def format_rfc3339(moment: datetime | float) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ``, with ``.ffffff`` when the moment has a fraction of a second."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond:06d}Z" if moment.microsecond else f"{text}Z"
