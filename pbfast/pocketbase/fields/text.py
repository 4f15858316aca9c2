"""The text field (PocketBase's ``core/field_text.go``), also the ``id`` primary key of every collection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.fields.base import Field, Kind, Missing, SettingsContext, Setter, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, first_error, max_error, min_error, required, templated
from pbfast.pocketbase.gocompat import cast_to_string, generate_by_pattern, regex_error, regex_search, stored_to_string

__all__ = ["DEFAULT_ID_PATTERN", "MAX_SAFE_JSON_INT", "TextField"]

DEFAULT_TEXT_MAX: Final = 5000
DEFAULT_ID_PATTERN: Final = "^[a-z0-9]+$"
MAX_SAFE_JSON_INT: Final = (1 << 53) - 1
_PK_FORBIDDEN: Final = (".", "/", "\\", "|", '"', "'", "`", "<", ">", ":", "?", "*", "%", "$", "\0", "\t", "\n",
                        "\r", " ")
_PK_RESERVED: Final = ("CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                       *(f"LPT{i}" for i in range(1, 10)))


@dataclass(eq=True, kw_only=True)
class TextField(Field):
    TYPE = "text"

    autogenerate_pattern: str = option("autogeneratePattern", Kind.STR)
    help: str = option("help", Kind.STR)
    max: int = option("max", Kind.INT)
    min: int = option("min", Kind.INT)
    pattern: str = option("pattern", Kind.STR)
    primary_key: bool = option("primaryKey", Kind.BOOL)
    required: bool = option("required", Kind.BOOL)

    def column_type(self) -> str:
        if self.primary_key:
            return "TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL"
        return super().column_type()

    def typed(self, stored: Stored) -> str:
        if type(stored) is str:
            return stored
        return stored_to_string(stored) or ""

    def cast_raw(self, raw: object) -> Stored:
        return cast_to_string(raw)

    def revalidate(self, current: Stored) -> Stored:
        if self.primary_key:
            return self.typed(current)  # stored ids are never re-validated (they may come from other systems)
        return super().revalidate(current)

    def prepare_submitted(self, raw: object, current: Stored | Missing, is_new: bool,
                          uploaded: Sequence[str]) -> Stored:
        value = cast_to_string(raw)
        if self.primary_key and not is_new and not isinstance(current, Missing):
            old = stored_to_string(current) or ""
            if value != old:
                raise FieldError("validation_pk_change", "The record primary key cannot be changed.")
            return old
        if is_new and value == "" and self.autogenerate_pattern:
            value = generate_by_pattern(self.autogenerate_pattern)
        return self.finish(value)

    def finish(self, value: str) -> Stored:
        self.validate_plain(value)
        return value

    def validate_plain(self, value: str) -> None:
        if (self.required or self.primary_key) and value == "":
            raise required()
        if value == "":
            return
        length = len(value)
        if self.min > 0 and length < self.min:
            raise templated("validation_min_text_constraint", "Must be at least {{.min}} character(s).",
                            {"min": self.min})
        maximum = self.max or DEFAULT_TEXT_MAX
        if length > maximum:
            raise templated("validation_max_text_constraint", "Must be no more than {{.max}} character(s).",
                            {"max": maximum})
        if self.pattern and not regex_search(self.pattern, value):
            raise FieldError("validation_invalid_format", "Invalid value format.")
        if self.primary_key and self.pattern != DEFAULT_ID_PATTERN:
            for char in _PK_FORBIDDEN:
                if char in value:
                    raise templated("validation_forbidden_pk_character",
                                    "'{{.ch}}' is not a valid primary key character.", {"ch": char})
            if length <= 4 and value.upper() in _PK_RESERVED:
                raise templated("validation_reserved_pk",
                                "The primary key '{{.reserved}}' is reserved and cannot be used.",
                                {"reserved": value.upper()})

    def find_setter(self, key: str) -> Setter | None:
        if key != self.name + ":autogenerate":
            return None

        def autogenerate(base: Stored, raw: object) -> Stored:
            value = cast_to_string(raw)
            if self.autogenerate_pattern:
                value += generate_by_pattern(self.autogenerate_pattern)
            return value
        return autogenerate

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        primary = self.primary_key
        if primary and self.name != "id":
            put("name", FieldError("validation_in_invalid", 'The primary key must be named "id".').to_dict())
        if primary and sum(1 for f in context.collection_fields if isinstance(f, TextField) and f.primary_key) > 1:
            put("primaryKey", FieldError("validation_unsupported_composite_pk",
                                         "Composite PKs are not supported and the collection must have only 1 PK."
                                         ).to_dict())
        put("min", first_error(min_error(self.min, 0), max_error(self.min, MAX_SAFE_JSON_INT)))
        put("max", first_error(min_error(self.max, self.min), max_error(self.max, MAX_SAFE_JSON_INT)))
        if primary and not self.pattern:
            put("pattern", required().to_dict())
        elif self.pattern and regex_error(self.pattern):
            put("pattern", FieldError("validation_invalid_regex", regex_error(self.pattern) or "").to_dict())
        if primary and self.hidden:
            put("hidden", FieldError("validation_empty", "must be blank").to_dict())
        if primary and not self.required:
            put("required", required().to_dict())
        if self.autogenerate_pattern:
            self._check_autogenerate(put)

    def _check_autogenerate(self, put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        compile_error = regex_error(self.autogenerate_pattern)
        if compile_error:
            put("autogeneratePattern", FieldError("validation_invalid_regex", compile_error).to_dict())
            return
        for _ in range(10):
            try:
                generated = generate_by_pattern(self.autogenerate_pattern)
            except ValueError as err:
                put("autogeneratePattern", FieldError("validation_invalid_autogenerate_pattern", str(err)).to_dict())
                return
            try:
                self.validate_plain(generated)
            except FieldError:
                put("autogeneratePattern", FieldError(
                    "validation_invalid_autogenerate_pattern_value",
                    f"The provided autogenerate pattern could produce invalid field values, ex.: {generated!r}"
                    .replace("'", '"')).to_dict())
                return
