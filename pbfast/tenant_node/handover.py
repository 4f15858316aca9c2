"""Handing a tenant's state over to its replica: the release of a tenant for a move or a re-placement, and
the background shipping of closed copies whose final sync failed.

A release returns only once the tenant's final state is confirmed in the replica and Litestream has stopped
replicating it, so the next node restores every write this node acknowledged, and two nodes never write one
replica path. A closed copy whose final sync failed (storage unreachable when it was closed) is shipped in
the background while this node still owns it, so the replica catches up after an outage without waiting
for the tenant's next request.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import math
import time

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import DATA_DB
from pbfast.tenant_node.copies import LocalCopies
from pbfast.tenant_node.local_copy import CopyMarker, MarkerError, Verdict, judge, read_marker, write_marker
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.pool import UNREGISTER_RESERVE_SECONDS, TenantPool
from pbfast.tenant_node.replica import ReplicationError
from pbfast.tenant_node.replication import RECONCILE_TIMEOUT_SECONDS, Replicator
from pbfast.tenant_node.slots import Slots, TenantSlot
from pbfast.tenant_node.tasks import BackgroundTasks

__all__ = ["RELEASE_BUDGET_SECONDS", "Handover"]

log = component_logger("TenantNode")

RELEASE_BUDGET_SECONDS = 35.0  # below the control plane's wait for a release (45 s)
RESHIP_BATCH = 4  # closed copies shipped at once after an outage
RESHIP_SECONDS = 8.0  # one background shipping of a closed copy (a request for it waits meanwhile)
RESHIP_BACKOFF_SECONDS = 30.0  # after a failed one, doubling up to RESHIP_BACKOFF_MAX_SECONDS
RESHIP_BACKOFF_MAX_SECONDS = 600.0


class Handover:
    def __init__(self, node_id: str, slots: Slots, ownership: Ownership, pool: TenantPool, copies: LocalCopies,
                 replicator: Replicator | None, background: BackgroundTasks) -> None:
        self.node_id = node_id
        self.slots = slots
        self.ownership = ownership
        self.pool = pool
        self.copies = copies
        self.replicator = replicator
        self.background = background

    async def release(self, tenant_id: str, epoch: int, budget: float = RELEASE_BUDGET_SECONDS) -> None:
        """Stop serving ``tenant_id`` for ``epoch`` and older (a move or a re-placement): no request is
        admitted from now on, and this returns once the final state is in the replica and Litestream has
        stopped replicating it. It takes at most about ``budget`` seconds, less than the control plane waits
        (``MOVE_RELEASE_TIMEOUT_SECONDS``), so the control plane hears the outcome.

        Raises ApiError 503 (and serves the tenant again, as before) when the final state could not be
        confirmed in the replica, or Litestream did not confirm it stopped: the control plane must not move
        it then, since the next node would restore a replica without this node's last acknowledged writes,
        or two nodes would write one replica path."""
        deadline = time.monotonic() + budget
        slot = self.slots[tenant_id]
        previous_release = slot.released
        previous_assignment = slot.assignment
        slot.released = max(previous_release or 0, epoch)
        try:
            await self.pool.drop(slot, epoch, "released", deadline)
            handed_over = await self._replication_stopped(slot, epoch, deadline)
        except TimeoutError:
            handed_over = False
        if not handed_over:
            slot.released = previous_release
            if previous_assignment is not None and slot.assignment is None:
                slot.assignment = previous_assignment
            log.warning("tenant %s: not released, its final state is not confirmed in the replica", tenant_id)
            raise ApiError(503, "The tenant's final state is not in the replica yet; it was not released.",
                           headers=[("retry-after", "5")])
        # The next node writes the replica from now on: this copy must not be served if the tenant
        # comes back here (it would hide, and then overwrite, the other node's writes). Unless the control
        # plane has meanwhile put it back here (the answer to this release got lost) and it is served again.
        if (slot.confirmed or 0) > epoch:
            log.info("tenant %s: released epoch %d, but it is assigned here again: copy kept", tenant_id, epoch)
            return
        slot.stale = True
        await self.pool.retire_local_copy(slot)

    async def _replication_stopped(self, slot: TenantSlot, epoch: int, deadline: float) -> bool:
        """After the tenant was closed: whether its local copy is whole in the replica and Litestream no
        longer replicates it (an unconfirmed unregister is retried until ``deadline``)."""
        if self.replicator is None:
            return True
        if not await asyncio.to_thread(self.copies.shipped, slot.tenant_id) \
                and not await self._reship(slot, epoch, deadline, releasing=True):
            return False
        db_path = self.copies.directory(slot.tenant_id) / DATA_DB
        if self.replicator.stopped(db_path):
            return True
        seconds = math.floor(deadline - time.monotonic()) - 3  # the request's own timeout is seconds + 2
        if seconds >= 1:
            try:  # not cancelled from outside: an abandoned request gets litestream killed
                await self.replicator.settle(db_path, min(seconds, RECONCILE_TIMEOUT_SECONDS))
            except ReplicationError as err:
                log.warning("tenant %s: litestream did not confirm it stopped replicating it: %r",
                            slot.tenant_id, err)
        return self.replicator.stopped(db_path)

    async def _reship(self, slot: TenantSlot, epoch: int, deadline: float, releasing: bool = False) -> bool:
        """Ship a closed local copy whose final sync failed (storage was unreachable when it was closed):
        registered, synced, unregistered, then marked shipped under ``epoch``, all by ``deadline``. Only a
        copy that is current for this node under ``epoch`` (:func:`judge`: written here under it, or under an
        earlier epoch of the tenant's uninterrupted stay here), while the node still serves that epoch
        (``releasing``: the release of that epoch in progress). True once the copy is known whole in the
        replica."""
        assert self.replicator is not None
        tenant_id = slot.tenant_id
        await asyncio.wait_for(slot.lock.acquire(), max(0.0, deadline - time.monotonic()))
        try:
            directory = self.copies.directory(tenant_id)
            db_path = directory / DATA_DB
            if slot.tenant is not None:
                return False  # open: its close ships it
            try:
                marker = read_marker(directory)
            except MarkerError:
                return False
            if not db_path.exists() or marker is None or marker.shipped:
                slot.unshipped = False
                return True
            incarnation = slot.current_incarnation
            verdict, _ = judge(marker, True, incarnation, epoch, slot.placed_since, self.node_id)
            if verdict is not Verdict.CURRENT or not self.ownership.may_ship(slot, epoch, releasing):
                return False  # not this node's to ship (any more)
            budget = max(1.0, deadline - time.monotonic())
            shipped = False
            try:
                await self.replicator.register(db_path, tenant_id, incarnation)
                await self.replicator.sync(db_path, wait=True, timeout=max(1.0, budget - UNREGISTER_RESERVE_SECONDS))
                shipped = True
            except ReplicationError as err:
                log.warning("tenant %s: shipping its closed copy failed: %s", tenant_id, err)
            finally:
                try:
                    await self.replicator.unregister(db_path, timeout=max(1.0, deadline - time.monotonic()))
                except ReplicationError as err:
                    log.warning("tenant %s: unregister after shipping its closed copy: %s", tenant_id, err)
            if shipped:
                await asyncio.to_thread(write_marker, directory, CopyMarker(incarnation, epoch, self.node_id,
                                                                            shipped=True))
                slot.unshipped = False
                log.info("tenant %s: shipped its closed copy, whose final sync had failed", tenant_id)
            return shipped
        finally:
            slot.lock.release()

    def reship_closed(self) -> None:
        """Ship a few closed copies whose final sync failed, while this node still owns them (from the idle
        check): the replica catches up after an outage without waiting for the tenants' next request."""
        if self.replicator is None or self.ownership.lease_lost() or not self.replicator.status()["running"]:
            return
        now = time.monotonic()
        due = [slot for slot in self.slots if slot.unshipped and not slot.reshipping and slot.reship_after <= now]
        for slot in due[:RESHIP_BATCH]:
            epoch = slot.confirmed
            assignment = slot.assignment
            if slot.tenant is not None or epoch is None or assignment is None or assignment.epoch != epoch:
                continue
            slot.reshipping = True
            self.background.spawn(self._ship(slot, epoch))

    async def _ship(self, slot: TenantSlot, epoch: int) -> None:
        # Short, and backed off after a failure: a request for the tenant waits for this (the lock), and
        # storage that failed the final sync may well still be failing.
        shipped = False
        try:
            shipped = await self._reship(slot, epoch, time.monotonic() + RESHIP_SECONDS)
        except Exception:  # noqa: BLE001 - retried later
            log.exception("tenant %s: shipping its closed copy failed", slot.tenant_id)
        finally:
            slot.reshipping = False
            if shipped:
                slot.reship_failures = 0
                slot.reship_after = 0.0
            else:
                slot.reship_failures += 1
                slot.reship_after = time.monotonic() + min(
                    RESHIP_BACKOFF_MAX_SECONDS, RESHIP_BACKOFF_SECONDS * 2 ** (slot.reship_failures - 1))
