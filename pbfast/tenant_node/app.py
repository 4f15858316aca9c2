"""The tenant node's HTTP application (RSGI).

The node answers ``GET /api/health`` itself and serves tenants' PocketBase APIs. Gateways reach a tenant
either over HTTP or, in all-in-one, in-process through :meth:`TenantNodeApp.serve_tenant`.
"""

from __future__ import annotations

from pbfast.http import HTTPProtocol, Router, Scope, health
from pbfast.logs import component_logger
from pbfast.primitives import TenantCache

__all__ = ["TenantNodeApp"]

log = component_logger("TenantNode")


class TenantNodeApp:
    """RSGI app of one tenant node. Thread-safety: used from the event loop thread only; the
    ``TenantCache`` it holds is itself thread-safe."""

    def __init__(self, node_id: str, max_tenants: int) -> None:
        self.node_id = node_id
        self.open_tenants = TenantCache(max_tenants)
        self._node_routes = Router()
        self._node_routes.add("GET", "/api/health", health)
        self._tenant_routes = Router()

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        await self._node_routes.dispatch(scope, proto)

    async def serve_tenant(self, tenant_id: str, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        """Serve one request of ``tenant_id`` whose tenant-relative path is ``path``."""
        _, evicted = self.open_tenants.acquire(tenant_id)
        for closed in evicted:
            log.debug("closed tenant %s (least recently used)", closed)
        try:
            if path == "/api/health":
                await health(scope, proto)
                return
            await self._tenant_routes.dispatch(scope, proto, path)
        finally:
            for closed in self.open_tenants.release(tenant_id):
                log.debug("closed tenant %s (least recently used)", closed)
