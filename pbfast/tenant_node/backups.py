"""Where a node keeps its tenants' backups (``/api/backups``): its object store (the replica store's bucket
or local directory), under ``tenants/{id}/{incarnation}/backups/``, the incarnation read from the tenant's
local copy marker, so a re-created tenant id starts without the backups of the tenant deleted before it."""

from __future__ import annotations

from pathlib import Path

from pbfast.cluster.heartbeat import is_incarnation
from pbfast.pocketbase.backup_store import BackupLocation
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.local_copy import MarkerError, read_marker

__all__ = ["backup_location", "backup_prefix"]


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
