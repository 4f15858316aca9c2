"""The search engine's errors: PocketBase answers both with ``400 {"status":400,"message":"Something went
wrong while processing your request.","data":{}}``; their messages are for logs only."""

from __future__ import annotations

__all__ = ["FilterError", "QueryParamError"]


class FilterError(ValueError):
    """An invalid filter (syntax, unknown field, limits ...).

    PocketBase answers these with ``400 {"status":400,"message":"Something went wrong while processing
    your request.","data":{}}``; the message here is for logs only.
    """


class QueryParamError(FilterError):
    """An invalid ``sort``/``fields``/``page``/``perPage``/``skipTotal`` value (PocketBase: 400)."""
