"""What the node does when its lease runs out (:mod:`pbfast.tenant_node.lease`): it is fenced. No tenant
request is admitted from then on (:meth:`pbfast.tenant_node.ownership.Ownership.lease_lost`), the running ones
finish, every open tenant is shipped a final time and stops being replicated, and nothing of this node writes
a replica after the lease's halt time: if Litestream has not confirmed by then, it is killed. The next
acknowledged heartbeat decides about the fenced tenants
(:meth:`pbfast.tenant_node.ownership.Ownership.adopt`).

Thread-safety: event loop only; the decision to fence is taken under the lease's lock (its keeper's thread
renews it beside the loop, see :class:`pbfast.tenant_node.lease.Lease`).
"""

from __future__ import annotations

import asyncio
import time

from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import DATA_DB
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.pool import TenantPool
from pbfast.tenant_node.replica import ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.slots import Slots, TenantSlot
from pbfast.tenant_node.tasks import BackgroundTasks

__all__ = ["LEASE_CHECK_SECONDS", "Fencing"]

log = component_logger("TenantNode")

LEASE_CHECK_SECONDS = 0.05


class Fencing:
    def __init__(self, slots: Slots, ownership: Ownership, pool: TenantPool, replicator: Replicator | None,
                 metrics: NodeMetrics, background: BackgroundTasks) -> None:
        self.slots = slots
        self.ownership = ownership
        self.pool = pool
        self.replicator = replicator
        self.metrics = metrics
        self.background = background

    async def watch_lease(self) -> None:
        """Fence the node as soon as its lease runs out (runs as a task beside the heartbeats)."""
        while True:
            lease = self.ownership.lease
            try:
                if lease is not None and lease.renewed_at is not None and self.ownership.fenced is None \
                        and not lease.valid():
                    with lease.lock:  # the lease keeper's thread may have renewed it since: checked again
                        if self.ownership.fenced is None and not lease.valid():
                            self.fence()
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("fencing failed")
            await asyncio.sleep(LEASE_CHECK_SECONDS)

    def fence(self) -> None:
        """The lease ran out: admit no tenant request from now on, let the running ones finish, ship and
        stop replicating every open tenant, and make sure nothing of this node writes a replica after the
        lease's halt time. The tenants stay assigned; the next acknowledged heartbeat decides about them."""
        lease = self.ownership.lease
        assert lease is not None
        fenced = self.ownership.fence()
        self.metrics.fences += 1
        if self.replicator is not None:
            self.replicator.pause()
        age = lease.age() or 0.0
        log.warning("no heartbeat acknowledged for %.1f s (node timeout %.1f s): stopped serving and replicating "
                    "%d tenant(s) until the control plane answers again", age, lease.node_timeout or 0.0,
                    len(fenced))
        self.background.spawn(self._stop_replicating(self.ownership.fence_generation, lease.drain_until,
                                                      lease.sync_until, lease.halt_at))

    async def _stop_replicating(self, generation: int, drain_until: float, sync_until: float,
                                halt_at: float) -> None:
        clock = time.monotonic
        # Requests admitted before the lease ran out finish first (pins have no event to wait on: polled).
        while clock() < drain_until and any(self.pool.cache.pins(slot.tenant_id)  # noqa: ASYNC110
                                            for slot in self.slots.serving_slots()):
            await asyncio.sleep(0.01)
        if generation != self.ownership.fence_generation:
            return  # renewed meanwhile
        serving = self.slots.serving_slots()
        closing = [asyncio.ensure_future(self._fence_close(slot, sync_until, halt_at)) for slot in serving]
        for slot in serving:
            self.pool.cache.remove(slot.tenant_id)
        done, late = await asyncio.wait(closing, timeout=max(0.0, halt_at - clock())) if closing else (set(), set())
        if generation != self.ownership.fence_generation:
            return  # renewed meanwhile: the control plane cannot have re-placed anything
        unconfirmed = len(late) + sum(1 for task in done if task.cancelled() or task.exception() or not task.result())
        if self.replicator is not None and not unconfirmed and (self.replicator.unregistering
                                                                or self.replicator.registered):
            # Tenants closed before the fence whose unregister is still unconfirmed (or a registration that
            # raced the fence): litestream may still write their replicas. One more try, bounded by the halt.
            try:
                remaining = max(0.0, halt_at - clock())
                await asyncio.wait_for(self.replicator.reconcile(remaining), remaining)
            except (ReplicationError, TimeoutError) as err:
                log.warning("fenced: unregisters not confirmed: %r", err)
            if generation != self.ownership.fence_generation:
                return
            unconfirmed = len(self.replicator.unregistering) + len(self.replicator.registered)
        if unconfirmed and self.replicator is not None:
            # Nothing may reach the replica from here on: litestream forgets every database and is killed
            # without a flush; registrations are refused until the lease is renewed.
            self.replicator.halt()
            self.metrics.replication_halts += 1
            log.error("fenced: replication of %d tenant(s) did not stop in time; killed litestream", unconfirmed)

    async def _fence_close(self, slot: TenantSlot, sync_until: float, halt_at: float) -> bool:
        """Close one tenant of a fenced node: a final sync (bounded by ``sync_until``), unregister (bounded by
        ``halt_at``), close. True once litestream confirmed it stopped replicating it."""
        async with slot.lock:
            tenant = slot.begin_closing()
            if tenant is None:
                return True
            try:
                self.metrics.closed("fenced")
                await self.pool.released_by_workers(slot, sync_until)
                stopped = True
                shipped = False
                if self.replicator is not None:
                    db_path = tenant.directory / DATA_DB
                    try:
                        before: int | None = await asyncio.wait_for(self.pool.total_changes(tenant),
                                                                    max(0.0, sync_until - time.monotonic()))
                    except TimeoutError:  # its requests hold it: whatever they write is not known to be shipped
                        before = None
                    try:
                        await asyncio.wait_for(self.replicator.sync(db_path, wait=True),
                                               max(0.0, sync_until - time.monotonic()))
                        shipped = True
                    except (ReplicationError, TimeoutError) as err:
                        log.warning("tenant %s: final sync before fencing failed: %r", slot.tenant_id, err)
                    self.replicator.forget(db_path)  # unregistering from now on, whatever happens below
                    remaining = halt_at - time.monotonic()
                    try:
                        await asyncio.wait_for(self.replicator.unregister(db_path, timeout=max(1.0, remaining)),
                                               max(0.05, remaining))
                    except (ReplicationError, TimeoutError) as err:
                        log.warning("tenant %s: unregister while fencing failed: %r", slot.tenant_id, err)
                    stopped = self.replicator.stopped(db_path)
                    shipped = shipped and before is not None and await self.pool.total_changes(tenant) == before
                await self.pool.close_connection(slot, tenant, shipped)
            finally:
                slot.closed()
            return stopped
