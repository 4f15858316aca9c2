"""The replicated tenant and node registry: a deterministic state machine applied by every Raft member.

Every method decorated with ``@replicated`` is a Raft command: the member that receives an API call decides
everything that needs a clock or a choice (timestamps, placement) *before* submitting, and passes it as
arguments, so applying a command gives the same result on every member. Commands return plain tuples:
``("ok", value)`` or ``(error_kind, message)`` with ``error_kind`` in :data:`ERRORS`.

pysyncobj numbers the commands by their sorted names and writes those numbers into its journal, which a
member replays when it restarts: a new command whose name sorts before an existing one would renumber it,
and a journal written by the previous version would be replayed into the wrong commands. So a new command
takes a name that sorts after every existing one (:data:`COMMAND_ORDER`, checked by the tests), and an
existing command only gains arguments with defaults (older journal entries lack them).

Thread-safety: pysyncobj applies commands on its own thread while the API reads from the event loop. Every
command runs under the registry's lock, and readers use the ``*_snapshot``/lookup methods, which copy
under the same lock; records are replaced, never mutated in place, so a copied record stays consistent.
``on_change`` callbacks run on the Raft thread, after the lock is released, and must not block.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pysyncobj import SyncObjConsumer, replicated

from pbfast.cluster.tenant_record import TenantChanges, TenantRecord
from pbfast.control_plane.node_record import NODE_DOWN, NODE_UP, NodeRecord

__all__ = ["ERRORS", "MAX_INCARNATION_HISTORY", "NODE_DOWN", "NODE_UP", "Registry", "TENANT_STATUSES"]

TENANT_STATUSES = ("active", "suspended")
DURABILITY_MODES = ("async", "sync")
# A tenant's database counters in its usage of the day, summed from the heartbeats (see ``heartbeat``).
DB_USAGE_COUNTERS = ("dbTimeLimited", "dbQueueRejected", "dbWaitMs")
ERRORS = ("not_found", "conflict", "invalid")
MAX_INCARNATION_HISTORY = 20  # earlier lives of a tenant record an in-place restore can still reach

# The Raft commands in pysyncobj's numbering (sorted names): append only, never insert or rename.
COMMAND_ORDER = ("assign", "barrier", "create_tenant", "delete_tenant", "heartbeat", "mark_node_down",
                 "purge_tombstones", "register_node", "remove_node", "set_moving", "update_tenant",
                 "update_tenant_with_new_incarnation")

Result = tuple[str, Any]
F = TypeVar("F", bound=Callable[..., Result])


def _locked(command: F) -> F:
    """Run a command under the registry lock, then notify ``on_change`` outside it."""

    @functools.wraps(command)
    def run(self: Registry, *args: Any) -> Result:
        with self._lock:
            result = command(self, *args)
        if self.on_change is not None:
            self.on_change()
        return result

    return run  # type: ignore[return-value]


class Registry(SyncObjConsumer):
    """Tenants, nodes and the routing table version, replicated by Raft.

    State (all plain dicts, pickled into pysyncobj's snapshots):

    - ``tenants``: id -> tenant record in its stored form (read as :class:`pbfast.cluster.tenant_record.TenantRecord`
      through :meth:`tenant_record` and :meth:`tenant_records`)
    - ``nodes``: node id -> ``{id, address, maxTenants, status, registeredAt, lastHeartbeatAt, openTenants}``
    - ``tombstones``: deleted tenant id -> ``{deletedAt, nodeId}`` (kept until the replica is purged)
    - ``routes_version``: bumped by every command that changes where or whether a tenant is served
    """

    def __init__(self) -> None:
        # Set before SyncObjConsumer.__init__ records its own attributes, so it is never snapshotted.
        self.on_change: Callable[[], None] | None = None
        self._lock = threading.RLock()
        # id -> (stored record, its typed form): records are replaced, never changed, so one is typed once
        self._typed: dict[str, tuple[dict[str, Any], TenantRecord]] = {}
        super().__init__()
        self.tenants: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.tombstones: dict[str, dict[str, Any]] = {}
        self.routes_version = 0

    def _changed(self, routes: bool) -> None:
        if routes:
            self.routes_version += 1

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self._lock:
            super()._deserialize(data)
        if self.on_change is not None:
            self.on_change()

    # ---- reads (any thread) ---------------------------------------------------------------------

    def nodes_snapshot(self) -> dict[str, NodeRecord]:
        with self._lock:
            return {node_id: NodeRecord.from_stored(node) for node_id, node in self.nodes.items()}

    def tombstones_snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.tombstones)

    def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.tenants.get(tenant_id)

    def tenant_record(self, tenant_id: str) -> TenantRecord | None:
        with self._lock:
            stored = self.tenants.get(tenant_id)
            return None if stored is None else self._record(stored)

    def tenant_records(self, node_id: str | None = None) -> list[TenantRecord]:
        """Every tenant, or (with ``node_id``) those placed on that node."""
        with self._lock:
            if len(self._typed) > len(self.tenants):  # deleted tenants
                self._typed = {tid: typed for tid, typed in self._typed.items() if tid in self.tenants}
            if node_id is not None:
                return [self._record(stored) for stored in self.tenants.values() if stored["nodeId"] == node_id]
            return [self._record(stored) for stored in self.tenants.values()]

    def _record(self, stored: dict[str, Any]) -> TenantRecord:
        cached = self._typed.get(stored["id"])
        if cached is not None and cached[0] is stored:
            return cached[1]
        record = TenantRecord.from_stored(stored)
        self._typed[record.id] = (stored, record)
        return record

    def node(self, node_id: str) -> NodeRecord | None:
        with self._lock:
            stored = self.nodes.get(node_id)
            return None if stored is None else NodeRecord.from_stored(stored)

    def routing_state(self) -> tuple[int, list[TenantRecord], dict[str, NodeRecord]]:
        """``(routes_version, tenants, nodes)`` read together, consistently."""
        with self._lock:
            return self.routes_version, self.tenant_records(), self.nodes_snapshot()

    @replicated
    def barrier(self) -> Result:
        """A no-op: once it has been applied on a member, everything committed before it has been too."""
        return "ok", None

    # ---- tenants --------------------------------------------------------------------------------

    @replicated
    @_locked
    def create_tenant(self, record: dict[str, Any]) -> Result:
        tenant_id = record["id"]
        if tenant_id in self.tenants:
            return "conflict", f"A tenant with id {tenant_id!r} already exists."
        if tenant_id in self.tombstones:
            return "conflict", f"Tenant id {tenant_id!r} was deleted and is reserved until its data is purged."
        tenant = dict(record)
        node_id = tenant.get("nodeId")
        if node_id is not None and self.nodes.get(node_id, {}).get("status") != NODE_UP:
            tenant["nodeId"] = None
        tenant["epoch"] = 1 if tenant["nodeId"] else 0
        tenant["placedSince"] = tenant["epoch"] if tenant["nodeId"] else None
        self.tenants[tenant_id] = tenant
        self._changed(routes=True)
        return "ok", copy.deepcopy(tenant)

    @replicated
    @_locked
    def update_tenant(self, tenant_id: str, changes: TenantChanges, now: float) -> Result:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return "not_found", "Tenant not found."
        updated = {**tenant, **changes, "updatedAt": now}
        self.tenants[tenant_id] = updated
        self._changed(routes=updated.get("status") != tenant.get("status"))
        return "ok", copy.deepcopy(updated)

    @replicated
    @_locked
    def delete_tenant(self, tenant_id: str, now: float) -> Result:
        tenant = self.tenants.pop(tenant_id, None)
        if tenant is None:
            return "not_found", "Tenant not found."
        self.tombstones[tenant_id] = {"deletedAt": now, "nodeId": tenant.get("nodeId")}
        self._changed(routes=True)
        return "ok", copy.deepcopy(tenant)

    @replicated
    @_locked
    def purge_tombstones(self, tenant_ids: list[str]) -> Result:
        purged = [tid for tid in tenant_ids if self.tombstones.pop(tid, None) is not None]
        self._changed(routes=False)
        return "ok", purged

    @replicated
    @_locked
    def assign(self, moves: list[tuple[str, str | None, int]], now: float, only_homeless: bool = False,
               only_moving: bool = False, moving_since: float | None = None) -> Result:
        """Place tenants: ``(tenant_id, node_id or None, expected_epoch)``.

        Each applied move bumps the tenant's fencing epoch, so the previous node's claim is stale, and clears
        its move marker. A move whose expected epoch no longer matches (someone else moved the tenant first)
        or whose target is not up is skipped; with ``only_homeless`` (the leader re-placing tenants of down
        nodes) so is a tenant whose node is up again by now: its heartbeat renewed the node's lease, so the
        node serves it. With ``only_moving`` (the leader putting back a tenant whose move or restore never
        finished) so is a tenant no longer marked moving since ``moving_since`` (its ``movingSince``; None
        for a marker recorded without one): that flow ended after all, or another one began. The result
        lists the tenant ids that moved.
        """
        moved = []
        for tenant_id, node_id, expected_epoch in moves:
            tenant = self.tenants.get(tenant_id)
            if tenant is None or tenant["epoch"] != expected_epoch:
                continue
            if only_homeless and self.nodes.get(tenant["nodeId"] or "", {}).get("status") == NODE_UP:
                continue
            if only_moving and (not tenant.get("moving") or tenant.get("movingSince") != moving_since):
                continue
            if node_id is not None and self.nodes.get(node_id, {}).get("status") != NODE_UP:
                continue
            # placedSince: the first epoch of the tenant's uninterrupted stay on its node (a node whose copy was
            # last written under an epoch since then knows nobody else wrote the replica meanwhile).
            same_node = node_id is not None and node_id == tenant["nodeId"] and tenant.get("placedSince") is not None
            self.tenants[tenant_id] = {**tenant, "nodeId": node_id, "epoch": expected_epoch + 1,
                                       "placedSince": tenant["placedSince"] if same_node else (
                                           expected_epoch + 1 if node_id is not None else None),
                                       "moving": None, "movingSince": None, "updatedAt": now}
            moved.append(tenant_id)
        self._changed(routes=bool(moved))
        return "ok", moved

    @replicated
    @_locked
    def set_moving(self, tenant_id: str, target_node_id: str | None, expected_epoch: int,
                   since: float | None = None) -> Result:
        """Mark a planned move or in-place restore (``target_node_id``, at time ``since``: ``movingSince``,
        by which the leader tells a marker whose flow never finished) or clear it (None); gateways hold the
        tenant's requests meanwhile.

        Setting conflicts when a marker is set already (another move or restore is under way: only one
        flow may release the tenant). Clearing with ``since`` clears only the marker set at that time (the
        caller's own), so a flow never clears another one's; without it (records from before markers had a
        time) any marker."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return "not_found", "Tenant not found."
        if tenant["epoch"] != expected_epoch:
            return "conflict", "The tenant was moved meanwhile; try again."
        if target_node_id is not None and tenant.get("moving"):
            return "conflict", "The tenant is being moved or restored already; try again once that is over."
        if target_node_id is None and not tenant.get("moving"):
            return "ok", copy.deepcopy(tenant)  # nothing to clear
        if target_node_id is None and since is not None and tenant.get("movingSince") != since:
            return "conflict", "The tenant's move marker belongs to another move or restore."
        self.tenants[tenant_id] = {**tenant, "moving": target_node_id,
                                   "movingSince": since if target_node_id is not None else None}
        self._changed(routes=True)
        return "ok", copy.deepcopy(self.tenants[tenant_id])

    @replicated
    @_locked
    def update_tenant_with_new_incarnation(self, tenant_id: str, expected_epoch: int, incarnation: str, seed: dict[str, str],
                       now: float) -> Result:
        """Roll a tenant back in place: it starts a new ``incarnation`` (its own replica path) whose first
        state is ``seed`` (``{"incarnation", "at"}``: an earlier incarnation's replica at a point in time),
        on the same node, under epoch + 1 so the node's claim on the old incarnation is stale.

        The incarnation it replaces goes to ``history`` (the last :data:`MAX_INCARNATION_HISTORY`), with
        when it was live and its own seed, so a later restore can still reach it. Conflicts when the epoch
        changed since the caller read it (moved, re-placed or restored meanwhile)."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return "not_found", "Tenant not found."
        if tenant["epoch"] != expected_epoch:
            return "conflict", "The tenant was moved or restored meanwhile; try again."
        history = list(tenant.get("history") or [])
        known = {entry["incarnation"] for entry in history} | {tenant.get("incarnation", "0")}
        if incarnation in known:
            return "invalid", f"Incarnation {incarnation!r} of tenant {tenant_id!r} exists already."
        ended = {
            "incarnation": tenant.get("incarnation", "0"),
            "startedAt": tenant.get("incarnationStartedAt", tenant["createdAt"]),
            "endedAt": now,
            "seed": tenant.get("seed"),
        }
        self.tenants[tenant_id] = {
            **tenant,
            "incarnation": incarnation,
            "incarnationStartedAt": now,
            "history": [*history, ended][-MAX_INCARNATION_HISTORY:],
            "seed": {"incarnation": seed["incarnation"], "at": seed["at"]},
            "epoch": expected_epoch + 1,
            "placedSince": expected_epoch + 1,  # a new incarnation: no copy of it exists yet
            "moving": None,
            "movingSince": None,
            "updatedAt": now,
        }
        self._changed(routes=True)
        return "ok", copy.deepcopy(self.tenants[tenant_id])

    # ---- nodes ----------------------------------------------------------------------------------

    @replicated
    @_locked
    def register_node(self, node_id: str, address: str, max_tenants: int, now: float, instance: str | None = None,
                      node_timeout: float | None = None) -> Result:
        """Register (again) the process ``instance`` as node ``node_id``. Refused ("conflict") while another
        instance holds the id and is live (a heartbeat within ``node_timeout`` of ``now``): two processes must
        never act on one node's assignments. Entries written before instances existed carry none."""
        node = self.nodes.get(node_id)
        held_by = node.get("instanceId") if node else None
        if node is not None and instance is not None and held_by not in (None, instance) \
                and node["status"] == NODE_UP and node_timeout is not None \
                and now - node["lastHeartbeatAt"] < node_timeout:
            return "conflict", (f"Node id {node_id!r} is held by another running process (at {node['address']}); "
                                f"give this process its own --node-id, or stop the other one (this one may take "
                                f"the id {node_timeout:g} s after the other stops).")
        routes_changed = node is None or node["address"] != address or node["status"] != NODE_UP
        self.nodes[node_id] = {
            "id": node_id,
            "address": address,
            "maxTenants": max_tenants,
            "status": NODE_UP,
            "registeredAt": node["registeredAt"] if node else now,
            "lastHeartbeatAt": now,
            "openTenants": node["openTenants"] if node else 0,
            "instanceId": instance,
        }
        self._changed(routes=routes_changed)
        return "ok", dict(self.nodes[node_id])

    @replicated
    @_locked
    def heartbeat(self, node_id: str, now: float, open_tenants: int,
                  usage: dict[str, tuple[int, ...]], instance: str | None = None) -> Result:
        """Record a node's liveness and its tenants' usage ``{tenant: (requests_delta, storage_bytes,
        window_start[, time_limited_delta, queue_rejected_delta, wait_ms_delta])}`` (entries written before the
        database counters existed have three values); usage of tenants not assigned to the node is ignored."""
        node = self.nodes.get(node_id)
        if node is None:
            return "not_found", "Unknown node; register first."
        if instance is not None and node.get("instanceId") not in (None, instance):
            return "conflict", (f"Node id {node_id!r} is now held by another process (at {node['address']}); "
                                "this one must register again.")
        came_back = node["status"] != NODE_UP
        # Never backwards: a node may have two heartbeats in flight (a bare one beside a slow one), applied in
        # either order; the node's lease runs from its newest, so must the control plane's clock for it.
        last = max(node["lastHeartbeatAt"], now)
        self.nodes[node_id] = {**node, "status": NODE_UP, "lastHeartbeatAt": last, "openTenants": open_tenants}
        for tenant_id, (requests, storage_bytes, window_start, *database) in usage.items():
            tenant = self.tenants.get(tenant_id)
            if tenant is None or tenant.get("nodeId") != node_id:
                continue
            counted = tenant["usage"]
            if window_start > counted["periodStart"]:
                counted = {"apiRequests": 0, "periodStart": window_start}
            counted = {**counted, "apiRequests": counted["apiRequests"] + requests, "storageBytes": storage_bytes}
            for name, delta in zip(DB_USAGE_COUNTERS, database):
                counted[name] = counted.get(name, 0) + delta
            self.tenants[tenant_id] = {**tenant, "usage": counted}
        self._changed(routes=came_back)
        return "ok", None

    @replicated
    @_locked
    def mark_node_down(self, node_id: str, last_heartbeat_seen: float) -> Result:
        """Mark a silent node down, unless it sent a heartbeat after the one the leader judged by."""
        node = self.nodes.get(node_id)
        if node is None:
            return "not_found", "Unknown node."
        if node["lastHeartbeatAt"] != last_heartbeat_seen or node["status"] != NODE_UP:
            return "ok", False
        self.nodes[node_id] = {**node, "status": NODE_DOWN}
        self._changed(routes=True)
        return "ok", True

    @replicated
    @_locked
    def remove_node(self, node_id: str) -> Result:
        if self.nodes.pop(node_id, None) is None:
            return "not_found", "Unknown node."
        self._changed(routes=True)
        return "ok", None
