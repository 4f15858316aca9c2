"""Small HTTP toolkit over granian's RSGI protocol: requests, responses, PocketBase-shaped errors, routing.

PocketBase answers every error as ``{"status": <code>, "message": <text>, "data": {...}}``; every server in
pbfast does the same through :func:`send_error` / :class:`ApiError`. Nothing here blocks: handlers run on
the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import operator
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import unquote, unquote_plus

import orjson

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "HEALTH_BODY",
    "JSON_HEADERS",
    "PUBLIC",
    "ApiError",
    "Guard",
    "HTTPProtocol",
    "Handler",
    "HeldResponse",
    "Request",
    "RouteMatch",
    "Router",
    "StatusRecorder",
    "Scope",
    "bearer_token_matches",
    "declares_no_body",
    "escaped_path_segments",
    "discard_unread_body",
    "health",
    "parse_query",
    "path_segments",
    "routing_path",
    "send_error",
    "send_json",
]

DEFAULT_BODY_LIMIT = 1 << 20


class Scope(Protocol):
    """The parts of granian's RSGI scope pbfast reads (read-only: granian's scope and the in-process
    hand-over's :class:`~pbfast._native.HandedRequest` both offer them as properties)."""

    @property
    def proto(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def authority(self) -> str | None: ...
    @property
    def client(self) -> str: ...
    @property
    def headers(self) -> Any: ...


class HTTPProtocol(Protocol):
    """The parts of granian's RSGI HTTP protocol pbfast uses."""

    async def __call__(self) -> bytes: ...

    def __aiter__(self) -> Any: ...

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None: ...


JSON_HEADERS = [("content-type", "application/json")]

# PocketBase's GET /api/health body, byte for byte.
HEALTH_BODY = b'{"message":"API is healthy.","code":200,"data":{}}'

_DEFAULT_MESSAGES = {
    400: "Something went wrong while processing your request.",
    401: "The request requires valid record authorization token.",
    403: "The authorized record is not allowed to perform this action.",
    404: "The requested resource wasn't found.",
    405: "Method Not Allowed.",
    409: "Conflict.",
    413: "Request entity too large.",
    429: "Too Many Requests.",
    500: "Something went wrong while processing your request.",
    502: "Bad Gateway.",
    503: "Service Unavailable.",
}


class ApiError(Exception):
    """An error answered as PocketBase's ``{"status","message","data"}``; raise it from any handler."""

    def __init__(self, status: int, message: str | None = None, data: dict[str, Any] | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.message = message or _DEFAULT_MESSAGES.get(status, "Error.")
        self.data = data or {}
        self.headers = headers
        super().__init__(f"{status} {self.message}")

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "data": self.data}


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
    error = ApiError(status, message, data, headers)
    send_json(proto, status, error.body(), headers)


BROKEN_BODY = "Something went wrong while processing your request."


async def body_chunks(proto: HTTPProtocol, http_version: str = "1.1") -> AsyncIterator[bytes]:
    """The request body's chunks; over HTTP/1, ``ApiError(400)`` when it broke off (a malformed chunk size,
    fewer bytes than its Content-Length before the client closed).

    granian's body iterator does not raise on such errors: it yields an empty chunk for the error and then
    the empty chunk that ends every body. Over HTTP/1 two empty chunks therefore mean a broken body (or HTTP
    trailers, which it reports the same way and which no client of this API sends); over HTTP/2 an empty
    DATA frame that ends the stream looks the same, and framing errors are the HTTP/2 layer's."""
    checked = not http_version.startswith("2")
    ended = False
    async for chunk in proto:
        if not chunk:
            if ended and checked:
                raise ApiError(400, BROKEN_BODY)
            ended = True
        elif ended and checked:
            raise ApiError(400, BROKEN_BODY)
        else:
            yield chunk


UNREAD_BODY_DRAIN_BYTES = 64 << 20
UNREAD_BODY_DRAIN_SECONDS = 10.0


async def discard_unread_body(proto: HTTPProtocol, limit: int = UNREAD_BODY_DRAIN_BYTES,
                              seconds: float = UNREAD_BODY_DRAIN_SECONDS) -> None:
    """Read and drop what an answered request left of its body (bounded in size and time).

    A server that answers early (404, 403, a moved tenant) and drops the unread body has its connection
    reset under a gateway still sending that body, which then sees a failed exchange instead of the
    answer. Go's net/http, which PocketBase uses, likewise reads what is left before reusing or closing."""
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in proto:
                size += len(chunk)
                if size > limit:
                    return
    except Exception:  # noqa: BLE001 - already read (granian refuses a second read), broken, or too slow
        return


def declares_no_body(scope: Scope) -> bool:
    """Whether the request has no body by its headers: over HTTP/1 a body comes only with a Content-Length
    other than 0 or with a Transfer-Encoding (RFC 9112, 6.3); over HTTP/2 it may come without either."""
    if not str(getattr(scope, "http_version", "1.1")).startswith("1"):
        return False
    headers = scope.headers
    return headers.get("transfer-encoding") is None and headers.get("content-length") in (None, "0")


def bearer_token_matches(authorization: str | None, expected: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header against ``expected``."""
    if not authorization or not expected:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


class Request:
    """One HTTP request: scope, protocol, the route's path parameters, and body/query helpers."""

    __slots__ = ("_query", "params", "path", "proto", "scope")

    def __init__(self, scope: Scope, proto: HTTPProtocol, path: str, params: dict[str, str]) -> None:
        self.scope = scope
        self.proto = proto
        self.path = path
        self.params = params
        self._query: dict[str, list[str]] | None = None

    @property
    def method(self) -> str:
        return self.scope.method

    def header(self, name: str) -> str | None:
        value = self.scope.headers.get(name)
        return value if value is None else str(value)

    def query(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name`` (as PocketBase's ``Query().Get``), else ``default``."""
        if self._query is None:
            self._query = parse_query(self.scope.query_string)
        values = self._query.get(name)
        return values[0] if values else default

    def query_int(self, name: str, default: int, minimum: int, maximum: int) -> int:
        """An integer query parameter clamped into ``[minimum, maximum]``; 400 when not an integer."""
        raw = self.query(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as err:
            raise ApiError(400, f"Invalid {name!r} query parameter: expected an integer.") from err
        return max(minimum, min(maximum, value))

    async def body(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The request body; 413 as soon as it exceeds ``limit`` bytes (never read whole first)."""
        if declares_no_body(self.scope):
            # Nothing to wait for (an auth-refresh, a DELETE): asking granian would cost a hand-over from its
            # thread (the GIL, a loop wake-up) only to learn that the body is empty.
            return b""
        declared = self.header("content-length")
        if declared is not None and declared.isdigit():
            size = int(declared)
            if size > limit:
                raise ApiError(413, f"The request body is larger than {limit} bytes.")
            if self.header("transfer-encoding") is None and str(getattr(self.scope, "http_version", "1.1")).startswith("1"):
                # HTTP/1 with a Content-Length: the server reads exactly that many bytes, so the whole body comes in
                # one hand-over from granian's thread instead of one per chunk and one for its end.
                try:
                    body = await self.proto()
                except Exception as err:  # noqa: BLE001 - broke off before its length (granian: RSGIProtocolClosed)
                    raise ApiError(400, BROKEN_BODY) from err
                if len(body) != size:
                    raise ApiError(400, BROKEN_BODY)
                return body
        chunks: list[bytes] = []
        size = 0
        async for chunk in body_chunks(self.proto, str(getattr(self.scope, "http_version", "1.1"))):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_object(self, limit: int = DEFAULT_BODY_LIMIT) -> dict[str, Any]:
        """The body parsed as a JSON object (an empty body is ``{}``); 400 for anything else."""
        raw = await self.body(limit)
        if not raw.strip():
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ApiError(400, "Failed to load the submitted data due to invalid formatting.") from err
        if not isinstance(value, dict):
            raise ApiError(400, "Failed to load the submitted data due to invalid formatting.")
        return value

    def send_json(self, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> None:
        send_json(self.proto, status, payload, headers)


Handler = Callable[[Request], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Any])  # a router's handlers (the tenant API's are synchronous)

# For an ASCII string, ``not text.isprintable()`` says the same as this regex's search, without the regex
# machinery (every request's path is checked).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_query(query_string: str) -> dict[str, list[str]]:
    """Query parameters as Go's ``url.ParseQuery`` reads them, so a URL means what it means to PocketBase:
    pairs are separated by ``&`` only, and a pair holding a ``;`` or a ``%`` not followed by two hex digits
    is left out (Python's parser would keep it, raw)."""
    params: dict[str, list[str]] = {}
    for pair in query_string.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        if _BAD_ESCAPE.search(pair):
            continue
        params.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return params


def path_segments(path: str) -> tuple[str, ...] | None:
    """The segments of a request path written in its one canonical spelling (``/`` is ``()``); None for any
    other spelling.

    Every pbfast server authenticates and routes a request on these same segments, so the route a request is
    authorised for is the route it reaches. granian hands over the path already percent-decoded (``%2f`` is a
    ``/`` by then; the raw path is not in the RSGI scope), so a decoded ``/`` always separates segments, and
    canonical means: starts with ``/``, no empty segment (``//``, a trailing ``/``), no ``.`` or ``..``
    segment, no control character. Nothing is cleaned up: another spelling names no route at all.
    """
    if path == "/":
        return ()
    if not path.startswith("/") or (not path.isprintable() if path.isascii() else _CONTROL_CHARACTER.search(path)):
        return None
    segments = tuple(path[1:].split("/"))
    if "" in segments or "." in segments or ".." in segments:
        return None
    return segments


# In a routing path (:func:`routing_path`), what stays encoded within a segment
_KEPT_ENCODED = re.compile(r"[%/\x00-\x1f\x7f]")


def _encoded(match: re.Match[str]) -> str:
    return f"%{ord(match[0]):02X}"


def routing_path(decoded: str, raw: str | None) -> str:
    """The path a tenant's API routes on, as PocketBase (Go's ``ServeMux``) routes: on the path as the client
    sent it, split at its ``/`` and then each segment decoded, so an encoded ``/`` is no separator and an
    encoded ``..`` no dot segment. The server hands over ``decoded``; ``raw`` is the client's spelling (the
    gateway's :data:`pbfast.cluster.wire.RAW_PATH_HEADER`), used when it decodes to ``decoded`` (else it is
    not this request's, and is ignored). Within a segment a ``%``, a ``/``, a control character and a whole
    ``.``/``..`` that came encoded stay encoded (:func:`escaped_path_segments` decodes them); without ``raw``
    every ``/`` separates, as before."""
    if raw is None or unquote(raw) != decoded:
        return decoded.replace("%", "%25") if "%" in decoded else decoded
    segments = raw.split("/")
    for index, segment in enumerate(segments):
        if "%" in segment:
            value = unquote(segment)
            segments[index] = "%2E" * len(value) if value in (".", "..") else _KEPT_ENCODED.sub(_encoded, value)
    return "/".join(segments)


def escaped_path_segments(path: str) -> tuple[str, ...] | None:
    """:func:`path_segments` of a routing path (:func:`routing_path`), each segment decoded: a segment may
    then hold a ``/`` or be ``..``, which no literal of a route matches, only a ``{parameter}``."""
    segments = path_segments(path)
    if segments is None or "%" not in path:
        return segments
    return tuple(unquote(segment) if "%" in segment else segment for segment in segments)


def forwarded_target(path: str) -> tuple[str, str] | None:
    """``(id, rest)`` of a path the mount ``/t/{id}`` matches (as :meth:`Router.mount` does: ``{id}`` one
    canonical segment, the rest below it, ``/`` when none), else None."""
    if not path.startswith("/t/"):
        return None
    parts = path.split("/", 3)  # "", "t", id, rest
    tenant_id = parts[2]
    if tenant_id in ("", ".", "..") or (not tenant_id.isprintable() if tenant_id.isascii()
                                             else _CONTROL_CHARACTER.search(tenant_id)):
        return None
    return tenant_id, "/" + parts[3] if len(parts) > 3 else "/"


@dataclass(frozen=True, slots=True)
class Guard:
    """Who may call a route: requests whose scope ``admits`` says so; the others get 401 ``message``."""

    admits: Callable[[Scope], bool]
    message: str


PUBLIC = Guard(lambda scope: True, "")


@dataclass(slots=True)  # not frozen: made for every request, and a frozen dataclass is slow to make
class RouteMatch(Generic[H]):
    """What a request path and method name: the handler (None: 404 when ``allowed`` is empty, else 405),
    its path parameters, the methods the path has, and the guard the request must pass first."""

    handler: H | None
    params: dict[str, str]
    allowed: list[str]
    guard: Guard
    path: str  # what the handler sees as the request path (a mount's handler: the part after the mount)


@dataclass(frozen=True, slots=True)
class _Route(Generic[H]):
    handler: H
    guard: Guard


@dataclass(slots=True)
class _Methods(Generic[H]):
    """The routes of one path by method, and the methods in the order an ``Allow`` header lists them."""

    routes: dict[str, _Route[H]]
    allowed: list[str]

    def add(self, routes: dict[str, _Route[H]]) -> None:
        self.routes.update(routes)
        self.allowed = sorted(self.routes)


@dataclass(frozen=True, slots=True)
class _Mount(Generic[H]):
    segments: tuple[str, ...]
    guard: Guard
    handler: H


def _bind(template: tuple[str, ...], parts: tuple[str, ...] | list[str]) -> dict[str, str] | None:
    """The parameters of ``parts`` (canonical segments) matched against ``template``; None when it differs."""
    params: dict[str, str] = {}
    for pattern, part in zip(template, parts):
        if pattern.startswith("{"):
            params[pattern[1:-1]] = part
        elif pattern != part:
            return None
    return params


class _Binder:
    """:func:`_bind` for one template, its literal and parameter positions worked out once: the literals
    compared as one tuple, the parameters taken as one (routing runs for every request)."""

    __slots__ = ("_literals", "_names", "_params", "_values")

    def __init__(self, template: tuple[str, ...]) -> None:
        literal_at = [i for i, pattern in enumerate(template) if not pattern.startswith("{")]
        param_at = [i for i, pattern in enumerate(template) if pattern.startswith("{")]
        # itemgetter of one index gives the item itself: one index more (the first again) always gives a tuple
        self._literals = operator.itemgetter(*literal_at, literal_at[0]) if literal_at else None
        self._values = tuple(template[i] for i in (*literal_at, *literal_at[:1]))
        self._params = operator.itemgetter(*param_at, param_at[0]) if param_at else None  # zip stops at the names
        self._names = tuple(template[i][1:-1] for i in param_at)

    def bind(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        """The parameters of ``parts`` (canonical segments, as many as the template's); None when it differs."""
        if self._literals is not None and self._literals(parts) != self._values:
            return None
        if self._params is None:
            return {}
        return dict(zip(self._names, self._params(parts)))


class Router(Generic[H]):
    """Routes ``(method, path template)`` to handlers; templates may hold ``{name}`` segments.

    Only the canonical spelling of a path (:func:`path_segments`) matches a route, segment for segment. Each
    route has a :class:`Guard`: the router's own unless the route names another (:data:`PUBLIC` for routes
    anyone may call). A request is checked against the guard of the route it matches, and a request that
    matches no route (unknown path, other spelling, other method) against the router's guard: a guarded
    router denies by default, and a stranger cannot tell its routes apart. Then unknown paths get 404, known
    paths with another method 405, :class:`ApiError` raised by a handler its own status; any other exception
    is logged by the caller's ``on_error`` and answered 500. A mount (:meth:`mount`) hands every method and
    every path below a prefix to one handler, which parses the rest itself. Routes are registered before
    serving and only read afterwards, so lookups need no lock. A router made ``escaped`` matches routing
    paths (:func:`routing_path`, a tenant's API) by :func:`escaped_path_segments`.
    """

    def __init__(self, guard: Guard = PUBLIC, *, escaped: bool = False) -> None:
        self.guard = guard
        self._parse = escaped_path_segments if escaped else path_segments
        self._exact: dict[str, _Methods[H]] = {}
        self._templates: list[tuple[tuple[str, ...], str, _Methods[H]]] = []
        # the same, by segment count (in the order added): only those can match a path; each as its matcher
        self._templates_by_length: dict[int, list[tuple[_Binder, _Methods[H]]]] = {}
        self._mounts: list[_Mount[H]] = []

    @staticmethod
    def _segments(template: str) -> tuple[str, ...]:
        segments = path_segments(template)
        if segments is None:
            raise ValueError(f"route template {template!r} is not a canonical path")
        return segments

    def add(self, method: str, template: str, handler: H, guard: Guard | None = None) -> None:
        route = _Route(handler, guard or self.guard)
        methods = {method.upper(): route}
        if method.upper() == "GET":
            methods["HEAD"] = route
        segments = self._segments(template)
        if "{" not in template:
            self._exact.setdefault(template, _Methods({}, [])).add(methods)
            return
        for _, existing_template, existing in self._templates:
            if existing_template == template:
                existing.add(methods)
                return
        entry = (segments, template, _Methods(methods, sorted(methods)))
        self._templates.append(entry)
        self._templates_by_length.setdefault(len(segments), []).append((_Binder(segments), entry[2]))

    def mount(self, prefix: str, handler: H, guard: Guard | None = None) -> None:
        """Hand every request whose path is ``prefix`` (may hold ``{name}`` segments) or below it to
        ``handler``, whatever its method; the handler sees the rest of the path (``/`` when none) as
        ``request.path``, and checks its spelling itself."""
        self._mounts.append(_Mount(self._segments(prefix), guard or self.guard, handler))

    def routes(self) -> list[tuple[str, str]]:
        """Every ``(METHOD, template)`` registered (HEAD aliases and mounts excluded)."""
        pairs = [(m, path) for path, methods in self._exact.items() for m in methods.routes if m != "HEAD"]
        pairs += [(m, template) for _, template, methods in self._templates for m in methods.routes if m != "HEAD"]
        return sorted(pairs)

    def _match_mount(self, path: str) -> RouteMatch[H] | None:
        if not path.startswith("/"):
            return None
        for mount in self._mounts:
            parts = path[1:].split("/", len(mount.segments))
            head = parts[:len(mount.segments)]
            if len(head) < len(mount.segments) or path_segments("/" + "/".join(head)) is None:
                continue
            params = _bind(mount.segments, head)
            if params is not None:
                rest = "/" + parts[-1] if len(parts) > len(mount.segments) else "/"
                return RouteMatch(mount.handler, params, [], mount.guard, rest)
        return None

    def match(self, method: str, path: str) -> RouteMatch[H]:
        """The route ``method`` and ``path`` name, with the guard to pass (the router's when none)."""
        segments = self._parse(path)
        methods: _Methods[H] | None = None
        params: dict[str, str] = {}
        if segments is not None:
            methods = self._exact.get(path)
            if methods is None or method not in methods.routes:
                # As Go's ServeMux: the route that has the method wins over one that names the path more exactly
                # without it (GET /api/backups/{key} for GET /api/backups/upload); else the first that names it.
                for binder, candidates in self._templates_by_length.get(len(segments), ()):
                    bound = binder.bind(segments)
                    if bound is not None:
                        if methods is None:
                            methods, params = candidates, bound
                        if method in candidates.routes:
                            methods, params = candidates, bound
                            break
        if methods is None:
            mounted = self._match_mount(path)
            return mounted or RouteMatch(None, {}, [], self.guard, path)
        route = methods.routes.get(method)
        if route is None:
            return RouteMatch(None, params, methods.allowed, self.guard, path)
        return RouteMatch(route.handler, params, methods.allowed, route.guard, path)

    def find(self, method: str, path: str) -> tuple[H | None, dict[str, str], list[str]]:
        """``(handler, params, allowed_methods)``; handler None with allowed empty means no such path.
        Guards are not checked: for routers whose handlers authorise requests themselves."""
        match = self.match(method, path)
        return match.handler, match.params, match.allowed

    async def dispatch(self, scope: Scope, proto: HTTPProtocol, path: str | None = None,
                       on_error: Callable[[BaseException], None] | None = None) -> None:
        match = self.match(scope.method, scope.path if path is None else path)
        if not match.guard.admits(scope):
            send_error(proto, 401, match.guard.message)
            return
        if match.handler is None:
            if match.allowed:
                send_error(proto, 405, headers=[("allow", ", ".join(match.allowed))])
            else:
                send_error(proto, 404)
            return
        try:
            await match.handler(Request(scope, proto, match.path, match.params))
        except ApiError as err:
            send_json(proto, err.status, err.body(), err.headers)
        except Exception as err:  # noqa: BLE001 - the server must answer, and stay up
            if on_error is not None:
                on_error(err)
            send_error(proto, 500)


async def health(request: Request) -> None:
    """PocketBase's ``GET /api/health``."""
    request.proto.response_bytes(200, JSON_HEADERS, HEALTH_BODY)


class HeldResponse:
    """Stands in for the RSGI protocol to hold a complete response until it may be sent (once written
    elsewhere, on a worker thread say, or confirmed durable); reads go to ``inner`` when there is one.

    Thread-safety: written by one thread, then replayed by it or, once it handed it over, on the event loop."""

    __slots__ = ("_inner", "_send", "status")

    def __init__(self, inner: HTTPProtocol | None = None) -> None:
        self.status: int | None = None
        self._send: tuple[str, tuple[Any, ...]] | None = None
        self._inner = inner

    async def __call__(self) -> bytes:
        assert self._inner is not None
        return await self._inner()

    def __aiter__(self) -> Any:
        assert self._inner is not None
        return self._inner.__aiter__()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self._send = status, ("response_bytes", (status, headers, body))

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self._send = status, ("response_empty", (status, headers))

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        self.status, self._send = status, ("response_file", (status, headers, file))

    def error_message(self) -> str | None:
        """The ``message`` of a held PocketBase-shaped error answer (None: not one)."""
        if self._send is None or self._send[0] != "response_bytes" or (self.status or 0) < 400:
            return None
        try:
            answer = orjson.loads(self._send[1][2])
        except orjson.JSONDecodeError:
            return None
        message = answer.get("message") if isinstance(answer, dict) else None
        return message if isinstance(message, str) else None

    def replay(self, proto: HTTPProtocol) -> None:
        """Send the held response on ``proto`` (a 500 if none was written)."""
        if self._send is None:
            send_error(proto, 500, "Something went wrong while processing your request.")
            return
        method, args = self._send
        getattr(proto, method)(*args)


class StatusRecorder:
    """Wraps an RSGI protocol to learn the status answered (handlers do not return it), and whether the whole
    body was read through it (``await proto()``: then there is nothing left to drain)."""

    __slots__ = ("body_read", "inner", "status")

    def __init__(self, inner: HTTPProtocol) -> None:
        self.inner = inner
        self.status = 500
        self.body_read = False

    async def __call__(self) -> bytes:
        body = await self.inner()
        self.body_read = True
        return body

    def __aiter__(self) -> Any:
        return self.inner.__aiter__()

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.inner.response_empty(status, headers)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.status = status
        self.inner.response_str(status, headers, body)  # type: ignore[attr-defined]

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.inner.response_bytes(status, headers, body)

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        self.status = status
        self.inner.response_file(status, headers, file)  # type: ignore[attr-defined]

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        self.status = status
        return self.inner.response_stream(status, headers)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # anything else granian's protocol offers
        return getattr(self.inner, name)
