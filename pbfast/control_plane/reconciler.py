"""The leader's housekeeping: mark silent nodes down, (re)place tenants that have no live node, put back
tenants a move or in-place restore left marked moving, and forget deleted tenants once their retention
period is over.

Only the Raft leader acts, and only after it has led for longer than the node timeout (so a new leader does
not declare every node dead before their first heartbeats reach it). Decisions are submitted as commands
carrying what they were based on (last heartbeat seen, tenant epochs), so a stale decision is a no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from pbfast.control_plane.node_record import NodeRecord
from pbfast.control_plane.placement import assigned_counts, place
from pbfast.control_plane.raft import CommandFailed, RaftMember
from pbfast.logs import component_logger

__all__ = ["STALE_MOVE_SECONDS", "Reconciler"]

log = component_logger("ControlPlane")

PLACEMENT_BATCH = 500
# A tenant marked moving for longer than this was left so by a move or in-place restore that never finished
# (the control plane member running it crashed or lost its quorum): well above the longest such flow
# (api.RESTORE_WORST_CASE_SECONDS, about 6.5 minutes: the node's release, 45 s, and a trial restore, up to
# 305 s, among others).
STALE_MOVE_SECONDS = 15 * 60.0


class Reconciler:
    """Runs :meth:`run` as a task on the event loop; every ``interval`` seconds it checks once."""

    def __init__(self, member: RaftMember, node_timeout: float = 5.0, interval: float = 0.25,
                 delete_retention: float = 7 * 86400,
                 on_placed: Callable[[str], Awaitable[None]] | None = None,
                 stale_move: float = STALE_MOVE_SECONDS) -> None:
        self.member = member
        self.on_placed = on_placed
        self.node_timeout = node_timeout
        self.delete_retention = delete_retention
        self.interval = interval
        self.stale_move = stale_move
        self._leading_since: float | None = None
        # Move markers recorded without a time (by an older control plane): when this leader first saw each.
        self._unstamped_moves: dict[tuple[str, int], float] = {}

    async def run(self) -> None:
        await self.member.catch_up()  # serve reads, and act, only with current state
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except CommandFailed as err:
                log.warning("housekeeping deferred: %s", err)
            except Exception:  # noqa: BLE001 - housekeeping must keep running
                log.exception("housekeeping failed")

    async def check_once(self) -> None:
        if not self.member.is_leader:
            self._leading_since = None
            self._unstamped_moves.clear()
            return
        now = time.time()
        if self._leading_since is None:
            self._leading_since = time.monotonic()
            log.info("this member leads the control plane now")
        settled = time.monotonic() - self._leading_since >= self.node_timeout
        registry = self.member.registry
        if settled:
            for node in registry.nodes_snapshot().values():
                if node.up and now - node.last_heartbeat_at > self.node_timeout:
                    _, marked = await self.member.submit(registry.mark_node_down, node.id, node.last_heartbeat_at)
                    if marked:
                        log.warning("node %s is down: no heartbeat for %.1f s", node.id, now - node.last_heartbeat_at)
        expired = [tid for tid, stone in registry.tombstones_snapshot().items()
                   if now - stone["deletedAt"] >= self.delete_retention]
        if expired:
            _, purged = await self.member.submit(registry.purge_tombstones, expired)
            log.info("retention over for %d deleted tenant(s); their ids are free again", len(purged))
        await self._put_back_stale_moves(now)
        nodes = registry.nodes_snapshot()
        tenants = registry.tenant_records()
        homeless = [t for t in tenants
                    if not t.moving and not _up(nodes, t.node_id)]
        if not homeless:
            return
        live = assigned_counts(t for t in tenants if _up(nodes, t.node_id))
        epochs = {t.id: t.epoch for t in homeless}
        plan = place([t.id for t in homeless], nodes, live)
        for start in range(0, len(plan), PLACEMENT_BATCH):
            batch = [(tid, node_id, epochs[tid]) for tid, node_id in plan[start:start + PLACEMENT_BATCH]]
            _, moved = await self.member.submit(registry.assign, batch, time.time(), True)
            if moved:
                log.info("placed %d tenant(s) on live nodes", len(moved))
            if self.on_placed is not None:
                for tenant_id in moved:
                    await self.on_placed(tenant_id)

    async def _put_back_stale_moves(self, now: float) -> None:
        """A tenant marked moving for longer than :attr:`stale_move` goes back on its node under a new epoch
        (the node may have released the old one for the flow that never finished), its marker cleared; if
        that node is down, it is unplaced, and placed like any tenant of a down node."""
        registry = self.member.registry
        nodes = registry.nodes_snapshot()
        seen = set()
        for tenant in registry.tenant_records():
            if not tenant.moving:
                continue
            since = tenant.moving_since
            if since is None:
                key = (tenant.id, tenant.epoch)
                seen.add(key)
                age = now - self._unstamped_moves.setdefault(key, now)
            else:
                age = now - since
            if age < self.stale_move:
                continue
            node_id = tenant.node_id if _up(nodes, tenant.node_id) else None
            _, moved = await self.member.submit(registry.assign, [(tenant.id, node_id, tenant.epoch)],
                                                time.time(), False, True, since)
            if moved:
                log.warning("tenant %s was left moving to %s for %.0f s (the move or restore never finished); "
                            "put back on node %s under epoch %d", tenant.id, tenant.moving, age,
                            node_id or "(none: placed anew)", tenant.epoch + 1)
                if node_id is not None and self.on_placed is not None:
                    await self.on_placed(tenant.id)
        for key in [k for k in self._unstamped_moves if k not in seen]:
            del self._unstamped_moves[key]


def _up(nodes: Mapping[str, NodeRecord], node_id: str | None) -> bool:
    """Whether ``node_id`` names a node that is up."""
    node = nodes.get(node_id) if node_id else None
    return node is not None and node.up
