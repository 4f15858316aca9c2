"""What a multi-worker node's main process shares with its worker processes (``--workers`` > 1), and the
contract between them: which tenants the workers may serve and how, the lease, the quotas, the rate limits'
windows, who holds which tenant's connection, the workers' counters. All of it lives in the node's shared memory
(:class:`pbfast.primitives.NodeSharedMemory`, one memfd; see docs/architecture.md, "A node on every core").

The main process decides, as a single-process node does (:mod:`~pbfast.tenant_node.ownership`,
:mod:`~pbfast.tenant_node.pool`); :class:`SharedState` mirrors every decision into the shared tenant table
the moment it is made (:meth:`SharedState.mirror` is the slots' observer, see
:class:`~pbfast.tenant_node.slots.TenantSlot`), and :meth:`SharedState.closed_everywhere` is how a close
waits for the workers. The names of the flags and counters are here, for both sides.

Thread-safety: event loop only (the native objects are themselves thread- and process-safe).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pbfast.logs import component_logger
from pbfast.primitives import (NodeSharedMemory, SharedQuotas, SharedRateLimiter, SharedTenantTable, TenantCache,
                               WorkerAcks, WorkerCounters)
from pbfast.tenant_node.db_scheduler import TenantLoad
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.slots import SlotState, TenantSlot

__all__ = [
    "ASSIGNED", "DURABLE", "IMPORTING", "REALTIME", "SERVING", "SUSPENDED",
    "SharedState", "WorkerCounter", "WorkerTotals", "table_capacity",
]

log = component_logger("TenantNode")

# Flags of a tenant's entry (bit 1 is the table's own: the generation moves on when it changes).
SERVING = 1  # open on the main process, under its current assignment: workers may open it and serve it
SUSPENDED = 2
IMPORTING = 4  # an upload is being installed: 503
DURABLE = 8  # durability "sync": a write is answered once it is in the replica
ASSIGNED = 16  # the control plane (or a gateway) assigned it here under the entry's epoch
# The main process holds realtime streams of it: its writes are handed over to the main process, where their
# events are evaluated in the writer's turn, in commit order (workers hand over its realtime requests always).
REALTIME = 32

# Lease states (SharedTenantTable.set_lease) and what lease_state() answers.
LEASE_NONE, LEASE_NOT_JOINED, LEASE_UNTIL, LEASE_FENCED = 0, 1, 2, 3
MAY_SERVE, NOT_JOINED, LEASE_LOST = 0, 1, 2

MIN_CAPACITY = 1 << 16  # tenant entries: every tenant assigned to, or open on, the node
CLOSE_POLL_SECONDS = 0.002
RECENCY_SYNC_SECONDS = 1.0


class WorkerCounter:
    """Slots of each worker's row in :class:`~pbfast.primitives.WorkerCounters`."""

    REQUESTS = 0  # 0..4: answers by status class 1xx..5xx
    QUOTA_REQUESTS = 5  # 429: the daily request quota
    QUOTA_STORAGE = 6  # 403: the storage quota
    QUEUE_REJECTED = 7  # 429: a tenant's database queue was full
    DB_QUEUED = 8  # gauge: jobs waiting for a database thread in the worker
    OPEN_TENANTS = 9  # gauge: tenants the worker has a connection to
    ASKED_MAIN = 10  # requests the worker could not decide alone (admitted and opened by the main process)
    READY = 11  # 1 once the worker listens on the node's address (0 while it starts)
    HANDED_OVER = 12  # tenant requests answered by the main process (realtime, and writes of realtime tenants)


@dataclass(slots=True)
class WorkerTotals:
    """The workers' counters, summed (for ``/metrics``)."""

    requests: list[int]
    quota_requests: int
    quota_storage: int
    queue_rejected: int
    db_queued: int
    asked_main: int
    handed_over: int


def table_capacity(max_tenants: int) -> int:
    """Entries for every tenant the node may know: at least :data:`MIN_CAPACITY`, and room to spare."""
    capacity = MIN_CAPACITY
    while capacity < 4 * max_tenants:
        capacity *= 2
    return capacity


def entry_of(slot: TenantSlot) -> tuple[int, int, int, int, int]:
    """``(flags, epoch, released, time_limit_ms, max_bytes)`` of a slot as the workers see it."""
    assignment = slot.assignment
    released = slot.released or 0
    flags = 0
    epoch = 0
    time_limit_ms = max_bytes = -1
    if assignment is not None:
        flags |= ASSIGNED
        epoch = assignment.epoch
        if assignment.status == "suspended":
            flags |= SUSPENDED
        if assignment.durability == "sync":
            flags |= DURABLE
        if assignment.time_limit_ms is not None:
            time_limit_ms = assignment.time_limit_ms
        if assignment.storage_quota_bytes >= 0:
            max_bytes = assignment.storage_quota_bytes
        if slot.state is SlotState.SERVING and slot.tenant is not None and not slot.superseded \
                and epoch > released:
            flags |= SERVING
    if slot.importing:
        flags |= IMPORTING
    if slot.realtime_clients:
        flags |= REALTIME
    return flags, epoch, released, time_limit_ms, max_bytes


class SharedState:
    """The main process's side of the node's shared memory."""

    def __init__(self, memory: NodeSharedMemory) -> None:
        self.memory = memory
        self.table = SharedTenantTable(memory)
        self.quotas = SharedQuotas(memory)
        self.rate_limiter = SharedRateLimiter(memory)  # the tenants' rateLimits, counted once for the node
        self.acks = WorkerAcks(memory)
        self.counters = WorkerCounters(memory)
        # Set by the worker supervisor: wake the workers (a close), stop a worker that does not let go.
        self.wake_workers: Callable[[], None] = lambda: None
        self.kill_worker: Callable[[int], Awaitable[None]] = _no_worker
        self.worker_close_seconds = 15.0  # a worker's request in flight may take its time limit; then it is stopped
        self._recency_synced_at = time.monotonic()

    @classmethod
    def create(cls, max_tenants: int, workers: int) -> SharedState:
        return cls(NodeSharedMemory(table_capacity(max_tenants), workers))

    # ---- the main process decides, the table follows ------------------------------------------------

    def mirror(self, slot: TenantSlot) -> None:
        """Publish the slot's state to the workers (the slots' observer: called on every change that matters)."""
        flags, epoch, released, time_limit_ms, max_bytes = entry_of(slot)
        current = self.table.get(slot.tenant_id)
        if current is not None and current[2:] == (flags, epoch, released, time_limit_ms, max_bytes):
            return
        if current is None and flags == 0 and not released:
            return  # nothing for the workers to know
        try:
            self.table.publish(slot.tenant_id, flags, epoch, released, time_limit_ms, max_bytes)
        except RuntimeError:  # full: make room from tenants that are neither assigned nor open here
            self._drop_unassigned()
            try:
                self.table.publish(slot.tenant_id, flags, epoch, released, time_limit_ms, max_bytes)
            except RuntimeError as err:  # the workers ask the main process about it, which answers 503
                log.error("tenant %s: not in the node's shared table: %s", slot.tenant_id, err)
                return
        if current is not None and current[2] & SERVING and not flags & SERVING:
            self.wake_workers()

    def publish_lease(self, lease: Lease | None, fenced: bool) -> None:
        if lease is None:
            self.table.set_lease(LEASE_NONE)
        elif fenced:
            self.table.set_lease(LEASE_FENCED)
        elif lease.renewed_at is None:
            self.table.set_lease(LEASE_NOT_JOINED)
        else:
            self.table.set_lease(LEASE_UNTIL, lease.serve_until)

    async def closed_everywhere(self, tenant_id: str, deadline: float | None = None) -> None:
        """Once a tenant stopped being served (its slot left SERVING): wait until no worker holds a
        connection to it, so nothing but the main process writes it from here on. A worker still holding it
        at ``deadline`` (monotonic; by default :attr:`worker_close_seconds` from now), its request stuck, is
        stopped: a dead worker writes nothing (the supervisor starts it again)."""
        limit = time.monotonic() + self.worker_close_seconds
        deadline = limit if deadline is None else min(deadline, limit)
        holders = self.acks.holders(tenant_id)
        if not holders:
            return
        self.wake_workers()
        while holders and time.monotonic() < deadline:
            await asyncio.sleep(CLOSE_POLL_SECONDS)
            holders = self.acks.holders(tenant_id)
        for worker in holders:  # dead before the close goes on: a dying worker could still write
            log.error("tenant %s: worker %d did not close it in time; stopping the worker", tenant_id, worker + 1)
            await self.kill_worker(worker)
            self.acks.clear(worker)

    def _drop_unassigned(self) -> None:
        for tenant_id in self.table.ids():
            entry = self.table.get(tenant_id)
            if entry is not None and not entry[2] & (ASSIGNED | SERVING | IMPORTING) \
                    and not self.acks.holders(tenant_id):
                self.table.remove(tenant_id)

    def forget(self, tenant_id: str) -> None:
        """The tenant left the node for good (deleted): drop its entry."""
        self.table.remove(tenant_id)

    # ---- what the workers saw -----------------------------------------------------------------------

    def sync_recency(self, cache: TenantCache, force: bool = False) -> list[str]:
        """Mark the tenants the workers served since the last sync as used in the main process's LRU (which
        sees no requests itself); at most once a second unless ``force``. Returns ids evicted meanwhile."""
        now = time.monotonic()
        if not force and now - self._recency_synced_at < RECENCY_SYNC_SECONDS:
            return []
        since, self._recency_synced_at = self._recency_synced_at - 1.0, now
        evicted: list[str] = []
        for tenant_id in self.table.used_since(since):
            if tenant_id in cache:
                evicted += cache.acquire(tenant_id)[1]
                try:
                    evicted += cache.release(tenant_id)
                except KeyError:
                    pass
        return evicted

    def loads(self) -> dict[str, TenantLoad]:
        return {tenant_id: TenantLoad(jobs, rejected, wait, busy, time_limited)
                for tenant_id, (jobs, rejected, wait, busy, time_limited) in self.table.loads().items()
                if jobs or rejected or time_limited}

    def worker_requests(self) -> list[int]:
        """Tenant requests answered by each worker (by its index)."""
        return [sum(self.counters.row(worker)[WorkerCounter.REQUESTS:WorkerCounter.REQUESTS + 5])
                for worker in range(self.counters.workers)]

    def totals(self) -> WorkerTotals:
        totals = self.counters.totals()
        return WorkerTotals(totals[WorkerCounter.REQUESTS:WorkerCounter.REQUESTS + 5],
                            totals[WorkerCounter.QUOTA_REQUESTS], totals[WorkerCounter.QUOTA_STORAGE],
                            totals[WorkerCounter.QUEUE_REJECTED], totals[WorkerCounter.DB_QUEUED],
                            totals[WorkerCounter.ASKED_MAIN], totals[WorkerCounter.HANDED_OVER])


async def _no_worker(index: int) -> None:
    """The default of :attr:`SharedState.kill_worker` until a supervisor is attached."""


def merge_loads(own: dict[str, TenantLoad], shared: dict[str, TenantLoad]) -> dict[str, TenantLoad]:
    """The main process's own database load per tenant plus what its workers did."""
    merged = {tenant_id: TenantLoad(load.jobs, load.rejected, load.wait_seconds, load.busy_seconds,
                                    load.time_limited) for tenant_id, load in own.items()}
    for tenant_id, load in shared.items():
        mine = merged.setdefault(tenant_id, TenantLoad())
        mine.jobs += load.jobs
        mine.rejected += load.rejected
        mine.wait_seconds += load.wait_seconds
        mine.busy_seconds += load.busy_seconds
        mine.time_limited += load.time_limited
    return merged
