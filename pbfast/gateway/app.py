"""The gateway's HTTP application (RSGI).

Each request is resolved to a tenant by the native :class:`~pbfast.primitives.RoutingTable` in one call,
from the path prefix ``/t/{id}/...`` or the Host ``{id}.<base-domain>``. Requests that name no tenant are
the gateway's own (``GET /api/health``). In all-in-one the tenant's node is called in-process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pbfast.gateway.routes import RouteWatcher
from pbfast.http import HTTPProtocol, Router, Scope, health, send_error
from pbfast.logs import component_logger
from pbfast.primitives import InvalidTenantId

__all__ = ["GatewayApp", "LocalNode"]

log = component_logger("Gateway")

# In-process hop to a node: (tenant_id, epoch, forward_path, scope, proto) -> None.
LocalNode = Callable[[str, int, str, Scope, HTTPProtocol], Awaitable[None]]

_INACTIVE = {
    "suspended": (403, "The tenant is suspended."),
    "moving": (503, "The tenant is moving to another node; retry shortly."),
    "unplaced": (503, "The tenant is not placed on a node yet; retry shortly."),
}


class GatewayApp:
    """RSGI app of the gateway. Thread-safety: event loop only; the routing table is lock-free for
    readers and replaced by the route watcher."""

    def __init__(self, watcher: RouteWatcher, local_nodes: dict[str, LocalNode] | None = None) -> None:
        self.watcher = watcher
        self.routes = watcher.routes
        self._local_nodes = local_nodes or {}
        self._own = Router()
        self._own.add("GET", "/api/health", health)

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        try:
            resolved = self.routes.resolve(scope.path, scope.headers.get("host"))
        except InvalidTenantId:
            send_error(proto, 400, "Invalid tenant id: it must be a DNS label (a-z, 0-9, '-', at most 63).")
            return
        if resolved is None:
            await self._own.dispatch(scope, proto)
            return
        tenant_id, forward_path, route = resolved
        if route is None:
            send_error(proto, 404, "Tenant not found.")
            return
        address, epoch, active = route
        if not active:
            status, message = _INACTIVE.get(self.watcher.inactive.get(tenant_id, ""), (503, "Tenant unavailable."))
            send_error(proto, status, message, headers=[("retry-after", "1")] if status == 503 else None)
            return
        local = self._local_nodes.get(address)
        if local is None:
            log.warning("no way to reach node %s of tenant %s", address, tenant_id)
            send_error(proto, 502, "The tenant's node is unreachable.")
            return
        await local(tenant_id, epoch, forward_path, scope, proto)
