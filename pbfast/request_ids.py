"""Request ids: one request followed through the gateway's and the node's logs.

The gateway gives every request an ``X-Request-Id``: the client's own when it is 1-128 visible ASCII
characters, else a new one (32 hex digits). It forwards it to the node and returns it on the answer; the
node takes the gateway's (or assigns one to a request that reached it directly), returns it too, and every
log line written while the request is served ends with ``request_id=<id>`` (``requestId`` in JSON logs:
:mod:`pbfast.logs`), on the event loop and on the database threads alike. The native data path applies the
same rules (``rust/src/gateway/headers.rs``).

Thread-safety: the current id is a context variable: each request's task (and the database work it runs)
sees its own.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections import deque
from typing import Any

from pbfast.cluster import wire
from pbfast.http import HTTPProtocol, Scope
from pbfast.logs import current_request_id

__all__ = ["MAX_REQUEST_ID_LENGTH", "REQUEST_ID_HEADER", "WithRequestId", "bind_request_id", "new_request_id",
           "request_id_or_new"]

REQUEST_ID_HEADER = wire.REQUEST_ID_HEADER
MAX_REQUEST_ID_LENGTH = 128
_REQUEST_ID_HEADER_LENGTH = len(REQUEST_ID_HEADER)
_VALID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")


_ID_BATCH = 64
_fresh_ids: deque[str] = deque()  # popleft/extend are atomic: each id goes to one caller, on any thread


def new_request_id() -> str:
    """32 random hex digits (as ``secrets.token_hex(16)``), drawn from the system's random source 64 at a
    time: one system call per request cost more than the rest of making the id."""
    while True:
        try:
            return _fresh_ids.popleft()
        except IndexError:
            text = os.urandom(16 * _ID_BATCH).hex()
            _fresh_ids.extend(text[i:i + 32] for i in range(0, len(text), 32))


def request_id_or_new(value: str | None) -> str:
    """``value`` when it is a usable id (1-128 visible ASCII characters), else a new id."""
    return value if value is not None and _VALID.fullmatch(value) else new_request_id()


def bind_request_id(scope: Scope) -> tuple[str, contextvars.Token[str | None]]:
    """The request's id (its header's, or new) made current; reset the token when the request is done."""
    request_id = request_id_or_new(scope.headers.get(REQUEST_ID_HEADER))
    return request_id, current_request_id.set(request_id)


class WithRequestId:
    """Wraps an RSGI protocol so that every answer carries ``X-Request-Id`` (unless it already has one: an
    answer relayed from a node that set it, or an inner wrapper's)."""

    __slots__ = ("inner", "header")

    def __init__(self, inner: HTTPProtocol, request_id: str) -> None:
        self.inner = inner
        self.header = (REQUEST_ID_HEADER, request_id)

    def _with_id(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for name, _ in headers:  # lower() only for a name as long as the header's (a call less for the others)
            if len(name) == _REQUEST_ID_HEADER_LENGTH and name.lower() == REQUEST_ID_HEADER:
                return headers
        return [*headers, self.header]

    async def __call__(self) -> bytes:
        return await self.inner()

    def __aiter__(self) -> Any:
        return self.inner.__aiter__()

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.inner.response_empty(status, self._with_id(headers))

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.inner.response_str(status, self._with_id(headers), body)  # type: ignore[attr-defined]

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.inner.response_bytes(status, self._with_id(headers), body)

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        self.inner.response_file(status, self._with_id(headers), file)  # type: ignore[attr-defined]

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        return self.inner.response_stream(status, self._with_id(headers))  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # anything else granian's protocol offers
        return getattr(self.inner, name)
