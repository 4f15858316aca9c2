"""Group commit: the record creates of one tenant that are ready in the same event loop iteration, tried on the
loop in one turn and one SQLite transaction (each create its own statement in it), instead of a transaction each.

Why: a create's own SQLite work is small, and a commit of its own writes ~3.4 WAL frames (the table's page, the id
index's page, the ``created`` index's page, ~14 KB) that SQLite checksums and writes and Litestream then reads and
ships; in one transaction the creates share the pages they touch (the table's and the ``created`` index's last
page): 16 creates write ~1 frame each, and SQLite's CPU per create falls from ~21 to ~9 us (benchmarks/RESULTS.md,
"Group commit"). PocketBase commits each create alone.

What stays as it was:

- **An answer only after its commit.** A create's answer is held until the group's COMMIT returned (the caller
  awaits its member's future; durable mode then waits for the replica as before, after the commit).
- **Nothing acknowledged is lost or done twice.** A group is either committed whole or rolled back whole, and its
  members' work is then done again, as a try stopped by the inline budget is: a member stopped by the budget or by
  another connection's lock, a member whose work raised, an SQLite error that ended the transaction (a full disk,
  the storage quota's page limit), or a COMMIT that failed. A group the loop gave up runs once more on a database
  thread as one job (no budget there; it may wait for the lock), and one that cannot commit there either has each
  member done alone (its own transaction, its own answer). A create that fails on its own (validation, a unique
  index) is answered and leaves the others alone: SQLite undoes just its statement.
- **Realtime events after the commit**, in commit order: the members' record changes are held while the group
  runs and published once it committed (dropped when it rolled back: the members' runs alone publish theirs).
- **The inline rules**: a group is one inline try (:meth:`InlineTries.run`'s budget, its pause rules, the
  tenant's turn from :meth:`DbScheduler.run_inline`, which no other job of the tenant can enter meanwhile); at
  most :data:`GROUP_LIMIT` creates per group, so one group stays well within the budget.

A lone create (the only one ready) runs as before, in a transaction of its own; it only waits for the loop's next
iteration. While the tenant's writes are paused (they go to the database threads for a while), its creates ready
together still share one thread job and one transaction.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import on_background_thread

if TYPE_CHECKING:
    from pbfast.pocketbase.realtime.fanout import RecordChange
    from pbfast.pocketbase.realtime.hub import RealtimeBus

__all__ = ["GROUP_LIMIT", "GroupCommits", "may_answer_from_job"]

log = component_logger("TenantNode")

# Creates per group at most: ~40-70 us of CPU each on the loop, so a full group stays well within the inline budget
# (2 ms), and the gain has flattened by then (WAL frames per create: 1.74 at 4, 1.32 at 8, 0.97 at 16).
GROUP_LIMIT = 16

# a create waiting for its group: its request's context, its job, its outcome, whether it may be tried on the loop
class _GroupRunning(threading.local):
    """Per thread: whether it runs a group's members now (a class default: read on every request, found without
    an AttributeError raised and caught)."""

    group = False


_running = _GroupRunning()


def may_answer_from_job() -> bool:
    """Whether a job may send its answer itself from the thread it runs on (a heavy tenant's background thread:
    :func:`~pbfast.tenant_node.db_scheduler.on_background_thread`), not when it is a group's member: its answer
    waits for the group's commit."""
    return on_background_thread() and not _running.group


_Member = tuple[contextvars.Context, Callable[[], None], "asyncio.Future[bool]", bool]


class _HeldChanges:
    """Stands in for a tenant's realtime bus while a group runs: the members' record changes, published on the
    real bus once the group committed."""

    __slots__ = ("bus", "changes")

    def __init__(self, bus: RealtimeBus) -> None:
        self.bus = bus
        self.changes: list[tuple[Tenant, RecordChange]] = []

    def publish(self, tenant: Tenant, change: RecordChange) -> None:
        self.changes.append((tenant, change))


class GroupCommits:
    """Collects a tenant's creates ready in one loop iteration and runs them as one inline try
    (``try_inline(tenant, work, jobs)``: True when ``work()``, the jobs of ``jobs`` requests, ran to its end on the
    loop; see :meth:`InlineTries._try_write`), or, when they may not run on the loop or the try gave up, as one job
    on a database thread (``run_on_thread(tenant_id, work, jobs)``: :meth:`DbScheduler.run`)."""

    def __init__(self, try_inline: Callable[[Tenant, Callable[[], None], int], bool],
                 run_on_thread: Callable[[str, Callable[[], bool], int], Awaitable[bool]]) -> None:
        self._try_inline = try_inline
        self._run_on_thread = run_on_thread
        # creates waiting for the next flush, by the tenant's object (a tenant closed and opened again meanwhile is
        # another one: its creates are never run on the other's connection)
        self._pending: dict[Tenant, list[_Member]] = {}
        self._on_threads: set[asyncio.Task[None]] = set()  # groups run on a database thread (held: not collected)

    async def run(self, tenant: Tenant, job: Callable[[], None], inline: bool) -> bool:
        """``job()`` (a create) run with the others ready now: on the loop if every one of them may be tried there
        (``inline``: not paused, the tenant's turn free), else on a database thread; True when it ran and its
        group committed, False when it is to be done alone on a database thread (it did not run, or its group was
        rolled back)."""
        loop = asyncio.get_running_loop()
        pending = self._pending.get(tenant)
        if pending is None:
            pending = self._pending[tenant] = []
            loop.call_soon(self._flush, tenant)
        done: asyncio.Future[bool] = loop.create_future()
        # the member runs in its request's context (its request id in what it logs), as an inline job does
        pending.append((contextvars.copy_context(), job, done, inline))
        return await done

    def _flush(self, tenant: Tenant) -> None:
        members = [m for m in self._pending.pop(tenant, ()) if not m[2].done()]  # (a cancelled request's: gone)
        for start in range(0, len(members), GROUP_LIMIT):
            group = members[start:start + GROUP_LIMIT]
            if not self._try_group(tenant, group):
                task = asyncio.get_running_loop().create_task(self._group_on_thread(tenant, group))
                self._on_threads.add(task)
                task.add_done_callback(self._on_threads.discard)

    def _try_group(self, tenant: Tenant, group: list[_Member]) -> bool:
        """One inline try of the group; each member's future says whether it is done. False when the group is to
        run on a database thread instead (its futures not resolved yet). An error of the try itself (not of a
        member's job: that rolls the group back) goes to a lone member's caller, as an inline try's does; a
        group's members are done again alone. A member never waits forever."""
        try:
            if len(group) == 1:  # alone: as any inline write, in a transaction of its own (or alone on a thread)
                context, job, done, inline = group[0]
                done.set_result(inline and self._try_inline(tenant, partial(context.run, job), 1))
                return True
            if not all(member[3] for member in group):
                return False
            committed = False

            def work() -> None:
                nonlocal committed
                committed = self._run_group(tenant, group)

            if not (self._try_inline(tenant, work, len(group)) and committed):
                return False  # stopped (budget, a lock), or rolled back: once more, on a thread, in one job
            for _, _, done, _ in group:
                done.set_result(True)
        except BaseException as err:
            for _, _, done, _ in group:
                if not done.done():
                    if len(group) == 1:
                        done.set_exception(err)
                    else:
                        done.set_result(False)
            if not isinstance(err, Exception):
                raise
            if len(group) > 1:
                log.warning("tenant %s: a group of creates could not be tried (%r): done again one by one",
                            tenant.id, err)
        return True

    async def _group_on_thread(self, tenant: Tenant, group: list[_Member]) -> None:
        """The group in one job on a database thread (it waits there for another connection's lock, with no
        budget); its members are done again alone when it could not commit."""
        committed = False
        try:
            committed = await self._run_on_thread(tenant.id, partial(self._run_group, tenant, group), len(group))
        except Exception as err:  # noqa: BLE001 - the tenant's line is full, its lock not freed ...: each alone
            log.info("tenant %s: a group of creates failed on a thread (%r): done again one by one", tenant.id, err)
        finally:
            for _, _, done, _ in group:
                if not done.done():
                    done.set_result(committed)

    def _run_group(self, tenant: Tenant, group: list[_Member]) -> bool:
        """The members in one transaction; True once it committed. False (everything rolled back) when it could
        not: the members are then done again alone. Raises what the budget raises (the inline try gives up)."""
        conn = tenant.conn
        if conn.in_transaction:  # never expected: a transaction left open; the members go alone
            return False
        conn.execute("BEGIN IMMEDIATE")  # the lock met: OverBudget (the inline try gives up, nothing to undo)
        bus = tenant.realtime
        held = _HeldChanges(bus) if bus is not None else None
        tenant.realtime = held
        _running.group = True
        committed = False
        try:
            for context, job, _, _ in group:
                try:
                    context.run(job)
                except Exception as err:  # noqa: BLE001 - it raises again when done alone, and answers there
                    log.info("tenant %s: a create in a group raised (%r): the group is done again one by one",
                             tenant.id, err)
                    return False
                if not conn.in_transaction:  # SQLite ended the transaction (a full disk, the page limit ...)
                    return False
            try:
                conn.execute("COMMIT")
            except apsw.Error as err:
                log.warning("tenant %s: a group's commit failed (%r): done again one by one", tenant.id, err)
                return False
            committed = True
        finally:
            _running.group = False
            tenant.realtime = bus
            if not committed:
                with tenant.time_limit.suspended():  # a rollback must always run
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
        if held is not None:
            for changed_tenant, change in held.changes:
                _publish(held.bus, changed_tenant, change)
        return True


def _publish(bus: RealtimeBus, tenant: Tenant, change: RecordChange) -> None:
    """As :func:`pbfast.pocketbase.realtime.record_changed` publishes: a failed fan-out is logged, the write stands."""
    try:
        bus.publish(tenant, change)
    except Exception as err:  # noqa: BLE001 - the write is committed; its answer must not change
        log.error("tenant %s: realtime %s of %s not published: %r", tenant.id, change.action, change.row.get("id"),
                  err, exc_info=err)
