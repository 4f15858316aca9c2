"""The editor (rich text) field (PocketBase's ``core/field_editor.go``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.fields.base import Kind, SettingsContext, option
from pbfast.pocketbase.fields.errors import ErrorItem, first_error, max_error, min_error, templated
from pbfast.pocketbase.fields.plain import PlainTextField
from pbfast.pocketbase.fields.text import MAX_SAFE_JSON_INT

__all__ = ["EditorField"]

DEFAULT_EDITOR_MAX_SIZE: Final = 5 << 20


@dataclass(eq=True, kw_only=True)
class EditorField(PlainTextField):
    TYPE = "editor"

    convert_urls: bool = option("convertURLs", Kind.BOOL)
    help: str = option("help", Kind.STR)
    max_size: int = option("maxSize", Kind.INT)
    required: bool = option("required", Kind.BOOL)

    def effective_max_size(self) -> int:
        return self.max_size if self.max_size > 0 else DEFAULT_EDITOR_MAX_SIZE

    def max_body_size(self) -> int:
        return self.effective_max_size()

    def check(self, text: str) -> None:
        limit = self.effective_max_size()
        if len(text.encode()) > limit:
            raise templated("validation_content_size_limit", "The maximum allowed content size is {{.maxSize}} bytes",
                            {"maxSize": limit})

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        put("maxSize", first_error(min_error(self.max_size, 0), max_error(self.max_size, MAX_SAFE_JSON_INT)))
