"""What the select, relation and file fields share (PocketBase's ``MultiValuer``): one value, or several
(``maxSelect > 1``: a JSON array column), and the ``+name``/``name+``/``name-`` modifiers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from pbfast.pocketbase.fields.base import Field, Missing, Setter, Stored
from pbfast.pocketbase.gocompat import stored_to_string, to_unique_strings

__all__ = ["MultiValueField"]


@dataclass(eq=True, kw_only=True)
class MultiValueField(Field):
    """Subclasses declare ``max_select`` and check a value list in :meth:`check_values`."""

    max_select: int = 0

    def is_multiple(self) -> bool:
        return self.max_select > 1

    def column_type(self) -> str:
        return "JSON DEFAULT '[]' NOT NULL" if self.is_multiple() else super().column_type()

    def stored_from_list(self, items: Sequence[str]) -> str:
        """A list of ids/values/filenames as the column stores it (JSON text when multiple, else the last
        item or ``""``)."""
        unique = to_unique_strings(list(items))
        if self.is_multiple():
            return orjson.dumps(unique).decode()
        return unique[-1] if unique else ""

    def typed(self, stored: Stored) -> list[str]:
        if type(stored) is str and "[" not in stored:  # a single value's column (what to_unique_strings gives)
            return [stored] if stored else []
        return to_unique_strings(stored_to_string(stored))

    def storage(self, typed: list[str]) -> Stored:
        return self.stored_from_list(typed)

    def cast_raw(self, raw: object) -> Stored:
        items = to_unique_strings(raw)
        return self.stored_from_list(items if self.is_multiple() else items[-1:])

    def revalidate(self, current: Stored) -> Stored:
        typed = self.typed(current)
        self.check_values(typed, typed, ())
        return self.stored_from_list(typed)

    def prepare_submitted(self, raw: object, current: Stored | Missing, is_new: bool,
                          uploaded: Sequence[str]) -> Stored:
        items = to_unique_strings(raw)
        if not self.is_multiple():
            items = items[-1:]
        self.check_values(items, current, uploaded)
        return self.stored_from_list(items)

    def check_values(self, values: list[str], current: Stored | Missing, uploaded: Sequence[str]) -> None:
        """Validate a value list (``current``/``uploaded``: the file field's known names)."""

    def to_api(self, stored: Stored) -> object:
        typed = self.typed(stored)
        if self.is_multiple():
            return typed
        return typed[-1] if typed else ""

    def find_setter(self, key: str) -> Setter | None:
        if key == "+" + self.name:
            return lambda base, raw: self.cast([*to_unique_strings(raw), *to_unique_strings(base)], is_new=True)
        if key == self.name + "+":
            return lambda base, raw: self.cast([*to_unique_strings(base), *to_unique_strings(raw)], is_new=True)
        if key == self.name + "-":
            def remove(base: Stored, raw: object) -> Stored:
                extra = to_unique_strings(raw)
                return self.cast([i for i in to_unique_strings(base) if i not in extra], is_new=True)
            return remove
        return None
