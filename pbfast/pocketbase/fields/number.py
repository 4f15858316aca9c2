"""The number field (PocketBase's ``core/field_number.go``), with its ``name+``/``name-`` modifiers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Field, Kind, SettingsContext, Setter, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, required, templated
from pbfast.pocketbase.gocompat import cast_to_float, json_number, stored_to_string

__all__ = ["NumberField"]


@dataclass(eq=True, kw_only=True)
class NumberField(Field):
    TYPE = "number"

    help: str = option("help", Kind.STR)
    max: float | None = option("max", Kind.NUMBER)
    min: float | None = option("min", Kind.NUMBER)
    only_int: bool = option("onlyInt", Kind.BOOL)
    required: bool = option("required", Kind.BOOL)

    def column_type(self) -> str:
        return "NUMERIC DEFAULT 0 NOT NULL"

    def typed(self, stored: Stored) -> float:
        return cast_to_float(stored_to_string(stored))

    def cast_raw(self, raw: object) -> Stored:
        return cast_to_float(raw)

    def typed_input(self, raw: object) -> float:
        return cast_to_float(raw)

    def finish(self, value: float) -> Stored:
        number = float(value)
        if math.isinf(number) or math.isnan(number):
            raise FieldError("validation_not_a_number", "The submitted number is not properly formatted")
        if number == 0:
            if self.required:
                raise required()
            return number
        if self.only_int and not number.is_integer():
            raise FieldError("validation_only_int_constraint", "Decimal numbers are not allowed")
        if self.min is not None and number < self.min:
            raise templated("validation_min_number_constraint", "Must be greater or equal than {{.min}}",
                            {"min": self.min})
        if self.max is not None and number > self.max:
            raise templated("validation_max_number_constraint", "Must be less or equal than {{.max}}",
                            {"max": self.max})
        return number

    def to_api(self, stored: Stored) -> object:
        # A stored REAL or INTEGER is the float64 PocketBase reads back from its text form (shortest digits
        # round-trip exactly), so the text is not made.
        kind = type(stored)
        typed = stored if kind is float else float(stored) if kind is int else self.typed(stored)
        return json_number(typed) if math.isfinite(typed) else 0

    def find_setter(self, key: str) -> Setter | None:
        if key == self.name + "+":
            return lambda base, raw: float(base) + cast_to_float(raw)
        if key == self.name + "-":
            return lambda base, raw: float(base) - cast_to_float(raw)
        return None

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        def check_int(value: float | None) -> ErrorItem | None:
            if value is None or not self.only_int or float(value).is_integer():
                return None
            return FieldError("validation_only_int_constraint", "Decimal numbers are not allowed").to_dict()

        put("min", check_int(self.min))
        max_error = check_int(self.max)
        if max_error is None and self.min is not None and self.max is not None and self.max < self.min:
            max_error = templated("validation_min_number_constraint", "Must be greater or equal than {{.min}}",
                                  {"min": float(self.min)}).to_dict()
        put("max", max_error)
