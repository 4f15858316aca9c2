"""Which state a tenant opens with, and restores from its replica.

A local copy is served only if it belongs to the assignment the node serves now (:meth:`Restorer.vet`,
judged by :func:`pbfast.tenant_node.local_copy.judge`); otherwise, and when there is no local copy, the
tenant's replica is restored (:meth:`Restorer.fetch_replica`), or, for a new incarnation made by an in-place
point-in-time restore, its seed. A restored state that fails its check is kept aside and the tenant is not
served (:mod:`pbfast.tenant_node.damaged`). :meth:`Restorer.restore_check` is the control plane's trial
before an in-place restore.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pbfast.cluster.heartbeat import is_incarnation, is_restore_time
from pbfast.durable import fsync_file
from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import check_pocketbase_database
from pbfast.primitives import is_valid_tenant_id
from pbfast.tenant_node.copies import LocalCopies, discard
from pbfast.tenant_node.damaged import DamagedState, keep_aside, newest_restorable
from pbfast.tenant_node.local_copy import CopyMarker, MarkerError, Verdict, judge, read_marker
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.replica import NoStateAt, ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.slots import Slots, TenantSlot

__all__ = ["Restorer"]

log = component_logger("TenantNode")

_DAMAGED = [("retry-after", "30")]  # an operator has to act (see pbfast.tenant_node.damaged)


def _checked_and_synced(restored: Path) -> str | None:
    """:func:`check_pocketbase_database`, then the file fsynced if it passes: one trip to a worker thread for
    both, since a cold open's first request waits for each (blocking)."""
    problem = check_pocketbase_database(restored)
    if not problem:
        fsync_file(restored)
    return problem


class Restorer:
    def __init__(self, node_id: str, slots: Slots, copies: LocalCopies, replicator: Replicator | None,
                 metrics: NodeMetrics) -> None:
        self.node_id = node_id
        self.slots = slots
        self.copies = copies
        self.replicator = replicator
        self.metrics = metrics

    async def vet(self, slot: TenantSlot, directory: Path, incarnation: str,
                  epoch: int) -> tuple[CopyMarker | None, str]:
        """Decide whether the tenant's local copy may be served under ``incarnation`` and ``epoch``; returns
        its marker and the open's source.

        A current copy is served. A superseded or unknown one (the tenant may have lived elsewhere since)
        gives way to the replica when there is one: the replica is restored first, then the copy retired
        (:meth:`LocalCopies.retire`) and the restored one put in its place; without a replica it is the
        newest state there is, and it is served. A copy of another incarnation is retired in any case."""
        tenant_id = slot.tenant_id
        try:
            marker: CopyMarker | None = read_marker(directory)
            readable = True
        except MarkerError as err:
            log.warning("tenant %s: %s", tenant_id, err)
            marker, readable = None, False
        verdict, why = judge(marker, readable, incarnation, epoch, slot.placed_since, self.node_id)
        if verdict is Verdict.CURRENT:
            log.debug("tenant %s: serving the local copy (%s)", tenant_id, why)
            return marker, "disk"
        # A seed (an in-place restore's starting state) is older than a copy of this same incarnation.
        use_seed = verdict is not Verdict.SUPERSEDED
        restored = await self.fetch_replica(slot, incarnation, use_seed) if self.replicator is not None else None
        if restored is None and verdict is not Verdict.FOREIGN:
            log.warning("tenant %s: serving the local copy although %s: there is no replica to prefer",
                        tenant_id, why)
            return marker, "disk"
        try:
            self.copies.retire(tenant_id, f"not serving the local copy: {why}")
            if restored is not None:
                self.copies.install(restored, directory)
        finally:
            if restored is not None:
                discard(restored)
        return None, "replica"

    async def fetch_replica(self, slot: TenantSlot, incarnation: str, use_seed: bool = True) -> Path | None:
        """Restore the tenant's replica into a temporary file beside the tenants' directories, checked and
        fsynced; None when there is no replica. Raises :class:`ReplicationError` (counted as a restore
        failure), or ApiError 503 while the replica's newest state is known damaged."""
        assert self.replicator is not None
        tenant_id = slot.tenant_id
        damaged = slot.damaged
        if damaged is not None:
            if damaged.current(incarnation, time.time()):
                raise ApiError(503, damaged.message(), headers=_DAMAGED)
            slot.damaged = None  # looked at again: the replica may have been repaired
        temporary = self.copies.scratch(tenant_id)
        started = time.monotonic()
        seeded = False
        try:
            if not await self.replicator.restore(tenant_id, incarnation, temporary):
                seed = slot.seed if use_seed else None
                if seed is None or seed.incarnation == incarnation:
                    discard(temporary)
                    return None  # no replica: a new tenant
                # A new incarnation made by an in-place point-in-time restore, not shipped yet: it starts as
                # the earlier incarnation was at the chosen time.
                if not await self.replicator.restore(tenant_id, seed.incarnation, temporary, seed.at):
                    raise ReplicationError(f"tenant {tenant_id} is to start from incarnation {seed.incarnation} "
                                           "but that has no replica")
                log.info("tenant %s: incarnation %s starts from incarnation %s as of %s", tenant_id, incarnation,
                         seed.incarnation, seed.at or "its latest state")
                seeded = True
            problem = await asyncio.to_thread(_checked_and_synced, temporary)
            if problem and not seeded:
                state = await self._put_aside_damaged(slot, incarnation, temporary, problem)
                raise ApiError(503, state.message(), headers=_DAMAGED)
            if problem:  # the seed's state (the control plane checked it before the in-place restore)
                raise ReplicationError(f"restored copy of tenant {tenant_id} is unusable: {problem}")
        except BaseException as err:
            discard(temporary)
            if isinstance(err, Exception):
                self.metrics.restore_failures += 1
            raise
        log.info("restored tenant %s from its replica in %.0f ms", tenant_id, (time.monotonic() - started) * 1000)
        return temporary

    async def _put_aside_damaged(self, slot: TenantSlot, incarnation: str, restored: Path,
                                 problem: str) -> DamagedState:
        """The latest state restored from the tenant's replica failed its check: keep it aside, find the
        newest earlier state that passes, remember the verdict and tell the operator (see
        :mod:`pbfast.tenant_node.damaged`)."""
        assert self.replicator is not None
        tenant_id = slot.tenant_id
        self.metrics.damaged_restores += 1
        log.error("tenant %s: the newest state of its replica (incarnation %s) fails its check: %s; it is not "
                  "served. Looking for the newest earlier state that passes.", tenant_id, incarnation, problem)
        kept: Path | None = None
        data_dir = self.copies.tenants_dir.parent
        try:
            kept = await asyncio.to_thread(keep_aside, restored, data_dir, tenant_id, incarnation)
        except OSError as err:
            log.error("tenant %s: could not keep the damaged restore aside: %s", tenant_id, err)
        started = time.monotonic()
        restorable_at = await newest_restorable(self.replicator, tenant_id, incarnation, self.copies.tenants_dir)
        state = DamagedState(tenant_id, incarnation, problem, kept, restorable_at, time.time())
        slot.damaged = state
        log.error("tenant %s: not served, its newest replicated state is damaged (%s; kept at %s). %s "
                  "(searched for %.1f s)", tenant_id, problem, kept or "-",
                  f"The newest state that passes is at {restorable_at}: restore it with `pbfast tenant restore "
                  f"{tenant_id} --at {restorable_at}`." if restorable_at else "No earlier state that passes was "
                  "found.", time.monotonic() - started)
        return state

    def damaged_tenants(self) -> int:
        """Tenants not served because their newest replicated state is damaged (verdicts still standing)."""
        now = time.time()
        return sum(1 for state in self.slots.where(lambda slot: slot.damaged).values()
                   if state.current(state.incarnation, now))

    async def restore_check(self, tenant_id: str, incarnation: object, at: object) -> int:
        """Restore ``incarnation``'s replica as of ``at`` into a temporary file, check it and discard it (the
        control plane's trial before an in-place restore; called in-process in all-in-one). Returns the
        restored database's size. Raises ApiError 400 when the replica holds no usable state then, 503 when
        storage fails."""
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")
        if not is_incarnation(incarnation):
            raise ApiError(400, "Failed to validate the submitted data.", {"incarnation": {
                "code": "validation_invalid_incarnation", "message": "Must be a tenant incarnation."}})
        if at is not None and not is_restore_time(at):
            raise ApiError(400, "Failed to validate the submitted data.", {"at": {
                "code": "validation_invalid_datetime", "message": "Must be an RFC 3339 date-time."}})
        if self.replicator is None:
            raise ApiError(400, "This node does not replicate tenants: there is nothing to restore from.")
        temporary = self.copies.scratch(tenant_id)
        try:
            try:
                found = await self.replicator.restore(tenant_id, incarnation, temporary, at)
            except NoStateAt as err:
                raise ApiError(400, f"Restore failed: {err}", {"at": {
                    "code": "validation_no_state_at", "message": str(err)}}) from err
            except ReplicationError as err:
                raise ApiError(503, f"Restore failed: {err}", headers=[("retry-after", "5")]) from err
            if not found:  # the only answer after which the control plane may fall back to the seed
                raise ApiError(400, "The tenant has no replica of that incarnation.", {"incarnation": {
                    "code": "validation_no_replica", "message": "Nothing of this incarnation was replicated."}})
            problem = await asyncio.to_thread(check_pocketbase_database, temporary)
            if problem:
                raise ApiError(400, f"The restored database is unusable: {problem}")
            return temporary.stat().st_size
        finally:
            discard(temporary)
