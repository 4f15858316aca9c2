"""The select field (PocketBase's ``core/field_select.go``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, first_error, max_error, min_error, required, templated
from pbfast.pocketbase.fields.multi import MultiValueField

__all__ = ["SelectField"]


@dataclass(eq=True, kw_only=True)
class SelectField(MultiValueField):
    TYPE = "select"

    help: str = option("help", Kind.STR)
    max_select: int = option("maxSelect", Kind.INT)
    required: bool = option("required", Kind.BOOL)
    values: list[str] = option("values", Kind.STRLIST)

    def check_values(self, values: list[str], current: Stored | Missing, uploaded: Sequence[str]) -> None:
        if not values:
            if self.required:
                raise required()
            return
        max_select = max(self.max_select, 1)
        if len(values) > max_select:
            raise templated("validation_too_many_values", "Select no more than {{.maxSelect}}", {"maxSelect": max_select})
        for value in values:
            if value not in self.values:
                raise templated("validation_invalid_value", "Invalid value {{.value}}", {"value": value})

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        if not self.values:
            put("values", required().to_dict())
        put("maxSelect", first_error(min_error(self.max_select, 0), max_error(self.max_select, len(self.values) or 1)))
