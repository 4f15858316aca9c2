"""The request half of the gateway's proxy: the client's headers as the node gets them, the client's body
(read whole when small, else streamed), and the HTTP/1.1 head sent to the node.

- headers: hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``, ``Proxy-*``,
  ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``), ``Expect`` and every client-sent ``x-pbfast-*``
  header are dropped, so a client can never forge the cluster token or the epoch; ``X-Forwarded-For`` gets
  the client's address appended, ``X-Forwarded-Proto``/``-Host`` are set.
- bodies up to :data:`SMALL_BODY_BYTES` with a ``Content-Length`` are read first and sent with the head in
  one write (they can be replayed on a retry); larger or chunked ones are streamed to the node while it
  answers, never held whole. Over :attr:`ProxyLimits.max_body_bytes`: 413.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, unquote, urlsplit

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER, HEADER_PREFIX, RAW_PATH_HEADER
from pbfast.gateway.node_pool import Deadline, NodeConnection
from pbfast.gateway.proxy_types import ClientError, ProxyLimits, Target
from pbfast.http import HTTPProtocol, Scope, forwarded_target
from pbfast.logs import current_request_id

__all__ = ["NO_BODY_METHODS", "SMALL_BODY_BYTES", "RequestBody", "forwarded_headers", "node_raw_path", "pump_body",
           "read_body", "request_head"]

SMALL_BODY_BYTES = 64 << 10  # bodies up to this size are read whole (request: replayable)
NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})

# Request headers never forwarded as the client sent them (hop-by-hop, framing, and what the proxy sets).
_DROP_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "expect", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "host", "http2-settings", "x-request-id",
})
# Characters left as they are when the decoded path is encoded again for the node.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/:@!$&'()*+,;=-._~?%[]"


class RequestBody:
    """The request body: ``data`` when read whole (empty for none; replayable), else streamed from the
    client with ``length`` bytes (None: unknown, sent chunked)."""

    __slots__ = ("data", "http1", "length", "started")

    def __init__(self, data: bytes | None, length: int | None, http1: bool = True) -> None:
        self.data = data
        self.length = length
        self.http1 = http1  # over HTTP/1 granian reports a body that broke off as an extra empty chunk
        self.started = False  # a streamed body was (partly) consumed: it cannot be sent again

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again: read whole, or nothing of a streamed one read yet."""
        return self.data is not None or not self.started


def _is_http1(scope: Scope) -> bool:
    return not str(getattr(scope, "http_version", "1.1")).startswith("2")


def forwarded_headers(scope: Scope, limits: ProxyLimits) -> str:
    """The client's headers as forwarded (without the per-target request line and x-pbfast pair)."""
    size = 0
    forwarded_for: list[str] = []
    host = ""
    listed: set[str] | None = None
    lines: list[str] = []
    for name, value in scope.headers.items():
        size += len(name) + len(value) + 4
        if name in _DROP_REQUEST or name.startswith(HEADER_PREFIX):
            if name == "host":
                host = value
            elif name == "x-forwarded-for":
                forwarded_for.append(value)
            elif name == "connection":
                listed = (listed or set()) | {t.strip().lower() for t in value.split(",")}
            continue
        if name.startswith("proxy-"):
            continue
        lines.append(f"{name}: {value}\r\n")
    if size > limits.max_header_bytes:
        raise ClientError(431, "Request header fields too large.")
    if listed:
        lines = [line for line in lines if line.partition(":")[0] not in listed]
    host = host or scope.authority or ""
    client = scope.client.rpartition(":")[0].strip("[]") or scope.client
    forwarded_for.append(client)
    if host:  # else (an HTTP/1.0 client without Host) the request line's node address is used
        lines.append(f"host: {host}\r\nx-forwarded-host: {host}\r\n")
    scheme = getattr(scope, "scheme", "http")
    lines.append(f"x-forwarded-for: {', '.join(forwarded_for)}\r\nx-forwarded-proto: {scheme}\r\n")
    request_id = current_request_id.get()  # bound by the GatewayApp for this request
    if request_id is not None:
        lines.append(f"x-request-id: {request_id}\r\n")
    return "".join(lines)


async def read_body(scope: Scope, proto: HTTPProtocol, limits: ProxyLimits) -> RequestBody:
    """The body, read whole when it is small and declared; else a streamed body to :func:`pump_body`."""
    headers = scope.headers
    declared = headers.get("content-length")
    limit = limits.max_body_bytes
    if declared is not None:
        if not declared.isdigit():
            raise ClientError(400, "Invalid Content-Length header.")
        length = int(declared)
        if length > limit:
            raise ClientError(413, f"The request body is larger than {limit} bytes.")
        if length == 0:
            return RequestBody(b"", 0)
        if length <= SMALL_BODY_BYTES:
            try:
                async with asyncio.timeout(limits.client_idle_seconds):
                    data = await proto()
            except TimeoutError:
                raise ClientError(408, "Timed out reading the request body.") from None
            except Exception as err:  # noqa: BLE001 - granian's error for a body that broke off
                raise ClientError(400, "The request body could not be read.") from err
            if len(data) != length:
                raise ClientError(400, "The request body does not match its Content-Length.")
            return RequestBody(data, length)
        return RequestBody(None, length, _is_http1(scope))
    if "transfer-encoding" in headers or (not _is_http1(scope) and scope.method not in NO_BODY_METHODS):
        return RequestBody(None, None, _is_http1(scope))
    return RequestBody(b"", None)


def node_raw_path(raw: str | None, tenant_id: str, forward_path: str) -> str | None:
    """The client's spelling ``raw`` of a request's path (the native data path's, handed over with it) as the
    node's ``/t/{id}{forward_path}``, for :data:`~pbfast.cluster.wire.RAW_PATH_HEADER`: the node routes on it
    as PocketBase routes (an encoded ``/`` or ``..`` stays within its segment). None when nothing in it is
    encoded, or it is not this path's spelling (a tenant named by ``/t/{id}`` or by its Host)."""
    if not raw or "%" not in raw or not raw.isascii() or not raw.isprintable():
        return None
    found = forwarded_target(raw)
    rest = found[1] if found is not None and unquote(found[0]) == tenant_id else raw
    return f"/t/{tenant_id}{rest}" if unquote(rest) == forward_path else None


def request_head(scope: Scope, target: Target, headers: str, body: RequestBody, cluster_token: str) -> bytes:
    """``METHOD /t/{id}{forward_path}?{query} HTTP/1.1`` with the forwarded headers, the body's framing, the
    cluster token, the route's fencing epoch and the client's spelling of the path when it is known."""
    path = quote(f"/t/{target.tenant_id}{target.forward_path}", safe=_PATH_SAFE)
    query = scope.query_string
    if query:
        path = f"{path}?{quote(query, safe=_QUERY_SAFE)}"
    if body.data is not None:
        framing = f"content-length: {len(body.data)}\r\n" if body.data or scope.method not in NO_BODY_METHODS \
            else ""
    elif body.length is not None:
        framing = f"content-length: {body.length}\r\n"
    else:
        framing = "transfer-encoding: chunked\r\n"
    if not headers.startswith("host: ") and "\r\nhost: " not in headers:
        framing += f"host: {urlsplit(target.address).netloc}\r\n"
    if target.raw_path is not None:
        framing += f"{RAW_PATH_HEADER}: {target.raw_path}\r\n"
    return (f"{scope.method} {path} HTTP/1.1\r\n{headers}{framing}"
            f"{CLUSTER_TOKEN_HEADER}: {cluster_token}\r\n{EPOCH_HEADER}: {target.epoch}\r\n\r\n").encode()


async def pump_body(proto: HTTPProtocol, conn: NodeConnection, body: RequestBody, deadline: Deadline,
                    limits: ProxyLimits) -> None:
    """Stream the client's body to the node (chunked when its length is unknown).

    A client-side problem (too large, too slow, gone) aborts the node's connection, so the head read
    wakes up, and raises :class:`ClientError`. A node-side write failure just ends the pump: the head
    read sees the same closed connection (or the node's early answer)."""
    writer = conn.writer
    limit = limits.max_body_bytes
    expected = body.length
    chunked = expected is None
    size = 0
    idle = limits.client_idle_seconds
    iterator = proto.__aiter__()
    ended = False  # granian ends a body with one empty chunk; a second one means the body broke off
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await iterator.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            conn.abort()
            raise ClientError(408, "Timed out reading the request body.") from None
        except Exception as err:  # noqa: BLE001 - the client went away mid-upload
            conn.abort()
            raise ClientError(400, "The request body could not be read.") from err
        if (not chunk or ended) and body.http1:
            if ended:  # see pbfast.http.body_chunks
                conn.abort()
                raise ClientError(400, "The request body could not be read.")
            ended = True
            continue
        if not chunk:  # an HTTP/2 body may end with an empty DATA frame: as a chunk it would end ours early
            continue
        size += len(chunk)
        if size > limit or (expected is not None and size > expected):
            conn.abort()
            raise ClientError(413, f"The request body is larger than {limit} bytes.")
        try:
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
        except OSError:
            return
        deadline.extend()
    if expected is not None and size != expected:
        conn.abort()
        raise ClientError(400, "The request body does not match its Content-Length.")
    if chunked:
        try:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except OSError:
            return
    deadline.extend()
