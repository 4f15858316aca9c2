"""The date field (PocketBase's ``core/field_date.go``): stored as ``2006-01-02 15:04:05.000Z`` or ``""``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pbfast.pocketbase.fields.base import Field, Kind, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, required
from pbfast.pocketbase.gocompat import (
    format_datetime_value,
    parse_datetime,
    stored_datetime_text,
    stored_to_string,
    time_json,
    time_string,
)

__all__ = ["DateField"]


@dataclass(eq=True, kw_only=True)
class DateField(Field):
    TYPE = "date"

    help: str = option("help", Kind.STR)
    max: str = option("max", Kind.DATE)
    min: str = option("min", Kind.DATE)
    required: bool = option("required", Kind.BOOL)

    def typed(self, stored: Stored) -> datetime | None:
        return parse_datetime(stored_to_string(stored))

    def storage(self, typed: datetime | None) -> Stored:
        return format_datetime_value(typed)

    def cast_raw(self, raw: object) -> Stored:
        return format_datetime_value(parse_datetime(raw))

    def typed_input(self, raw: object) -> datetime | None:
        return parse_datetime(raw)

    def finish(self, value: datetime | None) -> Stored:
        if value is None:
            if self.required:
                raise required()
            return ""
        moment = value.replace(microsecond=value.microsecond // 1000 * 1000)
        low, high = parse_datetime(self.min), parse_datetime(self.max)
        if low is not None and moment < low:
            raise FieldError("validation_min_greater_equal_than_required",
                             f"must be no less than {time_string(low)}", {"threshold": time_json(low)})
        if high is not None and moment > high:
            raise FieldError("validation_max_less_equal_than_required",
                             f"must be no greater than {time_string(high)}", {"threshold": time_json(high)})
        return format_datetime_value(moment)

    def to_api(self, stored: Stored) -> object:
        return stored_datetime_text(stored)

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        low, high = parse_datetime(self.min), parse_datetime(self.max)
        if high is not None and low is not None and high < low:
            put("max", FieldError("validation_date_out_of_range", "the date is out of range").to_dict())
