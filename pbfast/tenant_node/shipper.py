"""Ships what was written to replicated databases sooner than Litestream's own intervals.

Litestream 0.5 gives a database registered over its socket fixed 1 s monitor and sync intervals (settable
only for ``dbs:`` in its config file), so a write reached the replica 0-1 s after its commit (measured p50
0.56 s, max 1.0 s). :class:`Shipper` looks at every registered database's WAL each
:data:`SHIP_INTERVAL_SECONDS` and asks for a waited ``/sync`` of those written since the last look: RPO
~0.1-0.3 s for ~5 S3 PUTs/s per continuously written tenant, nothing for idle ones
(``benchmarks/RESULTS.md``).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pbfast.logs import component_logger
from pbfast.tenant_node.replica import ReplicationError

__all__ = ["SHIP_CONCURRENCY", "SHIP_INTERVAL_SECONDS", "SHIP_TIMEOUT_SECONDS", "Shipper"]

log = component_logger("TenantNode")

SHIP_INTERVAL_SECONDS = 0.2  # 0: leave shipping to Litestream's own 1 s intervals
SHIP_TIMEOUT_SECONDS = 10
SHIP_CONCURRENCY = 4  # shipping syncs in flight at once (S3 down: they wait, the others do not pile up)


class Shipper:
    """Ships what was written to the registered databases sooner than Litestream's own 1 s intervals: every
    ``interval`` a waited ``/sync`` of each registered database whose WAL changed since the last look."""

    def __init__(self, registered: dict[str, str], post: Callable[[str, dict[str, Any]], Awaitable[object]],
                 interval: float) -> None:
        self.registered = registered  # the replicator's: db path -> replica url (changed in place)
        self._post = post
        self.interval = interval
        self._wal_seen: dict[str, tuple[int, int]] = {}  # db path -> (mtime ns, size) of its WAL at the last look
        self._shipping: set[asyncio.Task[None]] = set()
        self._ship_slots = asyncio.Semaphore(SHIP_CONCURRENCY)
        self._stopping = False

    def forget(self, path: str | None = None) -> None:
        """Forget what was seen of ``path``'s WAL (every path's with None)."""
        if path is None:
            self._wal_seen.clear()
        else:
            self._wal_seen.pop(path, None)

    def stop(self) -> None:
        self._stopping = True
        for task in self._shipping:
            task.cancel()

    async def run(self) -> None:
        """Every ``interval``: a waited ``/sync`` of each registered database whose WAL changed since the
        last look, or seen for the first time (one at a time per database). Idle databases cost one ``stat``
        per look and no S3 request."""
        in_flight: set[str] = set()

        async def ship(path: str) -> None:
            try:
                async with self._ship_slots:
                    await self._post("/sync", {"path": path, "wait": True, "timeout": SHIP_TIMEOUT_SECONDS})
            except ReplicationError as err:  # Litestream's own intervals still ship it; lag shows in health
                log.debug("shipping %s: %s", path, err)
            except Exception:  # noqa: BLE001 - logged here, not when the task is collected
                log.exception("shipping %s failed", path)
            finally:
                in_flight.discard(path)

        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                self._ship_pass(in_flight, ship)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("shipping pass failed")

    def _ship_pass(self, in_flight: set[str], ship: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """One look at every registered database's WAL; ships those written since the last look."""
        if len(self._wal_seen) > len(self.registered):  # forgotten without unregister (fencing)
            for path in [p for p in self._wal_seen if p not in self.registered]:
                del self._wal_seen[path]
        for path in list(self.registered):
            if path in in_flight:  # compared with the mark from before that sync once it is done
                continue
            try:
                stat = os.stat(path + "-wal")
            except OSError:
                continue
            mark = (stat.st_mtime_ns, stat.st_size)
            previous = self._wal_seen.get(path)
            self._wal_seen[path] = mark
            if previous == mark:
                continue
            in_flight.add(path)
            task = asyncio.create_task(ship(path), name="litestream-ship")
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)
