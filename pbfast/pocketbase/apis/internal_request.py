"""A request PocketBase sends to its own API handlers from inside another one (a batch's items, the record an
OAuth2 sign-up creates): the same handler runs with the outer request's tenant and auth, and its answer is
captured instead of sent.

Thread-safety: an internal request lives and dies on the thread of the request that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import Row


@dataclass(slots=True)
class InternalScope:
    """The request scope of an internal request (what a handler and ``@request.*`` read)."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    proto: str = "http"
    authority: str | None = None
    client: str = ""


class CapturedAnswer:
    """Records the answer a handler writes (``null`` when it writes no body)."""

    __slots__ = ("body", "status")

    def __init__(self) -> None:
        self.status, self.body = 0, b"null"

    async def __call__(self) -> bytes:
        raise RuntimeError("an internal request has no body stream")

    def __aiter__(self) -> Any:
        raise RuntimeError("an internal request has no body stream")

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body or b"null"

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.body = status, b"null"


def internal_request(outer: TenantRequest, scope: InternalScope, params: dict[str, str], body: dict[str, Any],
                     context: str, changes: list[tuple[str, Collection, Row]]) -> tuple[TenantRequest, CapturedAnswer]:
    """A request to ``scope.path`` made by ``outer``'s requester, with ``body`` already bound, the record events
    it causes deferred into ``changes`` (sent once the outer request commits), and ``@request.context`` set to
    ``context``. The caller adds files, if any, and calls the handler."""
    answer = CapturedAnswer()
    inner = TenantRequest(scope, answer, scope.path, params, outer.tenant)
    inner.share_auth(outer)
    inner.bound_body = body
    inner.info_context = context
    inner.deferred_changes = changes
    return inner, answer
