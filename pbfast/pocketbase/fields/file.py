"""The file field (PocketBase's ``core/field_file.go``): file *names*. Storing uploads is the caller's
(:mod:`pbfast.pocketbase.apis.file_uploads`); a new name must be one of the uploads passed to
:meth:`FileField.check_values`, each upload is checked for size and type here."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.fields.base import Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, first_error, max_error, min_error, required, templated
from pbfast.pocketbase.fields.multi import MultiValueField
from pbfast.pocketbase.fields.text import MAX_SAFE_JSON_INT
from pbfast.pocketbase.gocompat import to_unique_strings

__all__ = ["DEFAULT_FILE_MAX_SIZE", "FileField", "UploadInfo"]

DEFAULT_FILE_MAX_SIZE: Final = 5 << 20
_THUMB_SIZE: Final = re.compile(r"(\d+)x(\d+)(t|b|f)?")


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """An upload a new file name stands for: its size, the client's name, its sniffed content type."""

    size: int
    original_name: str
    content_type: str


@dataclass(eq=True, kw_only=True)
class FileField(MultiValueField):
    TYPE = "file"

    help: str = option("help", Kind.STR)
    max_select: int = option("maxSelect", Kind.INT)
    max_size: int = option("maxSize", Kind.INT)
    mime_types: list[str] = option("mimeTypes", Kind.STRLIST)
    protected: bool = option("protected", Kind.BOOL)
    required: bool = option("required", Kind.BOOL)
    thumbs: list[str] = option("thumbs", Kind.STRLIST)

    def effective_max_size(self) -> int:
        return self.max_size if self.max_size > 0 else DEFAULT_FILE_MAX_SIZE

    def max_body_size(self) -> int:
        return self.effective_max_size() * max(1, self.max_select)

    def check_values(self, values: list[str], current: Stored | Missing,
                     uploaded: Sequence[str] | Mapping[str, UploadInfo]) -> None:
        if not values:
            if self.required:
                raise required()
            return
        known = set(to_unique_strings(current)) if not isinstance(current, Missing) else set()
        known.update(uploaded)
        invalid = [name[:250] for name in values if name not in known]
        if invalid:
            raise FieldError("validation_invalid_file", f"Invalid new files: [{' '.join(invalid)}].",
                             {"invalidFiles": invalid})
        max_select = max(self.max_select, 1)
        if len(values) > max_select:
            raise templated("validation_too_many_files", "The maximum allowed files is {{.maxSelect}}",
                            {"maxSelect": max_select})
        if isinstance(uploaded, Mapping):
            for name in values:
                info = uploaded.get(name)
                if info is not None:
                    self._check_upload(name, info)

    def _check_upload(self, name: str, info: UploadInfo) -> None:
        max_size = self.effective_max_size()
        shown = info.original_name.encode("utf-8", errors="surrogateescape")[:300].decode("utf-8", errors="ignore")
        if info.size > max_size:
            raise templated("validation_file_size_limit",
                            "Failed to upload {{.file}} - the maximum allowed file size is {{.maxSize}} bytes.",
                            {"file": shown, "maxSize": max_size})
        if self.mime_types and info.content_type.split(";")[0].strip() not in self.mime_types:
            raise FieldError("validation_invalid_mime_type",
                             f"{_go_quote(name)} mime type must be one of: {', '.join(self.mime_types)}.")

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        put("maxSelect", first_error(min_error(self.max_select, 0), max_error(self.max_select, MAX_SAFE_JSON_INT)))
        put("maxSize", first_error(min_error(self.max_size, 0), max_error(self.max_size, MAX_SAFE_JSON_INT)))
        for index, thumb in enumerate(self.thumbs):
            if thumb in ("0x0", "0x0t", "0x0b", "0x0f"):
                put("thumbs", {str(index): FieldError("validation_not_in_invalid", "must not be in list").to_dict()})
                break
            if not _THUMB_SIZE.fullmatch(thumb):
                put("thumbs", {str(index): FieldError("validation_match_invalid", "must be in a valid format").to_dict()})
                break


def _go_quote(text: str) -> str:
    """Go's ``%q`` for a plain file name (the names PocketBase generates need no escapes but quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
