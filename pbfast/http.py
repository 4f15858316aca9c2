"""Small HTTP toolkit over granian's RSGI protocol: responses, PocketBase-shaped errors, routing.

PocketBase answers every error as ``{"status": <code>, "message": <text>, "data": {...}}``; every server in
pbfast does the same through :func:`send_error`. Nothing here blocks: handlers run on the event loop.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

__all__ = [
    "HEALTH_BODY",
    "JSON_HEADERS",
    "HTTPProtocol",
    "Handler",
    "Router",
    "Scope",
    "bearer_token_matches",
    "health",
    "send_error",
    "send_json",
]


class Scope(Protocol):
    """The parts of granian's RSGI scope pbfast reads."""

    proto: str
    method: str
    path: str
    query_string: str
    authority: str | None
    client: str

    @property
    def headers(self) -> Any: ...


class HTTPProtocol(Protocol):
    """The parts of granian's RSGI HTTP protocol pbfast uses."""

    async def __call__(self) -> bytes: ...

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None: ...


Handler = Callable[[Scope, HTTPProtocol], Awaitable[None]]

JSON_HEADERS = [("content-type", "application/json")]

# PocketBase's GET /api/health body, byte for byte.
HEALTH_BODY = b'{"message":"API is healthy.","code":200,"data":{}}'

_DEFAULT_MESSAGES = {
    400: "Something went wrong while processing your request.",
    401: "The request requires valid record authorization token.",
    403: "The authorized record is not allowed to perform this action.",
    404: "The requested resource wasn't found.",
    405: "Method Not Allowed.",
    413: "Request entity too large.",
    429: "Too Many Requests.",
    500: "Something went wrong while processing your request.",
    502: "Bad Gateway.",
    503: "Service Unavailable.",
}


def send_json(proto: HTTPProtocol, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> None:
    """Send ``payload`` as a JSON response."""
    proto.response_bytes(status, JSON_HEADERS + headers if headers else JSON_HEADERS, orjson.dumps(payload))


def send_error(
    proto: HTTPProtocol,
    status: int,
    message: str | None = None,
    data: dict[str, Any] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    """Send a PocketBase-shaped error: ``{"status","message","data"}``."""
    body = {"status": status, "message": message or _DEFAULT_MESSAGES.get(status, "Error."), "data": data or {}}
    send_json(proto, status, body, headers)


def bearer_token_matches(authorization: str | None, expected: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header against ``expected``."""
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


class Router:
    """Exact-path routing: ``(method, path) -> handler``; unknown paths get 404, wrong methods 405.

    Routes are registered before serving and only read afterwards, so lookups need no lock.
    """

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes.setdefault(path, {})[method.upper()] = handler
        if method.upper() == "GET":
            self._routes[path].setdefault("HEAD", handler)

    async def dispatch(self, scope: Scope, proto: HTTPProtocol, path: str | None = None) -> None:
        methods = self._routes.get(scope.path if path is None else path)
        if methods is None:
            send_error(proto, 404)
            return
        handler = methods.get(scope.method)
        if handler is None:
            send_error(proto, 405, headers=[("allow", ", ".join(sorted(methods)))])
            return
        await handler(scope, proto)


async def health(scope: Scope, proto: HTTPProtocol) -> None:
    """PocketBase's ``GET /api/health``."""
    proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)
