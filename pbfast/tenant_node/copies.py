"""The tenants' local copies under ``<data-dir>/tenants/<id>/``: what is on disk, recorded in each copy's
marker (:mod:`pbfast.tenant_node.local_copy`), installed, retired and cleaned up.

A local copy that another node may have written after this one let go of the tenant (released for a move, or
re-placed while this node was fenced or down) is never served again: it is deleted when its last state was
confirmed in the replica, else moved to ``<data-dir>/retired/`` for the operator
(:meth:`LocalCopies.retire`), and the tenant is restored from its replica if it comes back.

Blocking methods say so; the others run on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from glob import escape as glob_escape
from pathlib import Path

from pbfast.durable import fsync_directory
from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import DATA_DB, new_record_id
from pbfast.tenant_node.local_copy import MARKER_FILE, CopyMarker, MarkerError, read_marker, write_marker
from pbfast.tenant_node.slots import Slots, TenantSlot

__all__ = ["RETIRED_DIR", "LocalCopies", "discard"]

log = component_logger("TenantNode")

RETIRED_DIR = "retired"  # under the data dir: local copies that must not be served again


def discard(temporary: Path) -> None:
    """Remove a temporary file and what SQLite or Litestream put beside it."""
    for leftover in temporary.parent.glob(glob_escape(temporary.name) + "*"):
        leftover.unlink(missing_ok=True)


class LocalCopies:
    def __init__(self, tenants_dir: Path, node_id: str, slots: Slots) -> None:
        self.tenants_dir = tenants_dir
        self.node_id = node_id
        self.slots = slots

    def directory(self, tenant_id: str) -> Path:
        return self.tenants_dir / tenant_id

    def scratch(self, tenant_id: str) -> Path:
        """A new temporary database path beside the tenants' directories (never a tenant id: a leading dot)."""
        self.tenants_dir.mkdir(parents=True, exist_ok=True)
        return self.tenants_dir / f".restore-{tenant_id}-{new_record_id()}.db"

    def shipped(self, tenant_id: str) -> bool:
        """Whether the tenant's local copy (if any) is known to be whole in the replica (blocking)."""
        directory = self.directory(tenant_id)
        if not (directory / DATA_DB).exists():
            return True  # nothing here that the replica lacks
        try:
            marker = read_marker(directory)
        except MarkerError:
            return False
        # No marker: a copy closed by a pbfast from before markers, which closed only after a final sync.
        return marker is None or marker.shipped

    async def mark_closed(self, slot: TenantSlot, shipped: bool) -> None:
        """The tenant was closed: if its final state is in the replica, say so in its marker (the copy may
        then be deleted rather than kept when it is retired, also after a restart)."""
        marker, slot.copy = slot.copy, None
        if marker is None:
            return
        if not shipped:
            slot.unshipped = True
            return
        slot.unshipped = False
        try:
            await asyncio.to_thread(write_marker, self.directory(slot.tenant_id),
                                    CopyMarker(marker.incarnation, marker.epoch, self.node_id, shipped=True))
        except OSError as err:  # it then counts as not shipped: kept, not deleted, when retired
            log.warning("tenant %s: could not record that its copy is in the replica: %s", slot.tenant_id, err)

    def install(self, restored: Path, directory: Path) -> None:
        """Put a restored database in place as the tenant's data.db (atomic rename; blocking)."""
        directory.mkdir(parents=True, exist_ok=True)
        for stale in (DATA_DB + "-wal", DATA_DB + "-shm"):
            (directory / stale).unlink(missing_ok=True)
        os.replace(restored, directory / DATA_DB)
        fsync_directory(directory)
        fsync_directory(self.tenants_dir)
        discard(restored)

    def retire(self, tenant_id: str, why: str) -> None:
        """Take the tenant's local copy (closed) out of ``tenants/``: deleted when its marker says its final
        state was confirmed in the replica and it was not written since, else kept under
        ``<data-dir>/retired/<id>-<time>-<random>/`` (it may hold writes the replica never got; an operator
        can inspect it with stock PocketBase). Raises OSError if it cannot be moved (blocking)."""
        directory = self.directory(tenant_id)
        if not directory.exists():
            return
        try:
            marker = read_marker(directory)
        except MarkerError:
            marker = None
        suffix = f"{time.strftime('%Y%m%dT%H%M%S')}-{new_record_id()[:6]}"
        if marker is not None and marker.shipped:
            doomed = self.tenants_dir / f".deleting-{tenant_id}-{suffix}"  # never a tenant id: no leading dot
            os.replace(directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            log.info("tenant %s: removed the local copy (%s; its last state is in the replica)", tenant_id, why)
            return
        retired = self.tenants_dir.parent / RETIRED_DIR / f"{tenant_id}-{suffix}"
        retired.parent.mkdir(parents=True, exist_ok=True)
        os.replace(directory, retired)
        log.warning("tenant %s: %s; its local copy may hold writes the replica lacks: moved it to %s",
                    tenant_id, why, retired)

    def remove(self, tenant_id: str) -> None:
        """The tenant was deleted: remove its files from this node."""
        directory = self.directory(tenant_id)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            log.info("removed the data of deleted tenant %s", tenant_id)

    def clean_leftovers(self) -> int:
        """Remove what an interrupted run left behind (blocking; call before serving): copies being deleted
        (``tenants/.deleting-*``), restores and checks (``tenants/.restore-*``), imports and exports
        (``tenants/<id>/.import-*``, ``.export-*``) and half-written markers; note the copies this node closed
        without their final sync (shipped once the node owns them again). Returns how many were removed."""
        if not self.tenants_dir.is_dir():
            return 0
        removed = 0
        leftovers = [*self.tenants_dir.glob(".deleting-*"), *self.tenants_dir.glob(".restore-*"),
                     *self.tenants_dir.glob("*/.import-*"), *self.tenants_dir.glob("*/.export-*"),
                     *self.tenants_dir.glob(f"*/.{MARKER_FILE}.*.tmp")]
        for leftover in leftovers:
            try:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
                removed += 1
            except OSError as err:
                log.warning("could not remove the leftover %s: %s", leftover, err)
        if removed:
            log.info("removed %d leftover(s) of an earlier run under %s", removed, self.tenants_dir)
        for marker_path in self.tenants_dir.glob(f"*/{MARKER_FILE}"):
            try:
                marker = read_marker(marker_path.parent)
            except MarkerError:
                continue
            if marker is not None and not marker.shipped and marker.node_id == self.node_id:
                self.slots[marker_path.parent.name].unshipped = True
        return removed
