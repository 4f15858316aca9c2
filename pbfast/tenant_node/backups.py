"""Where a node keeps its tenants' backups (``/api/backups``): its object store (the replica store's bucket
or local directory), under ``tenants/{id}/{incarnation}/backups/``, the incarnation read from the tenant's
local copy marker, so a re-created tenant id starts without the backups of the tenant deleted before it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from pbfast.cluster.heartbeat import is_incarnation
from pbfast.pocketbase.backup_store import BackupLocation
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.local_copy import MarkerError, read_marker

__all__ = ["SCHEDULE_HINT", "ScheduleHints", "backup_location", "backup_prefix"]


def backup_prefix(tenant: Tenant) -> str:
    try:
        marker = read_marker(tenant.directory)
    except MarkerError:
        marker = None
    if marker is not None and is_incarnation(marker.incarnation):
        return f"tenants/{tenant.id}/{marker.incarnation}/backups/"
    return f"tenants/{tenant.id}/backups/"  # a copy without a marker: served without a control plane


def backup_location(bucket: str, endpoint: str | None, data_dir: Path) -> BackupLocation:
    """The node's backups: S3 at ``endpoint`` (credentials from the environment, as Litestream's), else
    ``<data-dir>/replica``."""
    return BackupLocation(bucket, endpoint, data_dir / "replica", backup_prefix)


SCHEDULE_HINT: Final = "backup-schedule"


class ScheduleHints:
    """A tenant's backup cron expression kept beside its backups (``tenants/{id}/{incarnation}/backup-schedule``
    in the node's object store), so that a node the tenant moves to learns its schedule before it opens the
    tenant (pbfast.tenant_node.backup_cron). Written when a node learns a changed schedule, deleted when it
    has none. Blocking (the object store's calls): call from a thread."""

    def __init__(self, location: BackupLocation) -> None:
        self.location = location

    def read(self, tenant_id: str, incarnation: str) -> str:
        """The tenant's cron expression, "" when it has none. Raises StoreError when the store fails."""
        store = self.location.store_at(f"tenants/{tenant_id}/{incarnation}/")
        if not store.exists(SCHEDULE_HINT):
            return ""
        with tempfile.TemporaryDirectory(prefix=".hint-") as scratch:
            path = Path(scratch) / SCHEDULE_HINT
            store.get(SCHEDULE_HINT, path)
            return path.read_text(encoding="utf-8", errors="replace").strip()

    def write(self, tenant: Tenant, cron: str) -> None:
        """Keep (or, for "", delete) the tenant's cron expression. Raises StoreError when the store fails."""
        try:
            marker = read_marker(tenant.directory)
        except MarkerError:
            marker = None
        if marker is None or not is_incarnation(marker.incarnation):
            return  # served without a control plane: it never moves
        store = self.location.store_at(f"tenants/{tenant.id}/{marker.incarnation}/")
        if not cron:
            if store.exists(SCHEDULE_HINT):
                store.delete(SCHEDULE_HINT)
            return
        with tempfile.TemporaryDirectory(prefix=".hint-") as scratch:
            path = Path(scratch) / SCHEDULE_HINT
            path.write_text(cron, encoding="utf-8")
            store.put(SCHEDULE_HINT, path)
