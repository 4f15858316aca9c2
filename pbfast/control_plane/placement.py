"""Placement: which node serves a tenant. Pure functions over registry snapshots."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping

from pbfast.cluster.tenant_record import TenantRecord
from pbfast.control_plane.node_record import NodeRecord

__all__ = ["assigned_counts", "place"]


def assigned_counts(tenants: Iterable[TenantRecord]) -> Counter[str]:
    """Tenants assigned per node id."""
    return Counter(t.node_id for t in tenants if t.node_id)


def place(tenant_ids: Iterable[str], nodes: Mapping[str, NodeRecord],
          counts: Mapping[str, int]) -> list[tuple[str, str]]:
    """Spread ``tenant_ids`` over up nodes, each to the least-loaded node at that moment.

    Load is assigned tenants / ``maxTenants`` (a node's ``--max-tenants`` counts *open* tenants; assigned
    ones are loaded on demand and may be more). Ties go to the node with the smaller id, so every member
    computes the same plan from the same state. Returns ``(tenant_id, node_id)``; empty without up nodes.
    """
    heap = [(counts.get(node_id, 0) / max(1, node.max_tenants), node_id)
            for node_id, node in nodes.items() if node.up]
    if not heap:
        return []
    heapq.heapify(heap)
    plan = []
    assigned = dict(counts)
    for tenant_id in tenant_ids:
        _, node_id = heapq.heappop(heap)
        plan.append((tenant_id, node_id))
        assigned[node_id] = assigned.get(node_id, 0) + 1
        heapq.heappush(heap, (assigned[node_id] / max(1, nodes[node_id].max_tenants), node_id))
    return plan
