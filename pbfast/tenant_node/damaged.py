"""A tenant whose newest replicated state fails its integrity check (a bad tail of its replica).

One bad tail must not cost the whole tenant, nor may a damaged database be served. So when the latest state
restored from a replica fails ``PRAGMA integrity_check`` (or is not a PocketBase database), the node:

- keeps the restored file aside under ``<data-dir>/damaged/<id>/<incarnation>/`` (not served, not deleted:
  evidence for the operator), one per incarnation;
- looks for the newest earlier point in time whose restored state passes (:func:`newest_restorable`,
  bounded by :data:`SEARCH_SECONDS`), trying the whole seconds in which replica files were written (galloping
  back from the newest, then halving), then fractions of the second after the one found;
- answers the tenant's requests with 503 naming that point and the command that restores it in place
  (``pbfast tenant restore ID --at T``), without restoring again each time;
- says so in its log (error), metrics (``pbfast_node_damaged_restores_total``,
  ``pbfast_node_damaged_tenants``) and health (``data.replication.damagedTenants``).

The verdict holds for that incarnation until :data:`RECHECK_SECONDS` have passed (then the next request
restores again: the replica may have been repaired) or the incarnation changes (the operator restored in
place). Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pbfast.logs import component_logger
from pbfast.durable import fsync_directory
from pbfast.pocketbase.tenant import check_pocketbase_database, new_record_id
from pbfast.tenant_node.replica import NoStateAt, ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.timefmt import format_rfc3339

__all__ = ["DAMAGED_DIR", "DamagedState", "keep_aside", "newest_restorable"]

log = component_logger("TenantNode")

DAMAGED_DIR = "damaged"  # under the data dir
SEARCH_SECONDS = 60.0  # looking for the newest state that passes stops after this (the best found is named)
RECHECK_SECONDS = 600.0  # a damaged verdict is trusted this long before the replica is restored again
FRACTION_STEPS = 5  # halvings inside one second: the point found is within ~1/32 s of the newest that passes


@dataclass(frozen=True, slots=True)
class DamagedState:
    """Why a tenant incarnation is not served: its newest replicated state failed the check."""

    tenant_id: str
    incarnation: str
    problem: str  # what the check said
    kept_at: Path | None  # the damaged restored database, put aside
    restorable_at: str | None  # the newest point in time found whose state passes (RFC 3339), if any
    found_at: float  # time.time() of the verdict

    def current(self, incarnation: str, now: float) -> bool:
        """Whether the verdict still stands for ``incarnation``."""
        return incarnation == self.incarnation and now - self.found_at < RECHECK_SECONDS

    def message(self) -> str:
        """The 503 answer to the tenant's requests."""
        head = f"The tenant's newest replicated state is damaged ({self.problem}); it is not served. "
        if self.restorable_at is None:
            return head + ("No earlier state that passes the integrity check was found; an operator must "
                           f"restore tenant {self.tenant_id} to an earlier point in time.")
        return head + (f"The newest state found that passes is at {self.restorable_at}: an operator can restore "
                       f"it with `pbfast tenant restore {self.tenant_id} --at {self.restorable_at}`.")


def keep_aside(restored: Path, data_dir: Path, tenant_id: str, incarnation: str) -> Path:
    """Move a damaged restored database to ``<data_dir>/damaged/<id>/<incarnation>/<time>-<random>.db`` and
    return its new path; if one of that incarnation is kept already (an earlier check found it damaged too),
    that one's path, and ``restored`` stays where it is. Raises OSError."""
    directory = data_dir / DAMAGED_DIR / tenant_id / incarnation
    directory.mkdir(parents=True, exist_ok=True)
    earlier = sorted(directory.glob("*.db"))
    if earlier:
        return earlier[0]
    kept = directory / f"{time.strftime('%Y%m%dT%H%M%S')}-{new_record_id()[:6]}.db"
    os.replace(restored, kept)
    fsync_directory(directory)
    return kept


Trial = Callable[[str], Awaitable[bool | None]]


async def newest_restorable(replicator: Replicator, tenant_id: str, incarnation: str, scratch: Path,
                            budget: float = SEARCH_SECONDS) -> str | None:
    """The newest point in time (RFC 3339) whose state, restored from the incarnation's replica, passes the
    integrity check, or None when none was found within ``budget`` seconds. The latest state is known to
    fail. Restores go to temporary files in ``scratch``, removed afterwards."""
    deadline = time.monotonic() + budget

    async def passes(at: str) -> bool | None:
        """True/False: the state at ``at`` passes/fails (a failed restore fails); None: no state then."""
        target = scratch / f".restore-{tenant_id}-{new_record_id()}.db"  # cleaned up at start like any restore
        try:
            if not await replicator.restore(tenant_id, incarnation, target, at):
                return None
            return await asyncio.to_thread(check_pocketbase_database, target) is None
        except NoStateAt:
            return None
        except ReplicationError as err:  # a file that cannot be decoded is a bad tail too
            log.info("tenant %s: the state at %s cannot be restored: %s", tenant_id, at, err)
            return False
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)

    try:
        seconds = await replicator.file_times(replicator.store.url(tenant_id, incarnation))
    except ReplicationError as err:
        log.warning("tenant %s: cannot list the replica to find a restorable point: %s", tenant_id, err)
        return None
    return await search(seconds, passes, deadline)


def _end_of(second: float) -> str:
    """The last millisecond of a whole second: a restore at it includes every file written in that second."""
    return format_rfc3339(datetime.fromtimestamp(second, UTC) + timedelta(milliseconds=999))


async def search(seconds: list[float], passes: Trial, deadline: float) -> str | None:
    """The newest passing point among the ends of ``seconds`` (oldest first; the newest is known to fail),
    then refined inside the following second. Stops at ``deadline`` (monotonic) with the best found."""
    newest_first = sorted(seconds, reverse=True)
    if not newest_first:
        return None
    bad, good = 0, None  # indexes into newest_first: the oldest known to fail, the newest known to pass
    step = 1
    while good is None and time.monotonic() < deadline:  # gallop back from the newest
        index = min(bad + step, len(newest_first) - 1)
        if index == bad:
            break
        verdict = await passes(_end_of(newest_first[index]))
        if verdict:
            good = index
        elif verdict is None:  # nothing restorable that early: look between the two again
            newest_first, step = newest_first[:index], 1
        else:
            bad, step = index, step * 2
    if good is not None:
        while good - bad > 1 and time.monotonic() < deadline:  # halve between the two
            middle = (good + bad) // 2
            if await passes(_end_of(newest_first[middle])):
                good = middle
            else:
                bad = middle
    # Files are written within seconds: the state at a fraction of the second after the one found may pass.
    found = _end_of(newest_first[good]) if good is not None else None
    second = datetime.fromtimestamp(newest_first[bad], UTC)
    low, high = 0, 1000  # milliseconds into that second: low passes (or is its start), high fails
    for _ in range(FRACTION_STEPS):
        if time.monotonic() >= deadline:
            break
        middle = (low + high) // 2
        at = format_rfc3339(second + timedelta(milliseconds=middle))
        if await passes(at):
            low, found = middle, at
        else:
            high = middle
    return found
