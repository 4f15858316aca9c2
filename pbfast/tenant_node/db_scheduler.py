"""Where tenants' SQLite work runs: a bounded pool of worker threads, shared fairly between tenants.

SQLite calls block for as long as a statement runs, so a node that ran them on its event loop would stop
every tenant while one tenant's slow query runs (a recursive view, a ``LIKE`` over a large table). Here each
piece of a tenant's database work (a whole request handler, a close, a backup) is a *job* submitted from the
event loop and run on one of ``threads`` worker threads; apsw releases the GIL while SQLite steps, so the
loop keeps serving other tenants meanwhile.

Fairness: jobs of one tenant run one at a time, in the order they came (a tenant has one connection; that
is also its cap on concurrent statements). Tenants with pending jobs take turns: after each job its tenant
goes to the back of the line, so a burst from one tenant waits behind its own requests, not everyone's, and
holds at most one worker. A tenant may have at most ``queue_limit`` jobs waiting; beyond that
:class:`TenantBusy` is raised at once (the caller answers 429), so memory stays bounded whatever a client
sends. How long a job may run is the caller's business (:class:`pbfast.pocketbase.sqlite_guard.TimeLimit`).

Counters per tenant (jobs, queue waits, rejections, requests stopped by their time limit) feed ``/metrics``
and the heartbeat's usage.

Thread-safety: :meth:`DbScheduler.run` is called on the event loop; the queues are guarded by one lock
shared with the worker threads; results go back to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pbfast.logs import component_logger

__all__ = ["DEFAULT_QUEUE_LIMIT", "DbScheduler", "TenantBusy", "TenantLoad"]

log = component_logger("TenantNode")

T = TypeVar("T")

DEFAULT_QUEUE_LIMIT = 256  # jobs of one tenant waiting for a worker


class TenantBusy(Exception):
    """The tenant already has ``queue_limit`` jobs waiting."""


@dataclass(slots=True)
class TenantLoad:
    """Counters of one tenant's database work on this node since it started (never reset)."""

    jobs: int = 0
    rejected: int = 0  # refused because its queue was full
    wait_seconds: float = 0.0  # total time its jobs waited for a worker
    busy_seconds: float = 0.0  # total time its jobs ran
    time_limited: int = 0  # requests stopped by their time limit (counted by the caller)


@dataclass(slots=True)
class _Job:
    tenant_id: str
    work: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.monotonic)


class DbScheduler:
    """Runs tenants' database jobs on ``threads`` worker threads, fairly between tenants."""

    def __init__(self, threads: int, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if threads < 1:
            raise ValueError("the database pool needs at least one thread")
        self.threads = threads
        self.queue_limit = queue_limit
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._queues: dict[str, deque[_Job]] = {}
        self._turns: deque[str] = deque()  # tenants with a job waiting and none running, in turn order
        self._running: set[str] = set()
        self._stopping = False
        self.load: dict[str, TenantLoad] = {}
        self._workers = [threading.Thread(target=self._work, name=f"pbfast-db-{n}", daemon=True)
                         for n in range(threads)]
        for worker in self._workers:
            worker.start()

    # ---- event loop side --------------------------------------------------------------------------------

    async def run(self, tenant_id: str, work: Callable[[], T], bounded: bool = True) -> T:
        """Run ``work()`` on a worker thread in the tenant's turn; its result or exception. Raises
        :class:`TenantBusy` when the tenant's queue is full (``bounded``: the node's own work, e.g. a close,
        is never refused). Cancelling the caller before the job starts drops the job; once started it runs to
        its end (its time limit bounds it)."""
        loop = asyncio.get_running_loop()
        # In the caller's context, so what the job logs carries the request's id (pbfast.request_ids).
        job = _Job(tenant_id, functools.partial(contextvars.copy_context().run, work), loop, loop.create_future())
        with self._lock:
            if self._stopping:
                raise RuntimeError("the database pool is stopped")
            queue = self._queues.get(tenant_id)
            if queue is None:
                queue = self._queues[tenant_id] = deque()
            if bounded and len(queue) >= self.queue_limit:
                self._load(tenant_id).rejected += 1
                raise TenantBusy(tenant_id)
            queue.append(job)
            if tenant_id not in self._running and len(queue) == 1:
                self._turns.append(tenant_id)
                self._work_ready.notify()
        result: T = await job.future
        return result

    def queued(self, tenant_id: str) -> int:
        """Jobs of the tenant waiting now (not counting one running)."""
        with self._lock:
            queue = self._queues.get(tenant_id)
            return len(queue) if queue else 0

    def forget(self, tenant_id: str) -> TenantLoad | None:
        """Drop a tenant's counters (it left the node)."""
        with self._lock:
            return self.load.pop(tenant_id, None)

    def snapshot(self) -> tuple[dict[str, TenantLoad], int]:
        """A copy of every tenant's counters, and the jobs waiting now (all tenants)."""
        with self._lock:
            loads = {t: TenantLoad(load.jobs, load.rejected, load.wait_seconds, load.busy_seconds, load.time_limited)
                     for t, load in self.load.items()}
            return loads, sum(len(queue) for queue in self._queues.values())

    def count_time_limited(self, tenant_id: str) -> None:
        with self._lock:
            self._load(tenant_id).time_limited += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after the jobs that run now; waiting jobs fail with RuntimeError."""
        with self._lock:
            self._stopping = True
            dropped = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._turns.clear()
            self._work_ready.notify_all()
        for job in dropped:
            self._settle(job, None, RuntimeError("the database pool is stopped"))
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # ---- worker side ------------------------------------------------------------------------------------

    def _load(self, tenant_id: str) -> TenantLoad:
        load = self.load.get(tenant_id)
        if load is None:
            load = self.load[tenant_id] = TenantLoad()
        return load

    def _next(self) -> _Job | None:
        """The next job in turn order (None: stopping). Holds the lock."""
        while not self._turns:
            if self._stopping:
                return None
            self._work_ready.wait()
        tenant_id = self._turns.popleft()
        job = self._queues[tenant_id].popleft()
        self._running.add(tenant_id)
        return job

    def _done(self, tenant_id: str) -> None:
        """The tenant's job ended: its next one (if any) waits for its turn at the back. Holds the lock."""
        self._running.discard(tenant_id)
        queue = self._queues.get(tenant_id)
        if queue:
            self._turns.append(tenant_id)
            self._work_ready.notify()
        elif queue is not None:
            del self._queues[tenant_id]

    def _work(self) -> None:
        while True:
            with self._lock:
                job = self._next()
            if job is None:
                return
            started = time.monotonic()
            result: Any = None
            error: BaseException | None = None
            if not job.future.cancelled():  # the request went away while it waited
                try:
                    result = job.work()
                except BaseException as err:  # noqa: BLE001 - handed to the waiting coroutine
                    error = err
            finished = time.monotonic()
            with self._lock:
                load = self._load(job.tenant_id)
                load.jobs += 1
                load.wait_seconds += started - job.queued_at
                load.busy_seconds += finished - started
                self._done(job.tenant_id)
            self._settle(job, result, error)

    @staticmethod
    def _settle(job: _Job, result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if job.future.cancelled():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass
