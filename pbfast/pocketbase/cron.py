"""PocketBase's cron expressions (``tools/cron``): parsing, with its error messages, and the next due minute.

Five space separated fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6, Sunday
0), each a list of ``*``, ``n``, ``a-b``, ``*/s`` or ``a-b/s``; or a macro (``@yearly``, ``@annually``,
``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``). As in PocketBase a minute is due when all
five fields match it, day of month *and* day of week (classic cron takes either of the two when both are
restricted), and times are UTC.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["CronError", "CronSchedule", "MACROS", "parse_cron"]

MACROS: Final = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                 "@hourly": "0 * * * *"}
_BOUNDS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_GO_INT: Final = re.compile(r"[+-]?[0-9]+")
# The Gregorian calendar repeats its weekdays every 400 years: a schedule with no due minute in that span
# (the 30th of February, or a day of month that never falls on the given weekday) has none at all.
_CALENDAR_CYCLE_MONTHS: Final = 400 * 12


class CronError(ValueError):
    """The expression is refused; the message is PocketBase's."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """The values each field matches."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday

    def is_due(self, moment: datetime) -> bool:
        """Whether the minute of ``moment`` (UTC) is due."""
        moment = moment.astimezone(UTC)
        return (moment.minute in self.minutes and moment.hour in self.hours and moment.day in self.days
                and moment.month in self.months and _weekday(moment.year, moment.month, moment.day) in self.weekdays)

    def next_due(self, after: datetime) -> datetime | None:
        """The first due minute strictly after the minute of ``after`` (UTC, seconds 0), None if there is
        none (e.g. ``0 0 30 2 *``)."""
        start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        year, month = start.year, start.month
        for _ in range(_CALENDAR_CYCLE_MONTHS):
            if month in self.months:
                first_day = start.day if (year, month) == (start.year, start.month) else 1
                for day in sorted(d for d in self.days if first_day <= d <= calendar.monthrange(year, month)[1]):
                    if _weekday(year, month, day) not in self.weekdays:
                        continue
                    same_day = (year, month, day) == (start.year, start.month, start.day)
                    found = self._first_time(start.hour if same_day else 0, start.minute if same_day else 0)
                    if found is not None:
                        return datetime(year, month, day, found[0], found[1], tzinfo=UTC)
            month += 1
            if month > 12:
                year, month = year + 1, 1
                if year > 9999:
                    return None
        return None

    def _first_time(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first (hour, minute) at or after ``hour:minute`` of one day."""
        for candidate in sorted(h for h in self.hours if h >= hour):
            minutes = [m for m in self.minutes if candidate > hour or m >= minute]
            if minutes:
                return candidate, min(minutes)
        return None


def _weekday(year: int, month: int, day: int) -> int:
    return (calendar.weekday(year, month, day) + 1) % 7  # Python's Monday 0 -> Go's Sunday 0


def parse_cron(expression: str) -> CronSchedule:
    """The schedule of ``expression``; raises :class:`CronError` with PocketBase's message."""
    segments = MACROS.get(expression, expression).split(" ")
    if len(segments) != 5:
        raise CronError("invalid cron expression - must be a valid macro or to have exactly 5 space separated segments")
    minutes, hours, days, months, weekdays = (_segment(segment, low, high)
                                              for segment, (low, high) in zip(segments, _BOUNDS, strict=True))
    return CronSchedule(minutes, hours, days, months, weekdays)


def _atoi(text: str) -> int:
    if not _GO_INT.fullmatch(text):
        raise CronError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _segment(segment: str, low: int, high: int) -> frozenset[int]:
    slots: set[int] = set()
    for part in segment.split(","):
        step_parts = part.split("/")
        if len(step_parts) > 2:
            raise CronError("invalid segment step format - must be in the format */n or 1-30/n")
        step = 1
        if len(step_parts) == 2:
            step = _atoi(step_parts[1])
            if step < 1 or step > high:
                raise CronError(f"invalid segment step boundary - the step must be between 1 and the {high}")
        if step_parts[0] == "*":
            first, last = low, high
        else:
            bounds = step_parts[0].split("-")
            if len(bounds) == 1:
                if step != 1:
                    raise CronError("invalid segment step - step > 1 could be used only with the wildcard or range format")
                first = last = _atoi(bounds[0])
                if not low <= first <= high:
                    raise CronError("invalid segment value - must be between the min and max of the segment")
            elif len(bounds) == 2:
                first = _atoi(bounds[0])
                if not low <= first <= high:
                    raise CronError(f"invalid segment range minimum - must be between {low} and {high}")
                last = _atoi(bounds[1])
                if last < first or last > high:
                    raise CronError(f"invalid segment range maximum - must be between {first} and {high}")
            else:
                raise CronError("invalid segment range format - the range must have 1 or 2 parts")
        slots.update(range(first, last + 1, step))
    return frozenset(slots)
