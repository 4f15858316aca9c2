"""Data in and out of a tenant, for the control plane: import an uploaded PocketBase ``data.db`` (or a tar of
a data dir: ``data.db`` and ``storage/``, :mod:`pbfast.tenant_node.data_archive`) into a new tenant, export a
consistent snapshot (with its files on request), and set superusers (the first one, given at the tenant's creation, and
those the control plane upserts).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from pbfast.cluster.heartbeat import FirstSuperuser
from pbfast.durable import fsync_directory
from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.filesystem import STORAGE_DIR, StorageError, files_of
from pbfast.pocketbase.sqlite_guard import TimeLimitExceeded
from pbfast.pocketbase.tenant import DATA_DB, backup_database, check_pocketbase_database, new_record_id
from pbfast.tenant_node.copies import LocalCopies
from pbfast.tenant_node.data_archive import is_archive, pack, unpack
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.local_copy import CopyMarker, write_marker
from pbfast.tenant_node.ownership import Ownership, moved
from pbfast.tenant_node.pool import TenantPool
from pbfast.tenant_node.replica import ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.slots import Slots, TenantSlot
from pbfast.tenant_node.superusers import upsert_superuser
from pbfast.tenant_node.tasks import BackgroundTasks

__all__ = ["Transfer"]

log = component_logger("TenantNode")

_DISK_CHUNK = 1 << 20  # bytes per disk write or read of an import or export


class Transfer:
    def __init__(self, node_id: str, slots: Slots, ownership: Ownership, pool: TenantPool, copies: LocalCopies,
                 db: DbScheduler, replicator: Replicator | None, background: BackgroundTasks,
                 superusers_applied: set[str]) -> None:
        self.node_id = node_id
        self.slots = slots
        self.ownership = ownership
        self.pool = pool
        self.copies = copies
        self.db = db
        self.replicator = replicator
        self.background = background
        self.superusers_applied = superusers_applied  # reported with the next heartbeat

    # ---- superusers ---------------------------------------------------------------------------------

    async def upsert_tenant_superuser(self, tenant_id: str, email: str, password_hash: str) -> None:
        slot = self.slots[tenant_id]
        if slot.importing:
            raise ApiError(409, "The tenant is being imported; retry afterwards.")
        async with self.pool.using(tenant_id) as tenant:
            try:
                await self.db.run(tenant_id, lambda: upsert_superuser(tenant, email, password_hash), bounded=False)
            except TimeLimitExceeded as err:  # the tenant's own trigger on _superusers held the write
                raise ApiError(400, f"The tenant's database did not take the superuser: {err}.") from err
        slot.first_superuser = None
        self.superusers_applied.add(tenant_id)

    def first_superuser(self, slot: TenantSlot, superuser: FirstSuperuser) -> None:
        """The first superuser of a tenant, set at creation: applied once the database exists (never
        overwriting a superuser of that email created meanwhile), then reported to the control plane."""
        tenant_id = slot.tenant_id
        if slot.tenant is not None or ((self.copies.directory(tenant_id) / DATA_DB).exists() and not slot.importing):
            self.background.spawn(self._apply_first_superuser(slot, superuser))
        else:
            slot.first_superuser = superuser

    async def _apply_first_superuser(self, slot: TenantSlot, superuser: FirstSuperuser) -> None:
        tenant_id = slot.tenant_id
        try:
            async with self.pool.using(tenant_id) as tenant:
                await self.db.run(tenant_id, lambda: upsert_superuser(
                    tenant, superuser.email, superuser.password_hash, overwrite=False), bounded=False)
        except Exception:  # noqa: BLE001 - retried with the next heartbeat
            log.exception("tenant %s: applying the first superuser failed", tenant_id)
            return
        slot.first_superuser = None
        self.superusers_applied.add(tenant_id)

    # ---- import and export --------------------------------------------------------------------------

    async def import_data(self, tenant_id: str, chunks: AsyncIterator[bytes]) -> None:
        """Install an uploaded PocketBase data.db as the tenant's database (only for a tenant without data):
        written to a temporary file, fsynced, checked (``PRAGMA integrity_check``, PocketBase tables), then
        renamed into place atomically, with the marker of the tenant's assignment here
        (:mod:`pbfast.tenant_node.local_copy`)."""
        slot = self.slots[tenant_id]
        directory = self.copies.directory(tenant_id)
        if slot.tenant is not None or (directory / DATA_DB).exists() or slot.importing:
            raise ApiError(409, "The tenant already has data; import only into a new tenant.")
        slot.importing = True  # requests get 503 meanwhile, and do not wait for the lock
        try:
            async with slot.lock:  # serialised with opening and closing
                await self._import_locked(slot, directory, chunks)
            # Replicated before the import is acknowledged: else a node lost before the tenant's first
            # request would lose it.
            async with self.pool.using(tenant_id) as tenant:
                if self.replicator is not None:
                    try:
                        await self.replicator.sync(tenant.directory / DATA_DB, wait=True)
                    except ReplicationError as err:
                        log.warning("tenant %s: imported, but not in the replica yet (%s); shipped when storage "
                                    "answers", tenant_id, err)
        finally:
            slot.importing = False

    async def _import_locked(self, slot: TenantSlot, directory: Path, chunks: AsyncIterator[bytes]) -> None:
        tenant_id = slot.tenant_id
        self.ownership.check_lease()
        epoch = await self.ownership.serving_epoch(slot)
        if slot.tenant is not None or (directory / DATA_DB).exists():
            raise ApiError(409, "The tenant already has data; import only into a new tenant.")
        incarnation = slot.current_incarnation
        if self.replicator is not None:
            # Data written on another node (or before this node's disk was lost) lives only in the replica:
            # installing an upload here would fork the tenant's history.
            if slot.seed is not None:
                raise ApiError(409, "The tenant already has data (it was restored in place); "
                                    "import only into a new tenant.")
            try:
                has_replica = await self.replicator.has_replica(tenant_id, incarnation)
            except ReplicationError as err:
                raise ApiError(503, f"Cannot check the tenant's replica: {err}",
                               headers=[("retry-after", "5")]) from err
            if has_replica:
                raise ApiError(409, "The tenant already has data in its replica; import only into a new tenant.")
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".import-{new_record_id()}.db"
        try:
            # Disk writes (and the open) run off the event loop, a MiB at a time, so a slow disk stalls no tenant.
            out = await asyncio.to_thread(open, temporary, "wb")
            try:
                pending: list[bytes] = []
                pending_bytes = 0
                async for chunk in chunks:
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                    if pending_bytes >= _DISK_CHUNK:
                        await asyncio.to_thread(out.write, b"".join(pending))
                        pending, pending_bytes = [], 0
                await asyncio.to_thread(_write_and_sync, out, b"".join(pending))
            finally:
                await asyncio.to_thread(out.close)
            if await asyncio.to_thread(is_archive, temporary):
                # a data dir: its files go to storage/ here, moved into the object store when the tenant opens
                unpacked = directory / f".import-{new_record_id()}.db"
                try:
                    await asyncio.to_thread(unpack, temporary, unpacked, directory / STORAGE_DIR)
                except (ValueError, OSError, tarfile.TarError, StorageError) as err:
                    unpacked.unlink(missing_ok=True)
                    raise ApiError(400, f"The uploaded archive is not a usable PocketBase data dir: {err}") from err
                os.replace(unpacked, temporary)
            problem = await asyncio.to_thread(check_pocketbase_database, temporary)
            if problem:
                raise ApiError(400, f"The uploaded file is not a usable PocketBase data.db: {problem}")
            # The upload took a while: install it only if this node still serves the tenant as before.
            self.ownership.check_lease()
            if epoch is not None and (slot.confirmed != epoch or epoch <= (slot.released or 0)):
                raise moved("The tenant was placed elsewhere during the upload; retry.")
            if epoch is not None:  # first, so the copy is never without its marker
                await asyncio.to_thread(write_marker, directory, CopyMarker(incarnation, epoch, self.node_id))
            os.replace(temporary, directory / DATA_DB)
            fsync_directory(directory)
            log.info("imported the database of tenant %s", tenant_id)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory / STORAGE_DIR, True)  # no files of a failed import
            raise
        finally:
            temporary.unlink(missing_ok=True)

    async def export_chunks(self, tenant_id: str, with_files: bool = False) -> AsyncIterator[bytes]:
        """A consistent snapshot of the tenant's data.db (SQLite online backup), streamed in chunks; with
        ``with_files``, a tar of it and the tenant's files (``storage/``), read from the object store."""
        async with self.pool.using(tenant_id) as tenant:
            snapshot = tenant.directory / f".export-{new_record_id()}.db"
            try:
                await asyncio.to_thread(backup_database, tenant.directory / DATA_DB, snapshot)
                if with_files:
                    archive = tenant.directory / f".export-{new_record_id()}.tar"
                    try:
                        await asyncio.to_thread(pack, snapshot, files_of(tenant), archive)
                    except BaseException:
                        archive.unlink(missing_ok=True)
                        raise
                    finally:
                        snapshot.unlink(missing_ok=True)
                    snapshot = archive
            except BaseException:
                snapshot.unlink(missing_ok=True)
                raise
        try:
            source = await asyncio.to_thread(open, snapshot, "rb")
            try:
                while chunk := await asyncio.to_thread(source.read, _DISK_CHUNK):
                    yield chunk
            finally:
                source.close()
        finally:
            snapshot.unlink(missing_ok=True)


def _write_and_sync(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()
    os.fsync(out.fileno())
