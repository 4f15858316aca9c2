"""Who checkpoints a tenant's WAL: Litestream, while it may be replicating the tenant; the node otherwise.

A checkpoint Litestream did not make can move the WAL past frames it has not read, and its replica would
restore corrupt (see :mod:`pbfast.tenant_node.replication`). So a replicated tenant's connection runs with
:data:`~pbfast.tenant_node.replication.NO_AUTOCHECKPOINT`, is closed without a checkpoint while Litestream may
replicate it (:meth:`Checkpoints.close_database`), and the WAL of an open tenant Litestream does not
replicate right now (it is down, or the registration is not confirmed) is checkpointed by the node once it
grows past :data:`UNWATCHED_WAL_BYTES` (:meth:`Checkpoints.checkpoint_unwatched`).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import DATA_DB, Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.replication import NO_AUTOCHECKPOINT, Replicator
from pbfast.tenant_node.slots import Slots
from pbfast.tenant_node.tasks import BackgroundTasks

__all__ = ["UNWATCHED_WAL_BYTES", "Checkpoints"]

log = component_logger("TenantNode")

UNWATCHED_WAL_BYTES = 4 << 20  # an open tenant litestream does not replicate: checkpointed past this (~SQLite's
# own 1000 pages), since its connection does not checkpoint (NO_AUTOCHECKPOINT)


def _checkpoint(db_path: Path) -> None:
    """A PASSIVE checkpoint of the database on a connection of its own (the tenant's may be busy)."""
    connection = apsw.Connection(str(db_path))
    try:
        connection.setbusytimeout(1000)
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        connection.close()


class Checkpoints:
    def __init__(self, slots: Slots, db: DbScheduler, replicator: Replicator | None,
                 background: BackgroundTasks) -> None:
        self.slots = slots
        self.db = db
        self.replicator = replicator
        self.background = background
        self.running = False  # a pass of checkpoint_unwatched runs

    def leave_to_litestream(self, tenant: Tenant) -> None:
        """Make the connection of a tenant being opened leave checkpoints to litestream (if it replicates)."""
        if self.replicator is not None:
            tenant.conn.execute(NO_AUTOCHECKPOINT)

    def may_checkpoint(self, tenant: Tenant) -> bool:
        return self.replicator is None or not self.replicator.watching(tenant.directory / DATA_DB)

    async def close_database(self, tenant: Tenant) -> None:
        """Close the tenant's connection in its turn (after the requests that still hold it), checkpointed
        first (data.db whole) unless litestream may be replicating it."""
        checkpoint = self.may_checkpoint(tenant)
        await self.db.run(tenant.id, lambda: tenant.close(checkpoint=checkpoint), bounded=False)

    def close_unshared(self, tenant: Tenant) -> None:
        """:meth:`close_database` for a tenant no request can hold yet (one that failed to open)."""
        tenant.close(checkpoint=self.may_checkpoint(tenant))

    def checkpoint_unwatched_soon(self) -> None:
        """Start a pass of :meth:`checkpoint_unwatched` unless one runs (from the idle check)."""
        if self.replicator is not None and self.slots.serving_count() and not self.running:
            self.running = True
            self.background.spawn(self._checkpoint_unwatched_once())

    async def _checkpoint_unwatched_once(self) -> None:
        try:
            await self.checkpoint_unwatched()
        finally:
            self.running = False

    async def checkpoint_unwatched(self) -> None:
        """Checkpoint the open tenants litestream does not replicate right now once their WAL passed
        :data:`UNWATCHED_WAL_BYTES`: their connections leave checkpoints to litestream, and the WAL must not
        grow without bound meanwhile."""
        assert self.replicator is not None
        for slot in self.slots.serving_slots():
            tenant = slot.tenant
            if tenant is None:
                continue
            db_path = tenant.directory / DATA_DB
            try:
                if os.stat(f"{db_path}-wal").st_size < UNWATCHED_WAL_BYTES:
                    continue
            except OSError:
                continue
            async with self.replicator.registrations_held(db_path):
                if self.replicator.watching(db_path) or slot.tenant is not tenant:
                    continue
                try:
                    await asyncio.to_thread(_checkpoint, db_path)
                except apsw.Error as err:
                    log.warning("tenant %s: checkpoint while not replicated failed: %s", slot.tenant_id, err)
                else:
                    log.info("tenant %s: checkpointed its WAL (litestream does not replicate it now)",
                             slot.tenant_id)
