"""The gateway's streaming HTTP/1.1 proxy to remote tenant nodes.

:meth:`NodeProxy.forward` sends one client request to the node of the tenant's route as
``METHOD /t/{id}{forward_path}?{query}`` over a pooled keep-alive connection (:mod:`.node_pool`, one pool
per node), with the cluster token and the route's fencing epoch (the request half: :mod:`.http1_request`),
and streams the node's answer back (the response half: :mod:`.http1_response`).

Failures: a node that cannot be connected to, or does not answer within the timeouts, counts against
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
from typing import Protocol

from pbfast.cluster.wire import is_moved
from pbfast.gateway.http1_request import (
    SMALL_BODY_BYTES,
    RequestBody,
    forwarded_headers,
    pump_body,
    read_body,
    request_head,
)
from pbfast.gateway.http1_response import read_response_head, relay_body, send_small
from pbfast.gateway.metrics import GatewayMetrics
from pbfast.gateway.node_pool import Deadline, NodeConnection, NodePool, NodePools
from pbfast.gateway.proxy_types import ClientError, ProxyLimits, Reroute, StaleConnection, Target, Unreachable
from pbfast.http import UNREAD_BODY_DRAIN_SECONDS, HTTPProtocol, Scope, send_error
from pbfast.pocketbase.apis.front import cors_headers
from pbfast.logs import component_logger
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

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class TenantProxy(Protocol):
    """What :class:`~pbfast.gateway.app.GatewayApp` needs from a data path to remote nodes."""

    async def forward(self, scope: Scope, proto: HTTPProtocol, target: Target, reroute: Reroute | None) -> int:
        """Answer the client from ``target``'s node; returns the status answered to the client."""

    def breaker_states(self) -> dict[str, str]:
        """Circuit breaker state per node address."""

    async def aclose(self) -> None:
        """Close pooled connections; requests still running finish on theirs."""


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
        self._pools = NodePools(self.limits)

    # ---- the interface ---------------------------------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        return self.breakers.states()

    async def aclose(self) -> None:
        self._pools.close()

    async def forward(self, scope: Scope, proto: HTTPProtocol, target: Target, reroute: Reroute | None) -> int:
        try:
            headers = forwarded_headers(scope, self.limits)
            body = await read_body(scope, proto, self.limits)
        except ClientError as err:
            send_tenant_error(proto, scope, err.status, err.message)
            return err.status
        method = scope.method
        rerouted = False
        while True:
            try:
                return await self._attempt(scope, proto, target, headers, body, method)
            except Unreachable as failure:
                if failure.kind not in ("moved", "client"):
                    self.metrics.upstream_error(failure.kind)
                reason = "moved" if failure.kind == "moved" else "unreachable"
                replayable = body.replayable
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
                    send_tenant_error(proto, scope, 503, "The tenant has moved; retry.", headers=[("retry-after", "1")])
                    return 503
                send_tenant_error(proto, scope, failure.status, failure.message,
                                  headers=[("retry-after", str(failure.retry_after))] if failure.status in (
                                      502, 503, 504) else None)
                return failure.status
            except ClientError as err:
                send_tenant_error(proto, scope, err.status, err.message)
                return err.status

    # ---- one attempt ------------------------------------------------------------------------------

    async def _attempt(self, scope: Scope, proto: HTTPProtocol, target: Target, headers: str, body: RequestBody,
                       method: str) -> int:
        address = target.address
        if not self.breakers.allow(address):
            retry_after = max(1, math.ceil(self.breakers.retry_after(address)))
            raise Unreachable("breaker_open", 503, "The tenant's node is unavailable; retry shortly.",
                               retry_after)
        outcome = _Outcome(self.breakers, address)
        try:
            try:
                pool = self._pools.pool(address)
            except ValueError:
                raise Unreachable("protocol", 502, "The tenant's node address is invalid.") from None
            head = request_head(scope, target, headers, body, self._token)
            for _ in range(2):  # again only after a stale pooled connection, never after a fresh one
                conn = await self._pools.acquire(pool, address, outcome.failure)
                try:
                    return await self._exchange(proto, target, head, body, method, pool, conn, outcome)
                except StaleConnection:
                    continue
            raise Unreachable("reset", 502, "The tenant's node closed the connection.")
        finally:
            outcome.success()  # no-op when recorded; else (client problem, cancelled) gives a probe slot back

    async def _exchange(self, proto: HTTPProtocol, target: Target, head: bytes, body: RequestBody, method: str,
                        pool: NodePool, conn: NodeConnection, outcome: _Outcome) -> int:
        """Send the request on ``conn`` and relay the answer; records the node's outcome in ``outcome``."""
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop, self.limits.read_timeout_seconds, conn)
        pump: asyncio.Task[None] | None = None
        reusable = False
        answered = False
        try:
            if body.data is not None:
                conn.writer.write(head + body.data if body.data else head)
            else:
                if body.started:
                    raise Unreachable("client", 502, "The request body could not be sent again.")
                conn.writer.write(head)
                body.started = True
                pump = loop.create_task(pump_body(proto, conn, body, deadline, self.limits))
            try:
                response = await read_response_head(conn, method)
                status, response_headers, length, chunked, keep_alive = response
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as err:
                if pump is not None and pump.done() and not pump.cancelled() and pump.exception() is not None:
                    outcome.success()  # the client's body failed, not the node
                    client_error = pump.exception()
                    if isinstance(client_error, ClientError):
                        raise client_error from None
                    raise Unreachable("client", 400, "The request body could not be read.") from None
                if deadline.expired:
                    outcome.failure()
                    raise Unreachable("timeout", 504, "The tenant's node did not answer in time.") from None
                if conn.reused and body.data is not None and method in _IDEMPOTENT and \
                        isinstance(err, (asyncio.IncompleteReadError, ConnectionError)) and \
                        not getattr(err, "partial", b""):
                    raise StaleConnection() from None  # closed while pooled: try a fresh connection
                outcome.failure()
                if isinstance(err, (asyncio.LimitOverrunError, ValueError)):
                    raise Unreachable("protocol", 502, "The tenant's node sent an invalid response.") from None
                raise Unreachable("reset", 502, "The tenant's node closed the connection.") from None
            outcome.success()
            if length is not None and length <= SMALL_BODY_BYTES and not chunked:
                payload = await conn.reader.readexactly(length) if length else b""
                reusable = keep_alive and (pump is None or pump.done())
                if is_moved(status, response_headers):
                    raise Unreachable("moved", 503, "The tenant has moved; retry.")
                send_small(proto, status, response_headers, payload)
                answered = True
                return status
            if length is None and not chunked and keep_alive:
                # No body (HEAD, 204, 304): the head is the whole answer.
                proto.response_empty(status, response_headers)
                reusable = pump is None or pump.done()
                answered = True
                return status
            complete = await relay_body(proto, conn, deadline, target.address, response, self.metrics)
            reusable = complete and keep_alive and (pump is None or pump.done())
            answered = True
            return status
        except (asyncio.IncompleteReadError, OSError):
            # The node went away in the middle of a small body; nothing was sent to the client yet.
            raise Unreachable("reset", 502, "The tenant's node closed the connection.") from None
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
                self._pools.release(pool, conn)
            else:
                self._pools.discard(pool, conn)


def send_tenant_error(proto: HTTPProtocol, scope: Scope, status: int, message: str,
                      headers: list[tuple[str, str]] | None = None) -> None:
    """The gateway's own answer about a tenant (unknown, moving, unreachable, a refused body), with the CORS
    headers PocketBase puts on every answer, so that a browser app on another origin reads its status (a
    node's answers carry their own)."""
    send_error(proto, status, message, headers=(headers or []) + cors_headers(scope))
