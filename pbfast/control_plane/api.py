"""The control plane's HTTP API under ``/api/cp/`` (see ``openapi.py`` for the reference document), one
module per group of routes: :mod:`.tenants_api`, :mod:`.handover_api` (moves and in-place restores),
:mod:`.nodes_api` (nodes, heartbeats, the route feed); what they share is :mod:`.api_context`.

Thread-safety: event loop only; reads the registry's replicated state.
"""

from __future__ import annotations

from pbfast.control_plane.api_context import ApiContext
from pbfast.control_plane.handover_api import RESTORE_WORST_CASE_SECONDS, HandoverApi
from pbfast.control_plane.node_client import NodeClient
from pbfast.control_plane.nodes_api import NodesApi
from pbfast.control_plane.raft import RaftMember
from pbfast.control_plane.routes import RouteFeed
from pbfast.control_plane.tenants_api import TenantsApi, tenant_json

__all__ = ["RESTORE_WORST_CASE_SECONDS", "ControlPlaneApi", "tenant_json"]


class ControlPlaneApi:
    """Every handler of ``/api/cp/...``, by the name the routing table uses."""

    def __init__(self, member: RaftMember, feed: RouteFeed, nodes: NodeClient, node_timeout: float = 5.0) -> None:
        self.context = ApiContext(member, feed, nodes, node_timeout)
        self.member = member
        tenants, handover, cluster = TenantsApi(self.context), HandoverApi(self.context), NodesApi(self.context)
        self.create_tenant = tenants.create_tenant
        self.list_tenants = tenants.list_tenants
        self.get_tenant = tenants.get_tenant
        self.update_tenant = tenants.update_tenant
        self.delete_tenant = tenants.delete_tenant
        self.upsert_superuser = tenants.upsert_superuser
        self.import_data = tenants.import_data
        self.export_data = tenants.export_data
        self.move_tenant = handover.move_tenant
        self.restore_tenant = handover.restore_tenant
        self.list_nodes = cluster.list_nodes
        self.register_node = cluster.register_node
        self.remove_node = cluster.remove_node
        self.heartbeat = cluster.heartbeat
        self.bare_heartbeat = cluster.bare_heartbeat  # any thread but the loop's: see NodesApi.bare_heartbeat
        self.push_pending_superuser = cluster.push_pending_superuser
        self.assignments_of = cluster.assignments_of
        self.routes = cluster.routes
