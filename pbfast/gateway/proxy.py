"""The gateway's streaming HTTP/1.1 proxy to remote tenant nodes.

:meth:`NodeProxy.forward` sends one client request to the node of the tenant's route as
``METHOD /t/{id}{forward_path}?{query}`` over a pooled keep-alive connection (raw asyncio streams, one pool
per node), with the cluster token and the route's fencing epoch, and streams the node's answer back:

- request headers: hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``,
  ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``), ``Expect`` and every client-sent
  ``x-pbfast-*`` header are dropped, so a client can never forge the cluster token or the epoch;
  ``X-Forwarded-For`` gets the client's address appended, ``X-Forwarded-Proto``/``-Host`` are set.
- request bodies up to :data:`SMALL_BODY_BYTES` with a ``Content-Length`` are read first and sent with the
  head in one write (they can be replayed on a retry); larger or chunked ones are streamed to the node
  while it answers, never held whole. Over :attr:`ProxyLimits.max_body_bytes`: 413.
- responses up to :data:`SMALL_BODY_BYTES` are answered in one piece; larger, chunked and close-delimited
  ones are streamed chunk by chunk as they arrive. ``text/event-stream`` has no read timeout and stays
  open until the node or the client closes it.
- failures: a node that cannot be connected to, or does not answer within the timeouts, counts against
  its circuit breaker (native :class:`~pbfast.primitives.CircuitBreakers`); while a breaker is open the
  proxy answers 503 with ``Retry-After`` at once. A refused connection answers 502, a timeout 504 (both
  with ``Retry-After``). When nothing reached the client yet and the body can be sent again (read whole,
  or not read at all yet), the caller's ``reroute`` callback may supply a new route once: after a
  connection failure (the app: if the tenant's route changed meanwhile) and after the node's "tenant has
  moved" 503 (stale epoch; the app waits for the newer route). A pooled connection found closed before
  any answer is replaced by a fresh one for idempotent requests with a replayable body.

Every error answer is PocketBase's ``{"status","message","data"}``. :class:`TenantProxy` is the small
interface the gateway app depends on, so a native data path can replace this one.

Thread-safety: event loop only (pools, counters and streams are not locked); the breakers are native and
thread-safe.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import quote, urlsplit

from granian._granian import RSGIProtocolClosed as ProtocolClosed

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER, HEADER_PREFIX, is_moved
from pbfast.gateway.metrics import GatewayMetrics
from pbfast.http import UNREAD_BODY_DRAIN_SECONDS, HTTPProtocol, Scope, send_error
from pbfast.logs import component_logger, current_request_id
from pbfast.primitives import CircuitBreakers

__all__ = [
    "SMALL_BODY_BYTES",
    "NodeProxy",
    "ProxyLimits",
    "Reroute",
    "Target",
    "TenantProxy",
]

log = component_logger("Gateway")

SMALL_BODY_BYTES = 64 << 10  # bodies up to this size are read whole (request: replayable)
_READ_CHUNK = 64 << 10
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})

# Request headers never forwarded as the client sent them (hop-by-hop, framing, and what the proxy sets).
_DROP_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "expect", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "host", "http2-settings", "x-request-id",
})
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Characters left as they are when the decoded path is encoded again for the node.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/:@!$&'()*+,;=-._~?%[]"


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Limits of the proxy; the defaults suit a gateway in front of PocketBase-compatible nodes.

    ``max_body_bytes`` is PocketBase's default request limit (32 MiB; nodes enforce the exact limit of
    each collection, which file fields may raise). ``client_idle_seconds`` bounds the wait for the next
    piece of a request body. ``read_timeout_seconds`` bounds each wait for the node (not for
    ``text/event-stream`` responses once they started).
    """

    max_body_bytes: int = 32 << 20
    max_header_bytes: int = 32 << 10
    max_response_header_bytes: int = 64 << 10
    connect_timeout_seconds: float = 1.0
    read_timeout_seconds: float = 30.0
    client_idle_seconds: float = 60.0
    max_connections_per_node: int = 1024
    max_idle_per_node: int = 256
    pool_idle_seconds: float = 15.0  # below granian's 30 s keep-alive, so the node never closes first
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes: the node's ``http(s)://host:port``, the tenant, its epoch, the path."""

    address: str
    tenant_id: str
    epoch: int
    forward_path: str


# reroute(target, reason) -> a new target to try once, or None. reason: "unreachable" (nothing reached
# the node: connection failed, timed out, or its breaker is open) or "moved" (the node refused the epoch).
Reroute = Callable[[Target, str], Awaitable[Target | None]]


class TenantProxy(Protocol):
    """What :class:`~pbfast.gateway.app.GatewayApp` needs from a data path to remote nodes."""

    async def forward(self, scope: Scope, proto: HTTPProtocol, target: Target, reroute: Reroute | None) -> int:
        """Answer the client from ``target``'s node; returns the status answered to the client."""

    def breaker_states(self) -> dict[str, str]:
        """Circuit breaker state per node address."""

    async def aclose(self) -> None:
        """Close pooled connections; requests still running finish on theirs."""


class _ClientError(Exception):
    """The client's request cannot be forwarded: answered with ``status`` (nothing reached the node)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Unreachable(Exception):
    """Nothing of the request reached the node (or nothing came back): ``kind`` names why."""

    def __init__(self, kind: str, status: int, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _Connection:
    """One keep-alive connection to a node."""

    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class _NodePool:
    """Keep-alive connections to one node: idle ones (most recently used last) and a count of all open."""

    __slots__ = ("host", "idle", "open", "port", "server_hostname", "ssl", "waiters")

    def __init__(self, address: str) -> None:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) node address: {address!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.server_hostname = self.host if self.ssl else None
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: list[asyncio.Future[None]] = []


class _Deadline:
    """A lazily re-armed timer that aborts a connection when no progress was made for ``seconds``;
    :meth:`extend` is cheap (no timer churn), so it can run on every read."""

    __slots__ = ("_at", "_conn", "_handle", "_loop", "_seconds", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, conn: _Connection) -> None:
        self._loop = loop
        self._seconds = seconds
        self._conn = conn
        self._at = loop.time() + seconds
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._at, self._check)
        self.expired = False

    def extend(self) -> None:
        self._at = self._loop.time() + self._seconds

    def _check(self) -> None:
        if self._loop.time() < self._at:
            self._handle = self._loop.call_at(self._at, self._check)
            return
        self._handle = None
        self.expired = True
        self._conn.abort()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Outcome:
    """Records one attempt's result in the node's breaker exactly once (a half-open probe slot taken by
    ``allow`` is given back by whichever comes first)."""

    __slots__ = ("_address", "_breakers", "done")

    def __init__(self, breakers: CircuitBreakers, address: str) -> None:
        self._breakers = breakers
        self._address = address
        self.done = False

    def success(self) -> None:
        if not self.done:
            self.done = True
            self._breakers.record_success(self._address)

    def failure(self) -> None:
        if not self.done:
            self.done = True
            self._breakers.record_failure(self._address)


def _is_http1(scope: Scope) -> bool:
    return not str(getattr(scope, "http_version", "1.1")).startswith("2")


class _Body:
    """The request body: ``data`` when read whole (empty for none; replayable), else streamed from the
    client with ``length`` bytes (None: unknown, sent chunked)."""

    __slots__ = ("data", "http1", "length", "started")

    def __init__(self, data: bytes | None, length: int | None, http1: bool = True) -> None:
        self.data = data
        self.length = length
        self.http1 = http1  # over HTTP/1 granian reports a body that broke off as an extra empty chunk
        self.started = False  # a streamed body was (partly) consumed: it cannot be sent again


class NodeProxy:
    """The Python data path from the gateway to remote tenant nodes (see the module docstring).

    Thread-safety: event loop only.
    """

    def __init__(self, cluster_token: str, limits: ProxyLimits | None = None,
                 metrics: GatewayMetrics | None = None, breakers: CircuitBreakers | None = None) -> None:
        self.limits = limits or ProxyLimits()
        self.metrics = metrics or GatewayMetrics()
        self.breakers = breakers or CircuitBreakers(self.limits.breaker_failures,
                                                    self.limits.breaker_cooldown_seconds, 1)
        self._token = cluster_token
        self._pools: dict[str, _NodePool] = {}
        self._closed = False

    # ---- the interface ---------------------------------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        return self.breakers.states()

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.writer.close()
            pool.open -= len(pool.idle)
            pool.idle.clear()

    async def forward(self, scope: Scope, proto: HTTPProtocol, target: Target, reroute: Reroute | None) -> int:
        try:
            headers = self._request_headers(scope)
            body = await self._read_body(scope, proto)
        except _ClientError as err:
            send_error(proto, err.status, err.message)
            return err.status
        method = scope.method
        rerouted = False
        while True:
            try:
                return await self._attempt(scope, proto, target, headers, body, method)
            except _Unreachable as failure:
                if failure.kind not in ("moved", "client"):
                    self.metrics.upstream_error(failure.kind)
                reason = "moved" if failure.kind == "moved" else "unreachable"
                replayable = body.data is not None or not body.started  # nothing of a streamed body read yet
                if reroute is not None and not rerouted and replayable and failure.kind != "client":
                    new_target = await reroute(target, reason)
                    if new_target is not None:
                        rerouted = True
                        self.metrics.retry(reason)
                        log.debug("tenant %s: %s at %s, retrying at %s (epoch %d)", target.tenant_id,
                                  failure.kind, target.address, new_target.address, new_target.epoch)
                        target = new_target
                        continue
                if failure.kind == "moved":
                    send_error(proto, 503, "The tenant has moved; retry.", headers=[("retry-after", "1")])
                    return 503
                send_error(proto, failure.status, failure.message,
                           headers=[("retry-after", str(failure.retry_after))] if failure.status in (
                               502, 503, 504) else None)
                return failure.status
            except _ClientError as err:
                send_error(proto, err.status, err.message)
                return err.status

    # ---- the request -----------------------------------------------------------------------------

    def _request_headers(self, scope: Scope) -> str:
        """The client's headers as forwarded (without the per-target request line and x-pbfast pair)."""
        items = scope.headers.items()
        size = 0
        forwarded_for: list[str] = []
        host = ""
        listed: set[str] | None = None
        lines: list[str] = []
        for name, value in items:
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
        if size > self.limits.max_header_bytes:
            raise _ClientError(431, "Request header fields too large.")
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

    async def _read_body(self, scope: Scope, proto: HTTPProtocol) -> _Body:
        headers = scope.headers
        declared = headers.get("content-length")
        limit = self.limits.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise _ClientError(400, "Invalid Content-Length header.")
            length = int(declared)
            if length > limit:
                raise _ClientError(413, f"The request body is larger than {limit} bytes.")
            if length == 0:
                return _Body(b"", 0)
            if length <= SMALL_BODY_BYTES:
                try:
                    async with asyncio.timeout(self.limits.client_idle_seconds):
                        data = await proto()
                except TimeoutError:
                    raise _ClientError(408, "Timed out reading the request body.") from None
                except Exception as err:  # noqa: BLE001 - granian's error for a body that broke off
                    raise _ClientError(400, "The request body could not be read.") from err
                if len(data) != length:
                    raise _ClientError(400, "The request body does not match its Content-Length.")
                return _Body(data, length)
            return _Body(None, length, _is_http1(scope))
        if "transfer-encoding" in headers or (not _is_http1(scope) and scope.method not in _NO_BODY_METHODS):
            return _Body(None, None, _is_http1(scope))
        return _Body(b"", None)

    def _request_head(self, scope: Scope, target: Target, headers: str, body: _Body) -> bytes:
        path = f"/t/{target.tenant_id}{target.forward_path}"
        path = quote(path, safe=_PATH_SAFE)
        query = scope.query_string
        if query:
            path = f"{path}?{quote(query, safe=_QUERY_SAFE)}"
        if body.data is not None:
            framing = f"content-length: {len(body.data)}\r\n" if body.data or scope.method not in _NO_BODY_METHODS \
                else ""
        elif body.length is not None:
            framing = f"content-length: {body.length}\r\n"
        else:
            framing = "transfer-encoding: chunked\r\n"
        if not headers.startswith("host: ") and "\r\nhost: " not in headers:
            framing += f"host: {urlsplit(target.address).netloc}\r\n"
        return (f"{scope.method} {path} HTTP/1.1\r\n{headers}{framing}"
                f"{CLUSTER_TOKEN_HEADER}: {self._token}\r\n{EPOCH_HEADER}: {target.epoch}\r\n\r\n").encode()

    # ---- connections -----------------------------------------------------------------------------

    def _pool(self, address: str) -> _NodePool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = _NodePool(address)
        return pool

    async def _connection(self, pool: _NodePool, address: str, outcome: _Outcome) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self.limits.pool_idle_seconds:
                conn.reused = True
                return conn
            self._discard(pool, conn)
        if pool.open >= self.limits.max_connections_per_node:
            waiter = loop.create_future()
            pool.waiters.append(waiter)
            try:
                async with asyncio.timeout(self.limits.connect_timeout_seconds):
                    await waiter
            except TimeoutError:
                raise _Unreachable("pool_exhausted", 503, "The tenant's node is busy; retry shortly.") from None
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
            return await self._connection(pool, address, outcome)
        pool.open += 1
        try:
            async with asyncio.timeout(self.limits.connect_timeout_seconds):
                reader, writer = await asyncio.open_connection(
                    pool.host, pool.port, ssl=pool.ssl, server_hostname=pool.server_hostname,
                    limit=self.limits.max_response_header_bytes)
        except TimeoutError:
            self._closed_one(pool)
            outcome.failure()
            raise _Unreachable("connect_timeout", 504, "The tenant's node did not accept a connection in time.") \
                from None
        except BaseException as err:
            if not isinstance(err, OSError):
                self._closed_one(pool)
                raise
            self._closed_one(pool)
            outcome.failure()
            log.debug("connecting to %s failed: %s", address, err)
            raise _Unreachable("connect", 502, "The tenant's node is unreachable.") from None
        return _Connection(reader, writer)

    def _release(self, pool: _NodePool, conn: _Connection) -> None:
        if self._closed or len(pool.idle) >= self.limits.max_idle_per_node or not conn.usable():
            self._discard(pool, conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        pool.idle.append(conn)
        self._wake(pool)

    def _discard(self, pool: _NodePool, conn: _Connection) -> None:
        conn.abort()
        self._closed_one(pool)

    def _closed_one(self, pool: _NodePool) -> None:
        pool.open -= 1
        self._wake(pool)

    @staticmethod
    def _wake(pool: _NodePool) -> None:
        while pool.waiters:
            waiter = pool.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    # ---- one attempt ------------------------------------------------------------------------------

    async def _attempt(self, scope: Scope, proto: HTTPProtocol, target: Target, headers: str, body: _Body,
                       method: str) -> int:
        address = target.address
        if not self.breakers.allow(address):
            retry_after = max(1, math.ceil(self.breakers.retry_after(address)))
            raise _Unreachable("breaker_open", 503, "The tenant's node is unavailable; retry shortly.",
                               retry_after)
        outcome = _Outcome(self.breakers, address)
        try:
            try:
                pool = self._pool(address)
            except ValueError:
                raise _Unreachable("protocol", 502, "The tenant's node address is invalid.") from None
            head = self._request_head(scope, target, headers, body)
            for _ in range(2):  # again only after a stale pooled connection, never after a fresh one
                conn = await self._connection(pool, address, outcome)
                try:
                    return await self._exchange(proto, target, head, body, method, pool, conn, outcome)
                except _StaleConnection:
                    continue
            raise _Unreachable("reset", 502, "The tenant's node closed the connection.")
        finally:
            outcome.success()  # no-op when recorded; else (client problem, cancelled) gives a probe slot back

    async def _exchange(self, proto: HTTPProtocol, target: Target, head: bytes, body: _Body, method: str,
                        pool: _NodePool, conn: _Connection, outcome: _Outcome) -> int:
        """Send the request on ``conn`` and relay the answer; records the node's outcome in ``outcome``."""
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, self.limits.read_timeout_seconds, conn)
        pump: asyncio.Task[None] | None = None
        reusable = False
        answered = False
        try:
            if body.data is not None:
                conn.writer.write(head + body.data if body.data else head)
            else:
                if body.started:
                    raise _Unreachable("client", 502, "The request body could not be sent again.")
                conn.writer.write(head)
                body.started = True
                pump = loop.create_task(self._pump(proto, conn, body, deadline))
            try:
                status, response_headers, length, chunked, keep_alive = await self._read_head(conn, method)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as err:
                if pump is not None and pump.done() and not pump.cancelled() and pump.exception() is not None:
                    outcome.success()  # the client's body failed, not the node
                    client_error = pump.exception()
                    if isinstance(client_error, _ClientError):
                        raise client_error from None
                    raise _Unreachable("client", 400, "The request body could not be read.") from None
                if deadline.expired:
                    outcome.failure()
                    raise _Unreachable("timeout", 504, "The tenant's node did not answer in time.") from None
                if conn.reused and body.data is not None and method in _IDEMPOTENT and \
                        isinstance(err, (asyncio.IncompleteReadError, ConnectionError)) and \
                        not getattr(err, "partial", b""):
                    raise _StaleConnection() from None  # closed while pooled: try a fresh connection
                outcome.failure()
                if isinstance(err, (asyncio.LimitOverrunError, ValueError)):
                    raise _Unreachable("protocol", 502, "The tenant's node sent an invalid response.") from None
                raise _Unreachable("reset", 502, "The tenant's node closed the connection.") from None
            outcome.success()
            if length is not None and length <= SMALL_BODY_BYTES and not chunked:
                payload = await conn.reader.readexactly(length) if length else b""
                reusable = keep_alive and (pump is None or pump.done())
                if is_moved(status, response_headers):
                    raise _Unreachable("moved", 503, "The tenant has moved; retry.")
                _send_small(proto, status, response_headers, payload)
                answered = True
                return status
            if length is None and not chunked and keep_alive:
                # No body (HEAD, 204, 304): the head is the whole answer.
                proto.response_empty(status, response_headers)
                reusable = pump is None or pump.done()
                answered = True
                return status
            complete = await self._relay(proto, conn, deadline, target.address, status, response_headers,
                                         length, chunked)
            reusable = complete and keep_alive and (pump is None or pump.done())
            answered = True
            return status
        except (asyncio.IncompleteReadError, OSError):
            # The node went away in the middle of a small body; nothing was sent to the client yet.
            raise _Unreachable("reset", 502, "The tenant's node closed the connection.") from None
        finally:
            deadline.cancel()
            if answered and pump is not None and not pump.done():
                # The node answered before the client's body ended: send the rest on (the node reads it), or
                # granian closes the client's connection over the unread rest, under its next request.
                await asyncio.wait({pump}, timeout=UNREAD_BODY_DRAIN_SECONDS)
            if pump is not None:
                if not pump.done():
                    pump.cancel()
                    reusable = False
                elif not pump.cancelled() and pump.exception() is not None:
                    reusable = False  # the node answered before the client's body failed
            if reusable:
                self._release(pool, conn)
            else:
                self._discard(pool, conn)

    async def _pump(self, proto: HTTPProtocol, conn: _Connection, body: _Body, deadline: _Deadline) -> None:
        """Stream the client's body to the node (chunked when its length is unknown).

        A client-side problem (too large, too slow, gone) aborts the node's connection, so the head read
        wakes up, and raises :class:`_ClientError`. A node-side write failure just ends the pump: the head
        read sees the same closed connection (or the node's early answer)."""
        writer = conn.writer
        limit = self.limits.max_body_bytes
        expected = body.length
        chunked = expected is None
        size = 0
        idle = self.limits.client_idle_seconds
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
                raise _ClientError(408, "Timed out reading the request body.") from None
            except Exception as err:  # noqa: BLE001 - the client went away mid-upload
                conn.abort()
                raise _ClientError(400, "The request body could not be read.") from err
            if (not chunk or ended) and body.http1:
                if ended:  # see pbfast.http.body_chunks
                    conn.abort()
                    raise _ClientError(400, "The request body could not be read.")
                ended = True
                continue
            if not chunk:  # an HTTP/2 body may end with an empty DATA frame: as a chunk it would end ours early
                continue
            size += len(chunk)
            if size > limit or (expected is not None and size > expected):
                conn.abort()
                raise _ClientError(413, f"The request body is larger than {limit} bytes.")
            try:
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await writer.drain()
            except OSError:
                return
            deadline.extend()
        if expected is not None and size != expected:
            conn.abort()
            raise _ClientError(400, "The request body does not match its Content-Length.")
        if chunked:
            try:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except OSError:
                return
        deadline.extend()

    # ---- the response -----------------------------------------------------------------------------

    @staticmethod
    async def _read_head(conn: _Connection, method: str
                         ) -> tuple[int, list[tuple[str, str]], int | None, bool, bool]:
        """``(status, headers to relay, content length, chunked, keep-alive)``; 1xx answers are skipped.

        For answers without a body (HEAD, 1xx, 204, 304) the length is None and chunked False."""
        reader = conn.reader
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            lines = text.split("\r\n")
            status_line = lines[0]
            if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
                raise ValueError(f"bad status line {status_line[:40]!r}")
            status = int(status_line[9:12])
            if 100 <= status < 200:
                if status == 101:
                    raise ValueError("unexpected protocol switch")
                continue
            break
        keep_alive = status_line[7] == "1"
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        listed: set[str] | None = None
        for line in lines[1:-2]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name = name.strip().lower()
            value = value.strip()
            if name in _DROP_RESPONSE or name.startswith("proxy-"):
                if name == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif name == "connection":
                    tokens = {t.strip().lower() for t in value.split(",")}
                    if "close" in tokens:
                        keep_alive = False
                    elif "keep-alive" in tokens:
                        keep_alive = True
                    listed = (listed or set()) | tokens
                continue
            if name == "content-length":
                length = int(value)
                if length < 0:
                    raise ValueError("negative content-length")
            headers.append((name, value))
        if listed:
            headers = [h for h in headers if h[0] not in listed]
        if method == "HEAD" or status in (204, 304):
            return status, headers, None, False, keep_alive
        if chunked:
            length = None
        elif length is None:
            keep_alive = False  # the body runs until the node closes the connection
        return status, headers, length, chunked, keep_alive

    async def _relay(self, proto: HTTPProtocol, conn: _Connection, deadline: _Deadline, address: str,
                     status: int, headers: list[tuple[str, str]], length: int | None, chunked: bool) -> bool:
        """Stream the response body to the client as it arrives; True when it was read completely."""
        reader = conn.reader
        event_stream = any(name == "content-type" and value.startswith("text/event-stream")
                           for name, value in headers)
        if chunked:
            headers = [h for h in headers if h[0] != "content-length"]
        transport = cast(Any, proto).response_stream(status, headers)
        disconnect: asyncio.Future[None] | None = None
        if event_stream:
            deadline.cancel()  # events may be minutes apart; the stream lasts until either side closes
            disconnect = asyncio.ensure_future(proto.client_disconnect())  # type: ignore[attr-defined]
            disconnect.add_done_callback(lambda _: conn.abort())
        try:
            if chunked:
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    deadline.extend()
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers are not relayed
                        return True
                    while size:
                        data = await reader.read(min(size, _READ_CHUNK))
                        if not data:
                            raise asyncio.IncompleteReadError(b"", size)
                        size -= len(data)
                        deadline.extend()
                        await transport.send_bytes(data)
                    if await reader.readexactly(2) != b"\r\n":
                        raise ValueError("bad chunk terminator")
            remaining = length
            while remaining is None or remaining > 0:
                data = await reader.read(_READ_CHUNK if remaining is None else min(remaining, _READ_CHUNK))
                if not data:
                    if remaining is None:
                        return False  # close-delimited: complete, but the connection is done
                    raise asyncio.IncompleteReadError(b"", remaining)
                deadline.extend()
                if remaining is not None:
                    remaining -= len(data)
                await transport.send_bytes(data)
            return True
        except ProtocolClosed:
            return False  # the client went away; the node's connection is dropped
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, asyncio.LimitOverrunError) as err:
            if not (disconnect is not None and disconnect.done()):
                self.metrics.upstream_error("timeout" if deadline.expired else "reset")
                log.warning("a %d response from %s was cut short: %s", status, address,
                            "read timeout" if deadline.expired else type(err).__name__)
            return False
        finally:
            if disconnect is not None and not disconnect.done():
                disconnect.cancel()


class _StaleConnection(Exception):
    """A pooled connection turned out closed before any answer; the request is sent again on a new one."""


def _send_small(proto: HTTPProtocol, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
    """Answer a whole (small) body; granian sets the Content-Length itself."""
    proto.response_bytes(status, [h for h in headers if h[0] != "content-length"], payload)
