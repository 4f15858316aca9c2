"""The json field (PocketBase's ``core/field_json.go``): JSON text, or NULL for a JSON null."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from pbfast.pocketbase.fields.base import Field, Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, first_error, max_error, min_error, required, templated
from pbfast.pocketbase.fields.text import MAX_SAFE_JSON_INT
from pbfast.pocketbase.gocompat import (
    ORJSON_MAX_DEPTH,
    DeepJson,
    as_float64,
    cast_to_string,
    go_json_default,
    json_depth,
    json_number,
    stored_to_string,
)

__all__ = ["JsonField"]

DEFAULT_JSON_MAX_SIZE: Final = 1 << 20


def _valid_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _go_json_value(value: object) -> object:
    """A decoded JSON value as Go re-encodes it: numbers went through float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return json_number(as_float64(value))
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {str(k): _go_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_go_json_value(v) for v in value]
    return cast_to_string(value)


def json_text(raw: object) -> str | None:
    """PocketBase's JSON field ``PrepareValue``: the JSON text stored for a submitted value (None = NULL)."""
    if raw is None or isinstance(raw, Missing):
        return None
    if isinstance(raw, DeepJson):
        return raw.text
    if isinstance(raw, str):
        text = raw
        if text in ("null", "true", "false"):
            return text
        if text and (text[0].isdigit() or text[0] in '-"[{') and _valid_json(text):
            return text
        return orjson.dumps(text).decode()
    return orjson.dumps(_go_json_value(raw), option=orjson.OPT_SORT_KEYS, default=go_json_default).decode()


@dataclass(eq=True, kw_only=True)
class JsonField(Field):
    TYPE = "json"

    help: str = option("help", Kind.STR)
    max_size: int = option("maxSize", Kind.INT)
    required: bool = option("required", Kind.BOOL)

    def column_type(self) -> str:
        return "JSON DEFAULT NULL"

    def typed(self, stored: Stored) -> str | None:
        return json_text(stored_to_string(stored))

    def cast_raw(self, raw: object) -> Stored:
        return json_text(raw)

    def revalidate(self, current: Stored) -> Stored:
        typed = self.typed(current)
        self._check(typed)
        return typed

    def prepare_submitted(self, raw: object, current: Stored | Missing, is_new: bool,
                          uploaded: Sequence[str]) -> Stored:
        text = json_text(raw)
        self._check(text)
        return text

    def effective_max_size(self) -> int:
        return self.max_size if self.max_size > 0 else DEFAULT_JSON_MAX_SIZE

    def max_body_size(self) -> int:
        return self.effective_max_size()

    def _check(self, text: str | None) -> None:
        size_limit = self.effective_max_size()
        raw = text or ""
        if len(raw.encode()) > size_limit:
            raise templated("validation_json_size_limit", "The maximum allowed JSON size is {{.maxSize}} bytes",
                            {"maxSize": size_limit})
        if raw and not _valid_json(raw):
            raise FieldError("validation_invalid_json", "Must be a valid json value")
        if self.required and raw.strip() in ("null", '""', "[]", "{}", ""):
            raise required()

    def to_api(self, stored: Stored) -> object:
        typed = self.typed(stored)
        if typed is None:
            return None
        value = orjson.loads(typed)
        if typed.count("[") + typed.count("{") > ORJSON_MAX_DEPTH and json_depth(value) > ORJSON_MAX_DEPTH:
            return DeepJson(typed)
        return value

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        put("maxSize", first_error(min_error(self.max_size, 0), max_error(self.max_size, MAX_SAFE_JSON_INT)))
