"""What a record write can fail with."""

from __future__ import annotations

from pbfast.pocketbase.collections.cascade import LastSuperuserError
from pbfast.pocketbase.fields import ErrorItem

__all__ = ["LastSuperuserError", "RecordValidationError"]


class RecordValidationError(Exception):
    """Per-field problems: ``data`` is ``{field: {"code", "message"}}`` (empty for a non-field failure)."""

    def __init__(self, data: dict[str, ErrorItem]) -> None:
        self.data = data
        super().__init__(", ".join(data) or "record error")
