"""PocketBase's cron expressions (pbfast.pocketbase.cron): what is accepted and refused (the cases of
PocketBase's ``tools/cron/schedule_test.go``), and the next due minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pbfast.pocketbase.cron import CronError, parse_cron


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", [
    "invalid", "* * * *", "* * * * * *", "2/3 * * * *", "-1 * * * *", "60 * * * *", "* -1 * * *", "* 24 * * *",
    "* * 0 * *", "* * 32 * *", "* * * 0 *", "* * * 13 *", "* * * * -1", "* * * * 7", "*  * * * *", "@every",
    "1-2-3 * * * *", "*/0 * * * *", "*/60 * * * *", "5-3 * * * *", "a * * * *", "*/1/2 * * * *"])
def test_refused_as_pocketbase_refuses(expression: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expression)


def test_the_messages_are_pocketbases() -> None:
    cases = {
        "* * * *": "invalid cron expression - must be a valid macro or to have exactly 5 space separated segments",
        "2/3 * * * *": "invalid segment step - step > 1 could be used only with the wildcard or range format",
        "60 * * * *": "invalid segment value - must be between the min and max of the segment",
        "*/60 * * * *": "invalid segment step boundary - the step must be between 1 and the 59",
        "* 5-3 * * *": "invalid segment range maximum - must be between 5 and 23",
        "* * 0-3 * *": "invalid segment range minimum - must be between 1 and 31",
        "x * * * *": 'strconv.Atoi: parsing "x": invalid syntax',
        "1-2-3 * * * *": "invalid segment range format - the range must have 1 or 2 parts",
        "*/1/2 * * * *": "invalid segment step format - must be in the format */n or 1-30/n",
    }
    for expression, message in cases.items():
        with pytest.raises(CronError) as raised:
            parse_cron(expression)
        assert str(raised.value) == message, expression


def test_fields_lists_ranges_and_steps() -> None:
    schedule = parse_cron("1,2,5,7,40-50/2 3,4,8-16/3,7 5,6,20-30/3,1 1,4,5-10/2 1,2-5/2")
    assert schedule.minutes == {1, 2, 5, 7, 40, 42, 44, 46, 48, 50}
    assert schedule.hours == {3, 4, 7, 8, 11, 14}
    assert schedule.days == {1, 5, 6, 20, 23, 26, 29}
    assert schedule.months == {1, 4, 5, 7, 9}
    assert schedule.weekdays == {1, 2, 4}
    every = parse_cron("*/2 */3 */5 */4 */2")
    assert every.minutes == set(range(0, 60, 2)) and every.days == {1, 6, 11, 16, 21, 26, 31}
    assert every.months == {1, 5, 9} and every.weekdays == {0, 2, 4, 6}
    assert parse_cron("+5 * * * *").minutes == {5}  # Go's Atoi takes a sign


@pytest.mark.parametrize(("expression", "after", "due"), [
    ("* * * * *", "2026-03-01 10:15", "2026-03-01 10:16"),
    ("*/15 * * * *", "2026-03-01 10:15", "2026-03-01 10:30"),
    ("*/15 * * * *", "2026-03-01 23:59", "2026-03-02 00:00"),
    ("0 0 * * *", "2026-12-31 23:59", "2027-01-01 00:00"),
    ("@hourly", "2026-03-01 10:00", "2026-03-01 11:00"),
    ("@daily", "2026-03-01 00:00", "2026-03-02 00:00"),
    ("@midnight", "2026-03-01 13:00", "2026-03-02 00:00"),
    ("@weekly", "2026-03-01 00:00", "2026-03-08 00:00"),  # 2026-03-01 is a Sunday
    ("@monthly", "2026-01-31 12:00", "2026-02-01 00:00"),
    ("@yearly", "2026-01-01 00:00", "2027-01-01 00:00"),
    ("@annually", "2025-06-01 00:00", "2026-01-01 00:00"),
    ("30 2 31 * *", "2026-04-01 00:00", "2026-05-31 02:30"),  # April has no 31st
    ("0 0 29 2 *", "2026-01-01 00:00", "2028-02-29 00:00"),
    ("5 4-6 * * *", "2026-03-01 04:05", "2026-03-01 05:05"),
    ("5 4-6 * * *", "2026-03-01 06:05", "2026-03-02 04:05"),
    ("10,50 * * * *", "2026-03-01 04:11", "2026-03-01 04:50"),
    # PocketBase wants the day of month AND the day of week: Friday the 13th
    ("0 9 13 * 5", "2026-01-01 00:00", "2026-02-13 09:00"),
    ("0 9 13 * 5", "2026-02-13 09:00", "2026-03-13 09:00"),
    ("0 0 * 6 1-5", "2026-05-31 23:59", "2026-06-01 00:00"),  # a Monday
    ("0 0 * 1 0", "2026-02-01 00:00", "2027-01-03 00:00"),
])
def test_next_due(expression: str, after: str, due: str) -> None:
    schedule = parse_cron(expression)
    found = schedule.next_due(at(after))
    assert found == at(due)
    assert schedule.is_due(found)
    assert not schedule.is_due(found - timedelta(minutes=1)) or expression.startswith("*")


def test_next_due_is_after_the_minute_and_in_utc() -> None:
    schedule = parse_cron("30 12 * * *")
    assert schedule.next_due(datetime(2026, 3, 1, 12, 29, 59, 999999, tzinfo=UTC)) == at("2026-03-01 12:30")
    assert schedule.next_due(datetime(2026, 3, 1, 12, 30, 59, tzinfo=UTC)) == at("2026-03-02 12:30")
    plus_two = timezone(timedelta(hours=2))
    assert schedule.next_due(datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)) == at("2026-03-01 12:30")


def test_a_schedule_that_never_comes() -> None:
    assert parse_cron("0 0 30 2 *").next_due(at("2026-01-01 00:00")) is None
    assert parse_cron("0 0 31 4,6,9,11 *").next_due(at("2026-01-01 00:00")) is None


def test_next_due_agrees_with_minute_by_minute_checks() -> None:
    for expression in ("7,37 */5 * * 1-3", "0 0 1,15 * 0-6", "*/20 3 * 2 *"):
        schedule = parse_cron(expression)
        moment = at("2026-01-30 22:00")
        for _ in range(5):
            found = schedule.next_due(moment)
            assert found is not None
            probe = moment.replace(second=0) + timedelta(minutes=1)
            while not schedule.is_due(probe):
                probe += timedelta(minutes=1)
            assert probe == found, expression
            moment = found
