"""A collection payload PocketBase would reject, and the error items its API shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from pbfast.pocketbase.fields import FieldError

__all__ = ["DECODE_ERROR_MESSAGE", "REQUIRED", "CollectionValidationError", "decode_error", "error_item"]

DECODE_ERROR_MESSAGE: Final = "Failed to load the submitted data due to invalid formatting."


class CollectionValidationError(Exception):
    """A collection payload PocketBase would reject.

    ``data`` is PocketBase's error data (``{"name": {"code": ..., "message": ...}}``, nested for fields
    and options); ``message`` the API message to show with it (``"Failed to create collection."``,
    ``"Failed to update collection."``, ``"Failed to load the submitted data due to invalid formatting."``,
    ``"Failed to delete collection"``...). Both go into a 400 response.
    """

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.message = message
        self.data: dict[str, Any] = data or {}
        super().__init__(f"{message} {orjson.dumps(self.data).decode() if self.data else ''}".strip())


def error_item(code: str, message: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An API error item (``{"code", "message", "params"?}``) as the collection validator nests them."""
    return dict(FieldError(code, message, params).to_dict())


REQUIRED: Final = {"code": "validation_required", "message": "Cannot be blank."}


def decode_error(detail: str) -> CollectionValidationError:
    error = CollectionValidationError(DECODE_ERROR_MESSAGE, {})
    error.__notes__ = [detail]
    return error
