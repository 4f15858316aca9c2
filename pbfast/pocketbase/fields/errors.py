"""What PocketBase says about a bad field value or a bad field definition, in its codes and words, and the
ozzo-validation rules the field settings are checked with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, NotRequired, TypedDict, Union


from pbfast.pocketbase.gocompat import go_format_float, json_number

__all__ = ["ErrorData", "ErrorItem", "FieldError", "FieldSettingsError", "first_error", "length_error", "name_error",
           "max_error", "min_error", "required", "sentenize", "templated"]


class ErrorItem(TypedDict):
    """One API error item: PocketBase's code and (sentenized) message, and its template parameters."""

    code: str
    message: str
    params: NotRequired[dict[str, object]]


ErrorData = dict[str, Union[ErrorItem, "ErrorData"]]
"""Errors by key, nested like the payload they are about (``{"fields": {"0": {"name": item}}}``)."""


def sentenize(text: str) -> str:
    """PocketBase's ``inflector.Sentenize``: capitalise the first letter, end with a period."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


class FieldError(Exception):
    """A value PocketBase would reject for this field.

    ``code`` and ``message`` are PocketBase's (the message already "sentenized" as the API shows it),
    ``params`` the template parameters PocketBase adds to the API error item (may be empty).
    """

    def __init__(self, code: str, message: str, params: Mapping[str, object] | None = None) -> None:
        self.code = code
        self.params: dict[str, object] = dict(params or {})
        self.message = sentenize(message)
        super().__init__(f"{code}: {self.message}")

    def to_dict(self) -> ErrorItem:
        """The API error item: ``{"code", "message"}`` plus ``"params"`` when there are any."""
        item = ErrorItem(code=self.code, message=self.message)
        if self.params:
            item["params"] = self.params
        return item


class FieldSettingsError(Exception):
    """A field definition PocketBase would not even decode (unknown type, wrong JSON types), which it
    reports as ``"Failed to load the submitted data due to invalid formatting."`` with empty data."""

    def __init__(self, detail: str) -> None:
        self.data: ErrorData = {}
        self.decode_error = True
        super().__init__(detail)


def required() -> FieldError:
    return FieldError("validation_required", "cannot be blank")


def _render(template: str, params: Mapping[str, object]) -> str:
    """Substitute ``{{.name}}`` placeholders the way Go's text/template prints the values."""
    def value(match: re.Match[str]) -> str:
        raw = params.get(match.group(1), "")
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, float):
            return go_format_float(raw, "g")
        return str(raw)
    return re.sub(r"\{\{\.(\w+)\}\}", value, template)


def templated(code: str, template: str, params: Mapping[str, object]) -> FieldError:
    """A :class:`FieldError` whose message is a PocketBase template filled with ``params``."""
    return FieldError(code, _render(template, params), {k: json_number(v) for k, v in params.items()})


# ozzo-validation rules, as PocketBase uses them on field settings

def length_error(value: str, low: int, high: int) -> ErrorItem | None:
    """ozzo ``validation.Length(low, high)`` (byte length; empty strings pass)."""
    if value == "":
        return None
    size = len(value.encode())
    if (low > 0 and size < low) or (high > 0 and size > high):
        params = {"min": low, "max": high}
        if low == high:
            return templated("validation_length_invalid", "the length must be exactly {{.min}}", params).to_dict()
        if low == 0:
            return templated("validation_length_too_long", "the length must be no more than {{.max}}",
                             params).to_dict()
        if high == 0:
            return templated("validation_length_too_short", "the length must be no less than {{.min}}",
                             params).to_dict()
        return templated("validation_length_out_of_range", "the length must be between {{.min}} and {{.max}}",
                         params).to_dict()
    return None


def min_error(value: float, threshold: float) -> ErrorItem | None:
    """ozzo ``validation.Min(threshold)`` (zero values are skipped)."""
    if value == 0 or value >= threshold:
        return None
    return templated("validation_min_greater_equal_than_required", "must be no less than {{.threshold}}",
                     {"threshold": threshold}).to_dict()


def max_error(value: float, threshold: float) -> ErrorItem | None:
    """ozzo ``validation.Max(threshold)`` (zero values are skipped)."""
    if value == 0 or value <= threshold:
        return None
    return templated("validation_max_less_equal_than_required", "must be no greater than {{.threshold}}",
                     {"threshold": threshold}).to_dict()


def first_error(*errors: ErrorItem | None) -> ErrorItem | None:
    return next((e for e in errors if e), None)


_RESERVED_FIELD_NAMES: Final = ("null", "true", "false", "_rowid_", "collectionId", "collectionName", "expand")
_FIELD_NAME: Final = re.compile(r"\w+", re.ASCII)


def name_error(name: str) -> ErrorItem | None:
    """PocketBase's ``DefaultFieldNameValidationRule``."""
    if name == "":
        return required().to_dict()
    length = length_error(name, 1, 100)
    if length:
        return length
    if not _FIELD_NAME.fullmatch(name):
        return FieldError("validation_match_invalid", "must be in a valid format").to_dict()
    if name in _RESERVED_FIELD_NAMES:
        return FieldError("validation_not_in_invalid", "must not be in list").to_dict()
    if "_via_" in name.lower():
        return FieldError("validation_found_via", 'The value cannot contain "_via_".').to_dict()
    return None
