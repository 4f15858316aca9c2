"""The node's open tenants: opening (vetted, maybe restored, registered with Litestream), closing (final sync,
unregister, checkpoint, close), evicting the least recently used beyond ``--max-tenants``, closing idle ones.

Every step of a tenant's connection moves its :class:`~pbfast.tenant_node.slots.TenantSlot` through its states,
under the slot's lock. The tenant's database work outside a request (closes, checkpoints, ``total_changes``)
runs in the tenant's turn on the node's database threads (``db.run(tenant_id, fn, bounded=False)``), after the
requests that still hold it. Only Litestream checkpoints a replicated tenant: its connection runs with
:data:`~pbfast.tenant_node.replication.NO_AUTOCHECKPOINT` (:mod:`pbfast.tenant_node.checkpoints`).

Thread-safety: event loop only (the native LRU it holds is itself thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.filesystem import StorageError, adopt_local_storage, files_of
from pbfast.pocketbase.filesystem.retention import sweep_deleted
from pbfast.pocketbase.sqlite_guard import DEFAULT_LIMITS
from pbfast.pocketbase.tenant import DATA_DB, Tenant
from pbfast.primitives import QuotaCounters, SharedQuotas, TenantCache
from pbfast.tenant_node.checkpoints import Checkpoints
from pbfast.tenant_node.copies import LocalCopies
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.local_copy import CopyMarker, write_marker
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.replica import ReplicationError
from pbfast.tenant_node.replication import SYNC_TIMEOUT_SECONDS, Replicator
from pbfast.tenant_node.restore import Restorer
from pbfast.tenant_node.shared_state import SharedState
from pbfast.tenant_node.slots import Slots, TenantSlot
from pbfast.tenant_node.superusers import upsert_superuser
from pbfast.tenant_node.tasks import BackgroundTasks

__all__ = ["CLOSE_ALL_SECONDS", "OPEN_WAIT_SECONDS", "UNREGISTER_RESERVE_SECONDS", "TenantPool"]

log = component_logger("TenantNode")

CLOSE_ALL_SECONDS = 2.0
CLOSE_LEFT_SECONDS = 0.5  # of a bounded close_all: for checkpointing and closing what the closes left open
UNREGISTER_RESERVE_SECONDS = 5.0  # of a bounded close, kept for the unregister after the final sync
OPEN_WAIT_SECONDS = 20.0  # a request waits this long for its tenant to open, below the gateway's 30 s
REQUEST_CLOSE_SECONDS = 10.0  # a close a request waits for (final sync and unregister)


def _log_open_failure(opening: asyncio.Future[Tenant]) -> None:
    """Done callback of an open no request waits for any more: its failure is logged, not lost."""
    if not opening.cancelled() and (err := opening.exception()) is not None and not isinstance(err, ApiError):
        log.error("opening a tenant failed: %r", err, exc_info=err)


class TenantPool:
    def __init__(self, node_id: str, slots: Slots, cache: TenantCache, ownership: Ownership, copies: LocalCopies,
                 restorer: Restorer, db: DbScheduler, replicator: Replicator | None, metrics: NodeMetrics,
                 quotas: QuotaCounters | SharedQuotas, background: BackgroundTasks, checkpoints: Checkpoints,
                 superusers_applied: set[str], shared: SharedState | None = None) -> None:
        self.node_id = node_id
        self.slots = slots
        self.cache = cache  # the LRU of open tenants, with the pins of the requests that use them
        self.ownership = ownership
        self.copies = copies
        self.restorer = restorer
        self.db = db
        self.replicator = replicator
        self.metrics = metrics
        self.quotas = quotas
        self.background = background
        self.checkpoints = checkpoints
        self.superusers_applied = superusers_applied  # reported with the next heartbeat
        self.shared = shared  # with worker processes: every close waits for them to let go
        self.open_wait_seconds = OPEN_WAIT_SECONDS
        self._untracked: set[str] = set()  # open tenants outside the LRU at the last idle check
        # Told (on the tenant's database thread) after its open and before its close, to read its settings:
        # the scheduled backups learn the tenant's schedule (pbfast.tenant_node.backup_cron).
        self.on_settings_read: Callable[[Tenant], None] | None = None

    # ---- opening ------------------------------------------------------------------------------------

    async def open_tenant(self, tenant_id: str) -> Tenant:
        """The open tenant: from memory, else from local disk, else restored from its replica, else new.

        A local copy is served only if it belongs to the assignment the node serves now
        (:meth:`Restorer.vet`); the marker of that assignment is written before the tenant is served or
        replicated."""
        slot = self.slots[tenant_id]
        tenant = slot.tenant
        if tenant is not None and not slot.superseded:
            return tenant
        async with slot.lock:
            tenant = slot.tenant
            if tenant is not None:
                if not slot.superseded:
                    return tenant
                log.info("tenant %s: placed again since it was opened; closing it to check its copy", tenant_id)
                # A request waits for this: the final sync is bounded well below the gateway's read timeout.
                await self.close_locked(slot, "reassigned", time.monotonic() + REQUEST_CLOSE_SECONDS)
            slot.begin_opening()
            try:
                tenant = await self._open_locked(slot)
            except BaseException:
                slot.open_failed()
                raise
            slot.opened(tenant)
            self.quotas.set_storage(tenant_id, tenant.size_bytes())
            return tenant

    async def _open_locked(self, slot: TenantSlot) -> Tenant:
        tenant_id = slot.tenant_id
        self.ownership.check_lease()
        generation = self.ownership.fence_generation
        await self.retire_locked(slot)  # a copy another node may have written since is never opened
        if slot.stale:
            raise ApiError(503, "The tenant's previous local copy cannot be retired; it is not served.",
                           headers=[("retry-after", "5")])
        epoch = await self.ownership.serving_epoch(slot)
        directory = self.copies.directory(tenant_id)
        db_path = directory / DATA_DB
        incarnation = slot.current_incarnation
        source = "disk"
        on_disk: CopyMarker | None = None
        if epoch is not None and db_path.exists():
            on_disk, source = await self.restorer.vet(slot, directory, incarnation, epoch)
        elif not db_path.exists() and self.replicator is not None:
            restored = await self.restorer.fetch_replica(slot, incarnation)
            if restored is not None:
                self.copies.install(restored, directory)
            source = "replica"
        created = not db_path.exists()
        tenant = await asyncio.to_thread(Tenant.open, tenant_id, directory, True, DEFAULT_LIMITS,
                                         self.ownership.max_bytes(slot))
        tenant.shared_schema = self.shared is not None  # the workers change its collections
        try:  # a PocketBase data dir put here (an import) brings its files: they go to the object store
            await asyncio.to_thread(adopt_local_storage, tenant)
        except (OSError, StorageError) as err:
            log.error("tenant %s: its storage/ could not be moved to the object store yet: %s", tenant_id, err)
        # its files are measured for its quota, and deleted ones kept for the restore window go once due (it
        # reads the records: in the tenant's turn), in the background: the open does not wait for the store
        self.background.spawn(self._settle_files(tenant))
        try:
            self.checkpoints.leave_to_litestream(tenant)
            # A restore takes time: meanwhile the node may have been fenced and the tenant placed elsewhere
            # (and the lease renewed again): never start replicating a tenant the node no longer owns.
            self.ownership.check_still_owned(slot, epoch, generation)
            if epoch is not None:  # from here on this node may write the copy under this assignment
                marker = CopyMarker(incarnation, epoch, self.node_id)
                if on_disk != marker:
                    await asyncio.to_thread(write_marker, directory, marker)
                slot.copy = marker
        except BaseException:
            self.checkpoints.close_unshared(tenant)
            raise
        self.metrics.opened("new" if created else source)
        if created:
            log.info("created the database of tenant %s", tenant_id)
        # A first superuser still pending is applied before the tenant answers anything, on every open: an
        # earlier open that created the database and then failed (fenced meanwhile, say) left it pending,
        # and the tenant must not answer a login without it until the next heartbeat applies it.
        superuser = slot.first_superuser
        if superuser is not None:
            try:  # not published yet: no request uses the connection meanwhile
                await asyncio.to_thread(upsert_superuser, tenant, superuser.email, superuser.password_hash,
                                        overwrite=created)
            except Exception:  # noqa: BLE001 - the tenant's trigger, say: kept pending, tried again by the heartbeat
                log.exception("tenant %s: applying the first superuser failed", tenant_id)
            else:
                slot.first_superuser = None
                self.superusers_applied.add(tenant_id)
        try:
            if self.replicator is not None:
                try:
                    await self.replicator.register(db_path, tenant_id, incarnation)
                except ReplicationError as err:  # serve anyway: the replicator retries it (unless paused)
                    log.error("tenant %s: replication not started yet: %s", tenant_id, err)
            # Registering can take long: a fence that came meanwhile only saw the tenants already open, so
            # a tenant opened across it must not go on replicating or serving.
            self.ownership.check_still_owned(slot, epoch, generation)
        except BaseException as err:
            if self.replicator is not None:
                if isinstance(err, ApiError) and epoch is not None and self.ownership.still_ours(slot, epoch):
                    self.replicator.forget(db_path)  # still ours (fenced, or put back here under a newer
                    # epoch): the reconcile unregisters it, with a final flush
                else:  # another node may own the replica path by now: not even a final flush
                    self.replicator.drop_without_flush(db_path)
            self.checkpoints.close_unshared(tenant)
            raise
        return tenant

    async def _settle_files(self, tenant: Tenant) -> None:
        def work() -> int | None:
            if tenant.closed:
                return None
            self._settings_read(tenant)
            files_of(tenant).measure()
            sweep_deleted(tenant)
            return tenant.size_bytes()

        try:
            size = await self.db.run(tenant.id, work, bounded=False)
        except Exception as err:  # noqa: BLE001 - tried again at the next open
            log.warning("tenant %s: measuring or sweeping its files failed: %r", tenant.id, err)
            return
        if size is not None and not tenant.closed:
            self.quotas.set_storage(tenant.id, size)

    async def open_within(self, tenant_id: str, seconds: float) -> Tenant:
        """:meth:`open_tenant` for a request, which waits for it at most ``seconds`` (a restore of a large
        database from its replica can take longer than a gateway waits for an answer): then ApiError 503 with
        ``Retry-After``, while the open goes on, so that a retry finds the tenant open."""
        opening = asyncio.ensure_future(self.open_tenant(tenant_id))
        try:
            return await asyncio.wait_for(asyncio.shield(opening), seconds)
        except TimeoutError:
            opening.add_done_callback(_log_open_failure)
            raise ApiError(503, "The tenant is being loaded from its replica; retry shortly.",
                           headers=[("retry-after", "2")]) from None

    def serves_directory(self, directory: Path) -> bool:
        """Whether the tenant whose directory this is is open (serving) here now. Only reads, so any thread may
        ask (the request log writer does)."""
        tenant = self.slots.serving(directory.name)
        return tenant is not None and tenant.directory == directory

    @contextlib.asynccontextmanager
    async def using(self, tenant_id: str) -> AsyncIterator[Tenant]:
        """The open tenant for node work outside a request (superuser, import, export): counted in the open
        tenants (so it is closed when idle or evicted, like one a request opened) and pinned meanwhile."""
        _, evicted = self.cache.acquire(tenant_id)
        self.close_evicted(evicted)
        try:
            yield await self.open_tenant(tenant_id)
        finally:
            try:
                self.close_evicted(self.cache.release(tenant_id))
            except KeyError:
                pass  # dropped meanwhile

    # ---- closing ------------------------------------------------------------------------------------

    async def close(self, tenant_id: str, reason: str, deadline: float | None = None) -> bool:
        """Final replication sync, stop replicating, checkpoint and close. Serialised with opening. With a
        ``deadline`` (monotonic), waiting for the tenant's lock raises TimeoutError after it, and the sync and
        unregister are bounded by it."""
        slot = self.slots[tenant_id]
        if deadline is None:
            await slot.lock.acquire()
        else:
            await asyncio.wait_for(slot.lock.acquire(), max(0.0, deadline - time.monotonic()))
        try:
            return await self.close_locked(slot, reason, deadline)
        finally:
            slot.lock.release()

    async def close_locked(self, slot: TenantSlot, reason: str, deadline: float | None = None) -> bool:
        tenant = slot.begin_closing()
        if tenant is None:
            return False
        try:
            self.metrics.closed(reason)
            await self.released_by_workers(slot, deadline)
            slot.storage_measured_at = 0.0
            db_path = tenant.directory / DATA_DB
            shipped = False
            if self.replicator is not None:
                def budget(reserve: float = 0.0) -> float:
                    if deadline is None:
                        return SYNC_TIMEOUT_SECONDS
                    return max(1.0, min(SYNC_TIMEOUT_SECONDS, deadline - time.monotonic() - reserve))

                before = await self.total_changes(tenant)
                try:
                    await self.replicator.sync(db_path, wait=True, timeout=budget(UNREGISTER_RESERVE_SECONDS))
                    shipped = True
                except ReplicationError as err:
                    log.warning("tenant %s: final sync before closing failed (%s); the local copy stays "
                                "the newest", slot.tenant_id, err)
                try:
                    await self.replicator.unregister(db_path, timeout=budget())
                except ReplicationError as err:  # retried by the replicator, counted by fences and releases
                    log.warning("tenant %s: unregister not confirmed (retried): %s", slot.tenant_id, err)
                # A request admitted earlier may have written after the sync started.
                shipped = shipped and await self.total_changes(tenant) == before
            await self.close_connection(slot, tenant, shipped)
        finally:
            slot.closed()
        return True

    async def released_by_workers(self, slot: TenantSlot, deadline: float | None = None) -> None:
        """With worker processes: once the tenant left SERVING, wait until none of them has a connection to it
        (their requests in flight finish first), so this process's final sync ships every write. A worker that
        does not let go by ``deadline`` is stopped (:meth:`SharedState.closed_everywhere`)."""
        if self.shared is not None:
            await self.shared.closed_everywhere(slot.tenant_id, deadline)

    async def total_changes(self, tenant: Tenant) -> int:
        """Rows the tenant's connection changed since it was opened (every write of the tenant goes through it),
        read in the tenant's turn: after the requests queued before, so a write in flight is counted."""
        return await self.db.run(tenant.id, tenant.conn.total_changes, bounded=False)

    async def close_connection(self, slot: TenantSlot, tenant: Tenant, shipped: bool) -> None:
        """The last step of every close: checkpoint and close the database (in the tenant's turn, after the
        requests that still hold it), then record in its marker whether its final state is in the replica (a
        failed checkpoint counts as not shipped; it never stops the node)."""
        if self.on_settings_read is not None:
            with contextlib.suppress(RuntimeError):  # the database threads stopped: learned at the next open
                await self.db.run(tenant.id, lambda: self._settings_read(tenant), bounded=False)
        try:
            await self.checkpoints.close_database(tenant)
        except Exception:  # noqa: BLE001 - a failed checkpoint must not stop the node or a fence
            shipped = False
            log.exception("closing tenant %s failed", slot.tenant_id)
        await self.copies.mark_closed(slot, shipped)

    def _settings_read(self, tenant: Tenant) -> None:
        if self.on_settings_read is not None and not tenant.closed:
            try:
                self.on_settings_read(tenant)
            except Exception:  # noqa: BLE001 - learned again at the next open or close
                log.exception("tenant %s: reading its settings failed", tenant.id)

    def close_evicted(self, evicted: list[str]) -> None:
        for closed in evicted:
            self.background.spawn(self.close(closed, "evicted"))

    async def drop(self, slot: TenantSlot, epoch: int, why: str, deadline: float | None = None) -> None:
        """Stop serving the tenant here (released, or no longer assigned) and close it."""
        slot.assignment = None
        self.cache.remove(slot.tenant_id)
        if await self.close(slot.tenant_id, "released" if why == "released" else "unassigned", deadline):
            log.info("closed tenant %s (epoch %d): %s", slot.tenant_id, epoch, why)

    async def close_superseded(self, slot: TenantSlot) -> None:
        """Close an open tenant the control plane placed again since it was opened (it is vetted again when
        next opened)."""
        try:
            async with slot.lock:
                if slot.tenant is not None and slot.superseded:  # a request may have done it
                    self.cache.remove(slot.tenant_id)
                    await self.close_locked(slot, "reassigned")
        finally:
            slot.reassigning = False

    async def remove_data(self, slot: TenantSlot) -> None:
        """The tenant was deleted: close it and remove its files from this node."""
        self.cache.remove(slot.tenant_id)
        slot.assignment = None
        slot.released = None  # the id may be created again later, starting at epoch 1
        await self.close(slot.tenant_id, "deleted")
        self.copies.remove(slot.tenant_id)
        if self.shared is not None:
            self.shared.forget(slot.tenant_id)

    async def retire_local_copy(self, slot: TenantSlot) -> None:
        async with slot.lock:
            await self.retire_locked(slot)

    async def retire_locked(self, slot: TenantSlot) -> None:
        """With the tenant's lock held: take its local copy out of service if it is marked stale (see
        :meth:`LocalCopies.retire`). If that fails the mark stays, and the tenant is not opened."""
        if not slot.stale:
            return
        slot.stale = False
        marker = slot.copy
        if slot.tenant is not None and marker is not None and slot.confirmed == marker.epoch:
            return  # open under the epoch the control plane confirms now: it is this node's copy
        tenant = slot.begin_closing()
        if tenant is not None:  # not expected: closed before being marked. Another node owns it: no flush.
            try:
                self.cache.remove(slot.tenant_id)
                self.metrics.closed("unassigned")
                if self.replicator is not None:
                    self.replicator.drop_without_flush(tenant.directory / DATA_DB)
                slot.copy = None
                await self.released_by_workers(slot)
                await self.checkpoints.close_database(tenant)
            finally:
                slot.closed()
        try:
            self.copies.retire(slot.tenant_id, "another node owns the tenant now")
        except OSError as err:  # the copy must not be served: keep refusing to open it
            slot.stale = True
            log.error("tenant %s: could not retire the local copy: %s", slot.tenant_id, err)

    async def close_all(self, budget: float = CLOSE_ALL_SECONDS, finish_by: float | None = None) -> None:
        """Close every open tenant (final sync to the replica first), waiting ``budget`` seconds for that; a
        tenant whose sync does not finish in time stays whole on local disk and is shipped when next opened.
        A statement still running then (a slow request, one that held up a close) is interrupted, so that the
        database threads are free to stop. ``finish_by`` (monotonic): when all of it must be over (a stop's
        bound), the closes' wait shortened to leave the last steps :data:`CLOSE_LEFT_SECONDS`."""
        if finish_by is not None:
            budget = min(budget, finish_by - time.monotonic() - CLOSE_LEFT_SECONDS)
        opened = [slot.tenant for slot in self.slots.serving_slots() if slot.tenant is not None]
        closing = [*self.background.tasks,
                   *(asyncio.ensure_future(self.close(slot.tenant_id, "shutdown"))
                     for slot in self.slots.serving_slots())]
        if closing:
            _, late = await asyncio.wait(closing, timeout=max(0.0, budget))
            for task in late:
                task.cancel()
            if late:
                log.warning("shutdown: %d tenant(s) closed without a final replica sync", len(late))
        for tenant in opened:  # a cancelled close left its connection open (with the statement it waited for)
            if not tenant.closed:
                tenant.conn.interrupt()  # a statement still running on a database thread stops now
        for slot in self.slots.serving_slots():
            assert slot.tenant is not None
            tenant = slot.tenant
            wait = 1.0 if finish_by is None else max(0.0, min(1.0, finish_by - time.monotonic()))
            try:
                await asyncio.wait_for(self.checkpoints.close_database(tenant), wait)
            except Exception as err:  # noqa: BLE001 - shutting down: the WAL is checkpointed on next open
                log.warning("shutdown: tenant %s not closed cleanly: %r", tenant.id, err)
        for slot in self.slots.serving_slots():
            slot.begin_closing()
            slot.closed()

    def close_idle(self, idle_seconds: float) -> None:
        """Close the tenants idle for ``idle_seconds``, and open tenants the LRU no longer tracks (dropped from
        it while they were being opened, e.g. by a release that was then rolled back) once they were seen
        untracked at two checks in a row."""
        for tenant_id in self.cache.evict_idle(idle_seconds):
            self.background.spawn(self.close(tenant_id, "idle"))
        untracked = {slot.tenant_id for slot in self.slots.serving_slots()
                     if slot.tenant_id not in self.cache and not slot.reassigning}
        for tenant_id in untracked & self._untracked:
            self.background.spawn(self.close(tenant_id, "idle"))
        self._untracked = untracked - self._untracked
