"""The gateway's copy of the routing table, kept current by long-polling the control plane.

The watcher asks any control plane member for ``/api/cp/routes?since=<version>``; the call returns as soon
as the table changes, so changes arrive within a round trip. While no member answers, the gateway keeps
serving from the last table it had. Requests that wait for a route to change (a tenant that is moving)
await :meth:`RouteWatcher.wait_for_change` instead of polling.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pbfast.cp_client import ControlPlaneClient, ControlPlaneError, ControlPlaneUnavailable
from pbfast.logs import component_logger
from pbfast.primitives import RoutingTable

__all__ = ["RouteWatcher"]

log = component_logger("Gateway")

LONG_POLL_SECONDS = 25
RETRY_SECONDS = 0.5


class RouteWatcher:
    """Feeds a :class:`RoutingTable` (lock-free for the request path) plus the statuses of inactive tenants.

    Thread-safety: runs on the gateway's event loop; readers of ``inactive`` read a dict that is replaced
    whole, never mutated. :meth:`apply` and :meth:`wait_for_change` must run on that loop.
    """

    def __init__(self, client: ControlPlaneClient, routes: RoutingTable) -> None:
        self.client = client
        self.routes = routes
        self.inactive: dict[str, str] = {}  # tenant -> "suspended" | "moving" | "unplaced"
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()  # replaced (after being set) by every apply()
        self._unreachable_reported = False

    def apply(self, table: dict[str, Any]) -> None:
        rows, inactive = [], {}
        for route in table["routes"]:
            status = route["status"]
            active = status == "active" and bool(route["address"])
            rows.append((route["tenantId"], route["address"] or "", int(route["epoch"]), active))
            if not active:
                inactive[route["tenantId"]] = status
        self.routes.replace(rows, int(table["version"]))
        self.inactive = inactive
        self.ready.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until the next table is applied; False when ``timeout`` seconds passed first.

        A caller that looked at the table and then calls this cannot miss a change in between: both run on
        the event loop without an ``await`` between them."""
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        while True:
            since = self.routes.version if self.ready.is_set() else -1
            try:
                table = await self.client.request(
                    "GET", "/api/cp/routes",
                    params={"since": since, "timeout": LONG_POLL_SECONDS} if since >= 0 else None,
                    timeout=LONG_POLL_SECONDS + 10)
            except (ControlPlaneUnavailable, ControlPlaneError) as err:
                if not self._unreachable_reported:
                    log.warning("route watch: %s; serving the last table (version %d)", err, self.routes.version)
                    self._unreachable_reported = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._unreachable_reported:
                log.info("route watch: control plane reachable again")
                self._unreachable_reported = False
            if int(table["version"]) != self.routes.version or not self.ready.is_set():
                self.apply(table)
                log.debug("routing table version %d (%d tenants)", self.routes.version, len(self.routes))
