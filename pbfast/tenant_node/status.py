"""The node's state as its health check and metrics report it: replication (Litestream up, the replica's
lag, damaged tenants), the lease, open and assigned tenants, the database threads.

Thread-safety: event loop only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pbfast.pocketbase.realtime import RealtimeHub
from pbfast.tenant_node.db_scheduler import DbScheduler, TenantLoad
from pbfast.tenant_node.metrics import NodeGauges
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.restore import Restorer
from pbfast.tenant_node.slots import Slots

__all__ = ["NodeStatus"]


class NodeStatus:
    def __init__(self, slots: Slots, ownership: Ownership, restorer: Restorer, db: DbScheduler,
                 replicator: Replicator | None, db_loads: Callable[[], dict[str, TenantLoad]] | None = None) -> None:
        self.slots = slots
        self.db_loads = db_loads  # each tenant's database load on the node (default: this process's)
        self.ownership = ownership
        self.restorer = restorer
        self.db = db
        self.replicator = replicator
        self._replica_current_at = time.time()  # when the replica was last known to hold every write
        self.realtime: RealtimeHub | None = None  # the node's realtime streams (set by the node)

    def replication(self) -> dict[str, Any]:
        status = self.replicator.status() if self.replicator is not None else {"running": False, "replicating": 0}
        return {**status, "damagedTenants": self.restorer.damaged_tenants()}

    async def replication_lag(self) -> float:
        """Seconds the replica is behind: the age of the oldest write not known to be in it (0.0 when
        everything written is shipped). While Litestream is down or does not answer nothing is shipped, so
        it is the time since the replica was last known to be current, if a replicated database was written
        since then."""
        if self.replicator is None:
            return 0.0
        lag = await self.replicator.lag_seconds()
        now = time.time()
        if lag is not None:
            self._replica_current_at = now - lag
            return lag
        written = 0.0
        for path in list(self.replicator.registered):
            for name in (path, path + "-wal"):
                try:
                    written = max(written, os.stat(name).st_mtime)
                except OSError:
                    pass
        return round(now - self._replica_current_at, 3) if written > self._replica_current_at else 0.0

    async def gauges(self) -> NodeGauges:
        loads, queued = self.db.snapshot()
        if self.db_loads is not None:
            loads = self.db_loads()
        status = self.replication()
        lease = self.ownership.lease
        return NodeGauges(
            open_tenants=self.slots.serving_count(),
            assigned_tenants=len(self.slots.where(lambda slot: slot.assignment)),
            replicating_tenants=len(self.replicator.registered) if self.replicator is not None else 0,
            litestream_up=bool(status.get("running")), litestream_restarts=int(status.get("restarts", 0)),
            lag_seconds=await self.replication_lag(), damaged_tenants=self.restorer.damaged_tenants(),
            lease_valid=not self.ownership.lease_lost(),
            lease_remaining=lease.remaining() if lease is not None else 0.0,
            heartbeat_age=lease.age() if lease is not None else None,
            node_timeout=lease.node_timeout if lease is not None else None,
            lease_extensions=lease.extensions if lease is not None else 0,
            db_threads=self.db.threads, db_queued=queued, db_load=loads,
            realtime_streams=self.realtime.open_streams if self.realtime is not None else 0,
            realtime_dropped=self.realtime.dropped if self.realtime is not None else 0,
            restores_in_node=self.replicator.reader.restored if self.replicator is not None else 0,
            restores_by_litestream=self.replicator.reader.passed_on if self.replicator is not None else 0)
