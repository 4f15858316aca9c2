"""The gateway's HTTP application (RSGI).

Each request is resolved to a tenant by the native :class:`~pbfast.primitives.RoutingTable` in one call,
from the path prefix ``/t/{id}/...`` or the Host ``{id}.<base-domain>``. Requests that name no tenant are
the gateway's own (``GET /api/health``, ``GET /metrics``). A tenant on a ``local://`` node (all-in-one) is
served in-process; a tenant on a remote node goes through the :class:`~pbfast.gateway.proxy.TenantProxy`.

While a tenant is ``moving`` its requests wait (at most :data:`MOVE_WAIT_SECONDS`) for the move to finish
and then go to the new node, so a planned move produces no error answers. When the proxy cannot reach a
node, or the node says the tenant has moved (stale epoch), the request is sent once more if the tenant's
route changed meanwhile (for a move: waiting for the change, bounded the same way). Every request gets an
``X-Request-Id`` (:mod:`pbfast.request_ids`), forwarded to the node and returned to the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pbfast._native import HandedRequest
from pbfast.cluster.wire import CLIENT_HEADER, RAW_PATH_HEADER
from pbfast.gateway.http1_request import node_raw_path
from pbfast.gateway.metrics import GatewayMetrics
from pbfast.gateway.proxy import Target, TenantProxy, send_tenant_error
from pbfast.gateway.routes import RouteWatcher
from pbfast.http import (
    Handler,
    Guard,
    HTTPProtocol,
    Request,
    Router,
    Scope,
    StatusRecorder,
    bearer_token_matches,
    discard_unread_body,
    health,
)
from pbfast.logs import component_logger, current_request_id
from pbfast.primitives import InvalidTenantId
from pbfast.prometheus import METRICS_HEADERS
from pbfast.request_ids import REQUEST_ID_HEADER, WithRequestId, bind_request_id

__all__ = ["MOVE_WAIT_SECONDS", "GatewayApp", "LocalNode"]

log = component_logger("Gateway")
access_log = component_logger("GatewayAccess")

# In-process hop to a node: (tenant_id, epoch, forward_path, scope, proto) -> the status it answered.
LocalNode = Callable[[str, int, str, Scope, HTTPProtocol], Awaitable[int]]

MOVE_WAIT_SECONDS = 5.0
FIRST_TABLE_WAIT_SECONDS = 5.0

_INACTIVE = {
    "suspended": (403, "The tenant is suspended."),
    "moving": (503, "The tenant is moving to another node; retry shortly."),
    "unplaced": (503, "The tenant is not placed on a node yet; retry shortly."),
}

Route = tuple[str, int, bool]


class _ClientScope:
    """A scope whose client address is the one the native data path saw (the socket's peer is itself)."""

    __slots__ = ("_scope", "client")

    def __init__(self, scope: Scope, client: str) -> None:
        self._scope = scope
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scope, name)


def _may_have_body(scope: Scope) -> bool:
    length = scope.headers.get("content-length")
    return (length is not None and length != "0") or scope.headers.get("transfer-encoding") is not None


class GatewayApp:
    """RSGI app of the gateway. Thread-safety: event loop only; the routing table is lock-free for
    readers and replaced by the route watcher."""

    def __init__(self, watcher: RouteWatcher, local_nodes: dict[str, LocalNode] | None = None,
                 proxy: TenantProxy | None = None, metrics: GatewayMetrics | None = None,
                 move_wait_seconds: float = MOVE_WAIT_SECONDS, *, metrics_token: str | None = None,
                 trust_client_header: bool = False,
                 native_stats: Callable[[], dict[str, Any]] | None = None, access_log: bool = False) -> None:
        """``metrics_token``: ``/metrics`` then needs ``Authorization: Bearer <token>`` (it names nodes).
        ``trust_client_header``: only for the listener the native data path hands requests to (a private
        Unix socket): the client's address is taken from ``x-pbfast-client``. ``native_stats``: the native
        data path's counters, added to ``/metrics``. ``access_log``: one log line per request."""
        self.watcher = watcher
        self.metrics_token = metrics_token
        self.trust_client_header = trust_client_header
        self.native_stats = native_stats
        self.access_log = access_log
        self.routes = watcher.routes
        self.proxy = proxy
        self.metrics = metrics or GatewayMetrics()
        self.move_wait_seconds = move_wait_seconds
        self._local_nodes = local_nodes or {}
        # The gateway's own routes (requests that name no tenant): only the metrics are guarded.
        self._own: Router[Handler] = Router()
        self._own.add("GET", "/api/health", health)
        self._own.add("GET", "/metrics", self._metrics, guard=Guard(
            self._may_read_metrics, "The metrics need 'Authorization: Bearer <cluster token>'."))

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        handed = isinstance(scope, HandedRequest)  # in process: its client is the header's, its body read whole
        if self.trust_client_header and not handed:
            client = scope.headers.get(CLIENT_HEADER)
            if client:
                scope = _ClientScope(scope, f"[{client}]:0" if ":" in client else f"{client}:0")
        started = time.perf_counter()
        if handed:
            # The native side checked the client's id (or made one), and sets it on the answer itself.
            bound = current_request_id.set(scope.headers.get(REQUEST_ID_HEADER))
        else:
            request_id, bound = bind_request_id(scope)
            proto = WithRequestId(proto, request_id)
        try:
            status = await self._serve(scope, proto)
            elapsed = time.perf_counter() - started
            self.metrics.observe(status, elapsed)
            if self.access_log:
                target = f"{scope.path}?{scope.query_string}" if scope.query_string else scope.path
                client = scope.client.rpartition(":")[0].strip("[]") or scope.client
                access_log.info("%s %s %s %d %.2fms", client, scope.method, target[:1024], status, elapsed * 1000)
            if not handed and _may_have_body(scope):
                # Answered without reading it all (a 404, a refused login): granian would close the connection
                # over the unread rest, resetting the native side's hand-over that is still sending it.
                await discard_unread_body(proto)
        finally:
            current_request_id.reset(bound)

    async def _serve(self, scope: Scope, proto: HTTPProtocol) -> int:
        """Answer one request; returns the status answered."""
        try:
            resolved = self.routes.resolve(scope.path, scope.headers.get("host"))
        except InvalidTenantId:
            send_tenant_error(proto, scope, 400, "Invalid tenant id: it must be a DNS label (a-z, 0-9, '-', at most 63).")
            return 400
        if resolved is None:
            recorder = StatusRecorder(proto)
            await self._own.dispatch(scope, recorder)
            return recorder.status
        tenant_id, forward_path, route = resolved
        if route is None and not self.watcher.ready.is_set():
            # Just started: wait (bounded) for the first routing table rather than deny a real tenant.
            try:
                await asyncio.wait_for(self.watcher.ready.wait(), FIRST_TABLE_WAIT_SECONDS)
            except TimeoutError:
                send_tenant_error(proto, scope, 503, "The gateway has no routing table yet; retry shortly.",
                                  headers=[("retry-after", "1")])
                return 503
            route = self.routes.get(tenant_id)
        if route is None:
            send_tenant_error(proto, scope, 404, "Tenant not found.")
            return 404
        if not route[2] and self.watcher.inactive.get(tenant_id) == "moving":
            route = await self._wait_while_moving(tenant_id)
            if route is None:
                send_tenant_error(proto, scope, 404, "Tenant not found.")
                return 404
        address, epoch, active = route
        if not active:
            status, message = _INACTIVE.get(self.watcher.inactive.get(tenant_id, ""), (503, "Tenant unavailable."))
            send_tenant_error(proto, scope, status, message, headers=[("retry-after", "1")] if status == 503 else None)
            return status
        local = self._local_nodes.get(address)
        if local is not None:
            return await local(tenant_id, epoch, forward_path, scope, proto)
        if self.proxy is None or not address.startswith(("http://", "https://")):
            log.warning("no way to reach node %s of tenant %s", address, tenant_id)
            send_tenant_error(proto, scope, 502, "The tenant's node is unreachable.")
            return 502
        try:
            # the native data path's spelling of the path it handed over (a direct client's is dropped)
            raw = node_raw_path(scope.headers.get(RAW_PATH_HEADER), tenant_id, forward_path) \
                if self.trust_client_header else None
            return await self.proxy.forward(scope, proto, Target(address, tenant_id, epoch, forward_path, raw),
                                            self._reroute)
        except Exception:  # noqa: BLE001 - a bug in the data path must not take the gateway down
            log.exception("proxying a request of tenant %s to %s failed", tenant_id, address)
            try:
                send_tenant_error(proto, scope, 502, "The gateway could not forward the request.")
            except Exception:  # noqa: BLE001 - the response had already started
                pass
            return 502

    async def _wait_while_moving(self, tenant_id: str) -> Route | None:
        """The tenant's route once it is no longer moving, or its (still inactive) route after
        :attr:`move_wait_seconds`; None when the tenant disappeared."""
        deadline = asyncio.get_running_loop().time() + self.move_wait_seconds
        while True:
            route = self.routes.get(tenant_id)
            if route is None or route[2] or self.watcher.inactive.get(tenant_id) != "moving":
                self.metrics.move_wait("served" if route is not None and route[2] else "changed")
                return route
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not await self.watcher.wait_for_change(remaining):
                self.metrics.move_wait("timeout")
                return route

    async def _reroute(self, target: Target, reason: str) -> Target | None:
        """The proxy's second chance: a new target when the tenant's route changed from ``target``.

        ``reason`` "unreachable": only a route that already changed counts (or a move in progress, which is
        waited for). "moved": the node knows a newer epoch than our table, so wait (bounded) for the table
        to catch up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.move_wait_seconds
        while True:
            route = self.routes.get(target.tenant_id)
            if route is None:
                return None
            address, epoch, active = route
            if active and (address != target.address or epoch != target.epoch):
                if not address.startswith(("http://", "https://")):
                    return None  # now on the in-process node; the client retries
                return Target(address, target.tenant_id, epoch, target.forward_path, target.raw_path)
            moving = not active and self.watcher.inactive.get(target.tenant_id) == "moving"
            if not moving and (reason == "unreachable" or not active):
                return None
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.watcher.wait_for_change(remaining):
                return None

    def _may_read_metrics(self, scope: Scope) -> bool:
        return self.metrics_token is None or bearer_token_matches(scope.headers.get("authorization"),
                                                                  self.metrics_token)

    async def _metrics(self, request: Request) -> None:
        states = {address: "closed" for address, _, _ in self.routes.snapshot().values()
                  if address.startswith(("http://", "https://"))}
        if self.proxy is not None:
            states.update(self.proxy.breaker_states())
        native = self.native_stats() if self.native_stats is not None else None
        body = self.metrics.render(states, self.routes.version, len(self.routes), native)
        request.proto.response_bytes(200, METRICS_HEADERS, body)

