"""The routing table gateways follow: tenant -> node address, status and fencing epoch, versioned.

``GET /api/cp/routes?since=V`` long-polls: it answers as soon as the registry's ``routes_version`` exceeds
``V`` (or at the timeout), so a gateway sees a change within one network round trip of its commit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pbfast.cluster.tenant_record import TenantRecord
from pbfast.control_plane.node_record import NodeRecord
from pbfast.control_plane.registry import Registry

__all__ = ["RouteFeed", "route_status"]


def route_status(tenant: TenantRecord, node: NodeRecord | None) -> str:
    """``suspended``, ``moving`` (gateways hold requests), ``unplaced`` (no node yet) or ``active``."""
    if tenant.status != "active":
        return tenant.status
    if tenant.moving:
        return "moving"
    if node is None:
        return "unplaced"
    return "active"


class RouteFeed:
    """Builds the route table from the registry (cached per version) and wakes long-polls on changes.

    Thread-safety: :meth:`notify_threadsafe` may be called from any thread (the Raft thread calls it after
    every command); everything else runs on the event loop given to :meth:`attach`.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._cached: tuple[int, dict[str, Any]] | None = None
        self._closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """Answer every pending long-poll now (shutdown)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def version(self) -> int:
        return self._registry.routes_version

    def table(self) -> dict[str, Any]:
        version, tenants, nodes = self._registry.routing_state()
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        routes = []
        for tenant in sorted(tenants, key=lambda t: t.id):
            node = nodes.get(tenant.node_id) if tenant.node_id else None
            routes.append({
                "tenantId": tenant.id,
                "nodeId": tenant.node_id,
                "address": node.address if node else None,
                "status": route_status(tenant, node),
                "epoch": tenant.epoch,
            })
        table = {"version": version, "routes": routes}
        self._cached = (version, table)
        return table

    async def wait_newer_than(self, version: int, timeout: float) -> None:
        """Return once the routes version exceeds ``version``, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.version <= version and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return
