"""What the plain text-like fields (email, url, editor) share: a string value, blank unless required."""

from __future__ import annotations

from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Field, Stored
from pbfast.pocketbase.fields.errors import required
from pbfast.pocketbase.gocompat import cast_to_string, stored_to_string

__all__ = ["PlainTextField"]


@dataclass(eq=True, kw_only=True)
class PlainTextField(Field):
    """A field holding one string; subclasses check a non-blank value in :meth:`check`."""

    def typed(self, stored: Stored) -> str:
        return stored_to_string(stored) or ""

    def cast_raw(self, raw: object) -> Stored:
        return cast_to_string(raw)

    def typed_input(self, raw: object) -> str:
        return cast_to_string(raw)

    def finish(self, value: str) -> Stored:
        text = str(value)
        if getattr(self, "required", False) and text == "":
            raise required()
        if text != "":
            self.check(text)
        return text

    def check(self, text: str) -> None:
        """Validate a non-blank value."""
