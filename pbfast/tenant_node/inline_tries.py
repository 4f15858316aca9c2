"""Short database work done on the event loop itself: a tenant's read, or a JSON write of a base collection's
record, tried at once on the loop within a small budget of SQLite time, because handing a job to a database
thread and its result back (two thread switches, a GIL hand-over, a loop wake-up) costs more CPU than the
job. What ran over the budget, or met another connection's write lock, is done again on a database thread.

A record write whose SQLite work was stopped by the budget, or whose work held the loop past the budget
twice within :data:`INLINE_PAUSE_SECONDS` (in CPU time: the loop waiting for a core or for the GIL is not
the tenant's doing), has the tenant's next writes done on the threads for :data:`INLINE_PAUSE_SECONDS`. Once
is not enough for the latter: a garbage collection or a WAL checkpoint in the middle of a small write would
otherwise send a busy tenant's writes to the threads for a second at a time. Meeting a lock does not pause
them either: Litestream's syncs and another worker process's writes hold the write lock for moments, and only
the write that met it needs a thread (its busy timeout waits there). While the tenant has jobs on the threads,
a write that may run inline waits for the jobs submitted before it and then tries the loop
(:meth:`DbScheduler.inline_turn`), instead of joining the line behind them: under steady load the line never
empties, so one job on a thread would otherwise keep all of the tenant's later writes on the threads.

Reads keep the rule they had while the tenant is served alone: any read past the budget (wall clock) or
stopped by it pauses the tenant's inline reads, and a read joins the line while the tenant has jobs on the
threads. Measured on the wire (wrk -c32, a loaded 2-core machine, benchmarks/RESULTS.md), views done on the
threads cost less CPU per request than views done inline (157-183 vs 190-254 us), while creates cost less
inline: why (granian's thread waiting for the GIL the loop holds?) is not settled, so reads are not pushed
onto the loop harder than before. While other tenants are served too (:meth:`DbScheduler.shared`), a read
that ran to its end counts as past the budget only by the loop thread's CPU time: behind a busy neighbour a
0.2 ms view also waits for a core or for the GIL, and the wall clock sent a quiet tenant's views to the
threads (35-65 % of them, each two hand-overs and a place in the line) whenever another tenant was busy
(benchmarks/RESULTS.md, "Noisy neighbour").

Thread-safety: event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.group_commit import GroupCommits

__all__ = ["INLINE_BUDGET_SECONDS", "INLINE_PAUSE_SECONDS", "InlineTries"]

# A job runs on the event loop while its SQLite work stays within this much time (the loop is held no longer
# than a worker thread holding the GIL would hold it); beyond, it is stopped and run again on a database
# thread, and the tenant's jobs go there for INLINE_PAUSE_SECONDS.
INLINE_BUDGET_SECONDS = 0.002
INLINE_PAUSE_SECONDS = 1.0


class InlineTries:
    """Runs a tenant's job on the loop when it may (see the module's docstring), else on ``db``'s threads."""

    def __init__(self, db: DbScheduler) -> None:
        self.db = db
        self._paused_until: dict[tuple[str, bool], float] = {}  # (tenant id, writes) -> monotonic time
        self._overran_at: dict[str, float] = {}  # tenant id -> when a write last held the loop past the budget
        self._groups = GroupCommits(self._try_write, lambda tenant_id, work, jobs: db.run(tenant_id, work, jobs=jobs))

    def paused(self, tenant_id: str, write: bool) -> bool:
        """Whether the tenant's writes (reads) go to the threads for now (they ran over the budget lately)."""
        return self._paused_until.get((tenant_id, write), 0.0) > time.monotonic()

    async def run(self, tenant: Tenant, job: Callable[[], None], inline: bool, write: bool,
                  group: bool = False) -> None:
        """``job()`` in the tenant's turn: on the loop when ``inline`` (the caller's judgement of the request:
        a read, or a ``write`` of a record) and not paused, else, or when the try gave up, on a database
        thread. ``group``: a record create, run with the tenant's other creates ready in this loop iteration in one
        transaction (:mod:`pbfast.tenant_node.group_commit`), on the loop or on a thread by the same rules. A
        tenant closed while the request waited for its turn (a move, an eviction) is not tried on the loop: the
        budget cannot be set on a closed connection (an error, answered 500), while the job's own check for a
        closed tenant, on the thread, answers the request ("moved", or retry)."""
        if group and write and inline:  # on the loop or on a thread, with the creates ready now
            if await self._groups.run(tenant, job, not self.paused(tenant.id, write) and (
                    self.db.idle(tenant.id) or await self.db.inline_turn(tenant.id))):
                return
        elif (inline and not self.paused(tenant.id, write)
                and (not write or self.db.idle(tenant.id) or await self.db.inline_turn(tenant.id))
                and self.db.run_inline(tenant.id, partial(self._within_budget, tenant, job, write))):
            return
        await self.db.run(tenant.id, job)

    def _try_write(self, tenant: Tenant, work: Callable[[], None], jobs: int) -> bool:
        """A write (or a group of ``jobs`` creates) tried on the loop now: True when it ran to its end there."""
        return self.db.run_inline(tenant.id, partial(self._within_budget, tenant, work, True), jobs)

    def _within_budget(self, tenant: Tenant, job: Callable[[], None], write: bool) -> bool:
        if tenant.closed:  # read in the tenant's turn: a close (which runs in the turn too) cannot come between
            return False
        key = (tenant.id, write)
        started, cpu_started = time.monotonic(), time.thread_time()
        done = tenant.time_limit.within_budget(INLINE_BUDGET_SECONDS, job, cpu_started)
        # The budget stops SQLite, not the Python around it (a big page's JSON): work that held the loop past
        # the budget anyway, or was stopped by it, sends the next ones to the threads for a while.
        now = time.monotonic()
        if now - started <= INLINE_BUDGET_SECONDS and done:
            self._paused_until.pop(key, None)
        elif not write:
            if done and self.db.shared() and time.thread_time() - cpu_started <= INLINE_BUDGET_SECONDS:
                self._paused_until.pop(key, None)  # it waited behind another tenant's work: not its doing
            else:
                self._paused_until[key] = now + INLINE_PAUSE_SECONDS
        elif done:  # in CPU time (read only when the wall clock says it may have run over), and twice
            if time.thread_time() - cpu_started <= INLINE_BUDGET_SECONDS:
                self._paused_until.pop(key, None)
                return done
            if now - self._overran_at.get(tenant.id, -INLINE_PAUSE_SECONDS) < INLINE_PAUSE_SECONDS:
                self._paused_until[key] = now + INLINE_PAUSE_SECONDS
            self._overran_at[tenant.id] = now
        elif not tenant.time_limit.blocked:
            self._paused_until[key] = now + INLINE_PAUSE_SECONDS
        return done
