"""PocketBase's datetime text format: ``2006-01-02 15:04:05.000Z`` (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_datetime"]


def format_datetime(unix_seconds: float) -> str:
    """Format Unix seconds the way PocketBase shows dates (``2024-01-31 12:34:56.789Z``)."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
