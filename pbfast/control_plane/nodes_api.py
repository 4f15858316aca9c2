"""The tenant nodes of ``/api/cp/nodes`` (registration, heartbeats and what each must serve, removal) and
the gateway's route feed ``/api/cp/routes``.

Thread-safety: event loop only, but :meth:`NodesApi.bare_heartbeat` (any other thread).
"""

from __future__ import annotations

import time
from typing import Any

from pbfast.cluster.heartbeat import Assignments, Heartbeat, HeartbeatAnswer, WireError
from pbfast.control_plane.api_context import HTTP_ERRORS, ApiContext
from pbfast.control_plane.node_record import NodeRecord
from pbfast.control_plane.placement import assigned_counts
from pbfast.control_plane.validation import parse_node_registration
from pbfast.http import ApiError, Request
from pbfast.logs import component_logger
from pbfast.primitives import is_valid_tenant_id
from pbfast.timefmt import format_datetime

__all__ = ["NodesApi", "node_json"]

log = component_logger("ControlPlane")


def node_json(node: NodeRecord, assigned: int) -> dict[str, Any]:
    return {
        "id": node.id,
        "address": node.address,
        "status": node.status,
        "maxTenants": node.max_tenants,
        "assignedTenants": assigned,
        "openTenants": node.open_tenants,
        "load": round(assigned / max(1, node.max_tenants), 4),
        "registeredAt": format_datetime(node.registered_at),
        "lastHeartbeatAt": format_datetime(node.last_heartbeat_at),
    }


class NodesApi:
    """Handlers of the nodes' routes and the route feed."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.registry = context.registry
        self.nodes = context.nodes
        self.member = context.member

    async def list_nodes(self, request: Request) -> None:
        counts = assigned_counts(self.registry.tenant_records())
        nodes = sorted(self.registry.nodes_snapshot().values(), key=lambda n: n.id)
        request.send_json(200, {"items": [node_json(n, counts.get(n.id, 0)) for n in nodes]})

    async def register_node(self, request: Request) -> None:
        node_id = request.params["id"]
        if not is_valid_tenant_id(node_id):
            raise ApiError(400, "Invalid node id: it must be a DNS label.")
        address, max_tenants, instance = parse_node_registration(await request.json_object())
        stored = await self.context.commit(self.registry.register_node, node_id, address, max_tenants, time.time(),
                                           instance, self.context.node_timeout)
        node = NodeRecord.from_stored(stored)
        log.info("node %s registered at %s (max %d open tenants)", node_id, address, max_tenants)
        request.send_json(200, node_json(node, assigned_counts(self.registry.tenant_records()).get(node_id, 0)))

    async def heartbeat(self, request: Request) -> None:
        node_id = request.params["id"]
        if self.registry.node(node_id) is None:
            raise ApiError(404, "Unknown node; register first.")
        try:
            heartbeat = Heartbeat.from_json(await request.json_object(limit=64 << 20))
        except WireError as err:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {err.field: {"code": err.code, "message": str(err)}}) from None
        usage = {tenant_id: entry.counters() for tenant_id, entry in heartbeat.usage.items()}
        await self.context.commit(self.registry.heartbeat, node_id, time.time(), heartbeat.open_tenants, usage,
                                  heartbeat.instance_id)
        for tenant_id in heartbeat.superusers_applied:  # the node has the first superuser now: forget its hash
            tenant = self.registry.tenant_record(tenant_id)
            if tenant is not None and tenant.superuser and tenant.node_id == node_id:
                await self.context.commit(self.registry.update_tenant, tenant_id, {"superuser": None}, time.time())
        request.send_json(200, self.assignments_of(node_id).to_json())

    def bare_heartbeat(self, node_id: str, heartbeat: Heartbeat, timeout: float) -> float:
        """A bare heartbeat (no usage) of a node in this process, from its lease keeper's thread
        (:mod:`pbfast.tenant_node.lease_keeper`), recorded as :meth:`heartbeat` records one but without the
        event loop, which is as busy as the node's: returns the node timeout the lease is reckoned by. Raises
        ApiError (refused) or :class:`pbfast.control_plane.raft.CommandFailed`. Thread-safety: any thread
        but the event loop's (it blocks until committed)."""
        if self.registry.node(node_id) is None:
            raise ApiError(404, "Unknown node; register first.")
        outcome, value = self.member.submit_blocking(self.registry.heartbeat, node_id, time.time(),
                                                     heartbeat.open_tenants, {}, heartbeat.instance_id,
                                                     timeout=timeout)
        if outcome != "ok":
            raise ApiError(HTTP_ERRORS.get(outcome, 400), value)
        return self.context.node_timeout

    async def push_pending_superuser(self, tenant_id: str) -> None:
        """After a placement: hand the tenant's first superuser to its node now rather than at the next
        heartbeat, so the owner can log in as soon as the tenant answers."""
        tenant = self.registry.tenant_record(tenant_id)
        if tenant is None or tenant.superuser is None or not tenant.node_id:
            return
        try:
            await self.context.node_superuser(tenant, tenant.superuser.email, tenant.superuser.password_hash)
        except ApiError as err:
            log.warning("tenant %s: first superuser not handed over yet: %s", tenant_id, err.message)

    def assignments_of(self, node_id: str) -> HeartbeatAnswer:
        """What a node must serve: its tenants with epoch, status and quotas, and tenants it must drop."""
        tenants = {t.id: t.assignment for t in self.registry.tenant_records(node_id)}
        deleted = sorted(tid for tid, stone in self.registry.tombstones_snapshot().items() if stone["nodeId"] == node_id)
        return HeartbeatAnswer(node_id, Assignments(tenants, deleted), self.registry.routes_version,
                               self.context.node_timeout)

    async def remove_node(self, request: Request) -> None:
        node_id = request.params["id"]
        node = self.registry.node(node_id)
        if node is None:
            raise ApiError(404, "Unknown node.")
        if node.up:
            raise ApiError(409, "The node is up; stop it first (its tenants are re-placed once it is down).")
        if assigned_counts(self.registry.tenant_records()).get(node_id):
            raise ApiError(409, "Tenants are still assigned to the node; wait until they are re-placed.")
        await self.context.commit(self.registry.remove_node, node_id)
        request.proto.response_empty(204, [])

    # ---- routes ---------------------------------------------------------------------------------

    async def routes(self, request: Request) -> None:
        since = request.query_int("since", -1, -1, 2**62)
        timeout = request.query_int("timeout", 25, 0, 60)
        if since >= 0:
            await self.context.feed.wait_newer_than(since, timeout)
        request.send_json(200, self.context.feed.table())
