"""The password field (PocketBase's ``core/field_password.go``): a bcrypt hash, never shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.fields.base import MISSING, Field, Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, first_error, max_error, min_error, required
from pbfast.pocketbase.gocompat import cast_to_string, regex_error, regex_search, stored_to_string

__all__ = ["PasswordField", "PlainPassword"]

PASSWORD_MAX_LENGTH: Final = 71  # bcrypt's 72 bytes limit
BCRYPT_DEFAULT_COST: Final = 10


class PlainPassword(str):
    """A new plain-text password: the caller must hash it (bcrypt, cost :meth:`PasswordField.bcrypt_cost`)
    before storing it. A plain ``str`` from a password field is the unchanged stored hash."""

    __slots__ = ()


@dataclass(eq=True, kw_only=True)
class PasswordField(Field):
    TYPE = "password"

    cost: int = option("cost", Kind.INT)
    help: str = option("help", Kind.STR)
    max: int = option("max", Kind.INT)
    min: int = option("min", Kind.INT)
    pattern: str = option("pattern", Kind.STR)
    required: bool = option("required", Kind.BOOL)

    def bcrypt_cost(self) -> int:
        """The bcrypt cost PocketBase uses for this field (its ``cost`` or bcrypt's default 10)."""
        return self.cost if self.cost > 0 else BCRYPT_DEFAULT_COST

    def typed(self, stored: Stored) -> str:
        return stored_to_string(stored) or ""

    def cast(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool) -> Stored:
        if raw is MISSING:
            if not is_new and not isinstance(current, Missing):
                return stored_to_string(current) or ""
            raw = None
        plain = cast_to_string(raw)
        return PlainPassword(plain) if plain else ""

    def prepare(self, raw: object, *, current: Stored | Missing = MISSING, is_new: bool,
                uploaded: Sequence[str] = ()) -> Stored:
        """A new :class:`PlainPassword` when one was given, else the current hash."""
        plain = "" if raw is MISSING else cast_to_string(raw)
        current_hash = "" if isinstance(current, Missing) or current is None else (stored_to_string(current) or "")
        if not plain:
            stored = current_hash if raw is MISSING and not is_new else ""
            if self.required and not stored:
                raise required()
            return stored
        if len(plain.encode()) > 72:  # bcrypt refuses it: PocketBase reports the hashing error as is
            raise FieldError("validation_invalid_value", "Invalid value.")
        length = len(plain)
        if length < self.min:
            raise FieldError("validation_min_text_constraint", f"Must be at least {self.min} character(s)")
        maximum = self.max if self.max > 0 else PASSWORD_MAX_LENGTH
        if length > maximum:
            raise FieldError("validation_max_text_constraint", f"Must be less than {maximum} character(s)")
        if self.pattern and not regex_search(self.pattern, plain):
            raise FieldError("validation_invalid_format", "Invalid value format")
        return PlainPassword(plain)

    def to_api(self, stored: Stored) -> object:
        return ""  # PocketBase never serializes it: callers omit password fields

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        put("min", first_error(min_error(self.min, 1), max_error(self.min, PASSWORD_MAX_LENGTH)))
        put("max", first_error(min_error(self.max, self.min), max_error(self.max, PASSWORD_MAX_LENGTH)))
        put("cost", first_error(min_error(self.cost, 4), max_error(self.cost, 31)))
        pattern_error = regex_error(self.pattern) if self.pattern else None
        if pattern_error:
            put("pattern", FieldError("validation_invalid_regex", pattern_error).to_dict())
