"""The autodate field (PocketBase's ``core/field_autodate.go``): stamped with the save time on create
and/or update, never set by a client."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import MISSING, Field, Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError
from pbfast.pocketbase.gocompat import format_datetime_value, parse_datetime, stored_datetime_text, stored_to_string
from pbfast.timefmt import format_datetime

__all__ = ["AutodateField"]


@dataclass(eq=True, kw_only=True)
class AutodateField(Field):
    TYPE = "autodate"

    on_create: bool = option("onCreate", Kind.BOOL)
    on_update: bool = option("onUpdate", Kind.BOOL)

    def stamp(self, is_new: bool, now: str) -> str | None:
        """The value the field gets when a record is saved: ``now`` when it is set on create (new records)
        or on update (existing ones), else None (keep; a new record then stores the zero date ``""``)."""
        if (is_new and self.on_create) or (not is_new and self.on_update):
            return now
        return None

    def typed(self, stored: Stored) -> object:
        return parse_datetime(stored_to_string(stored))

    def _kept(self, current: Stored | Missing) -> Stored:
        if isinstance(current, Missing) or current is None:
            return ""
        return format_datetime_value(parse_datetime(stored_to_string(current)))

    def cast(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool) -> Stored:
        return self._kept(current)  # stamped when the record is saved

    def prepare(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool,
                uploaded: Sequence[str] = ()) -> Stored:
        if (is_new and self.on_create) or (not is_new and self.on_update):  # see stamp(); "now" only when used
            return format_datetime(time.time())
        return self._kept(current)

    def to_api(self, stored: Stored) -> object:
        return stored_datetime_text(stored)

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        old = context.old_field if isinstance(context.old_field, AutodateField) else None
        old_create = old.on_create if old is not None else self.on_create
        old_update = old.on_update if old is not None else self.on_update
        for key, value, previous, other in (("onCreate", self.on_create, old_create, self.on_update),
                                            ("onUpdate", self.on_update, old_update, self.on_create)):
            if self.system and value != previous:
                put(key, FieldError("validation_values_mismatch", "Values don't match.").to_dict())
            elif not value and not other:
                put(key, FieldError("validation_required", "either onCreate or onUpdate must be enabled").to_dict())
