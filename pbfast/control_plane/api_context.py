"""What every group of ``/api/cp/`` handlers shares: the Raft member and its registry, the route feed, the
client of the tenant nodes, and committing a command with its outcome as an HTTP error.

Writes become Raft commands (:meth:`RaftMember.submit`); pysyncobj forwards a follower's command to the
leader, and the answer is sent only once the command is committed and applied on this member, so a
client that got 200 can read its write back from this member. Reads are served from this member's copy.

Thread-safety: event loop only; reads the registry's replicated state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pbfast.cluster.tenant_record import TenantRecord
from pbfast.control_plane.node_client import NodeClient, NodeError
from pbfast.control_plane.raft import CommandFailed, RaftMember
from pbfast.control_plane.routes import RouteFeed
from pbfast.http import ApiError
from pbfast.primitives import is_valid_tenant_id

__all__ = ["HTTP_ERRORS", "PLACEMENT_WAIT_SECONDS", "ApiContext"]

PLACEMENT_WAIT_SECONDS = 5.0
HTTP_ERRORS = {"not_found": 404, "conflict": 409, "invalid": 400}  # a refused command's outcome -> status


class ApiContext:
    """The shared parts and helpers of the control plane's handlers."""

    def __init__(self, member: RaftMember, feed: RouteFeed, nodes: NodeClient, node_timeout: float = 5.0) -> None:
        self.member = member
        self.node_timeout = node_timeout  # sent with every heartbeat answer: the node's lease depends on it
        self.registry = member.registry
        self.feed = feed
        self.nodes = nodes

    async def commit(self, command: Any, *args: Any) -> Any:
        """Submit a registry command; its value once committed and applied here, or its refusal as an
        :class:`ApiError` (503 when the outcome is not known)."""
        try:
            outcome, value = await self.member.submit(command, *args)
        except CommandFailed as err:
            raise ApiError(503, f"The change was not committed: {err}. Retry the request.") from err
        if outcome != "ok":
            raise ApiError(HTTP_ERRORS.get(outcome, 400), value)
        return value

    def tenant(self, tenant_id: str) -> TenantRecord:
        """The tenant's record, or 404 (also for an id that cannot be a tenant's)."""
        tenant = self.registry.tenant_record(tenant_id) if is_valid_tenant_id(tenant_id) else None
        if tenant is None:
            raise ApiError(404, "Tenant not found.")
        return tenant

    async def commit_tenant(self, command: Any, *args: Any) -> TenantRecord:
        """:meth:`commit` of a command whose value is a tenant record (stored form)."""
        return TenantRecord.from_stored(await self.commit(command, *args))

    async def node_address(self, tenant: TenantRecord, wait: float = PLACEMENT_WAIT_SECONDS) -> str:
        """The address of the tenant's live node, waiting a little for a placement in progress."""
        deadline = time.monotonic() + wait
        while True:
            current = self.registry.tenant_record(tenant.id) or tenant
            node = self.registry.node(current.node_id or "")
            if node is not None and node.up and not current.moving:
                return node.address
            if time.monotonic() >= deadline:
                raise ApiError(503, "The tenant's node is not available; retry shortly.",
                               headers=[("retry-after", "2")])
            await asyncio.sleep(0.05)

    async def node_superuser(self, tenant: TenantRecord, email: str, password_hash: str) -> None:
        """Have the tenant's node create or update a superuser of the tenant."""
        try:
            address = await self.node_address(tenant)
            await self.nodes.upsert_superuser(address, tenant.id, email, password_hash)
        except NodeError as err:
            raise ApiError(err.status if err.status < 500 else 503, f"The tenant's node refused: {err}") from err
