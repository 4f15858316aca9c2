"""The bool field (PocketBase's ``core/field_bool.go``): stored as 0/1."""

from __future__ import annotations

from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Field, Kind, Stored, option
from pbfast.pocketbase.fields.errors import required
from pbfast.pocketbase.gocompat import cast_to_bool, stored_to_string

__all__ = ["BoolField"]


@dataclass(eq=True, kw_only=True)
class BoolField(Field):
    TYPE = "bool"

    help: str = option("help", Kind.STR)
    required: bool = option("required", Kind.BOOL)

    def column_type(self) -> str:
        return "BOOLEAN DEFAULT FALSE NOT NULL"

    def typed(self, stored: Stored) -> bool:
        if type(stored) is int:  # its text is true only as "1"
            return stored == 1
        return cast_to_bool(stored_to_string(stored))

    def storage(self, typed: bool) -> Stored:
        return 1 if typed else 0

    def cast_raw(self, raw: object) -> Stored:
        return 1 if cast_to_bool(raw) else 0

    def typed_input(self, raw: object) -> bool:
        return cast_to_bool(raw)

    def finish(self, value: bool) -> Stored:
        if self.required and not value:
            raise required()
        return 1 if value else 0
