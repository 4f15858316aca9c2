"""Where tenants' SQLite work runs: a bounded pool of worker threads, shared fairly between tenants.

SQLite calls block for as long as a statement runs, so a node that ran them on its event loop would stop
every tenant while one tenant's slow query runs (a recursive view, a ``LIKE`` over a large table). Here each
piece of a tenant's database work (a whole request handler, a close, a backup) is a *job* submitted from the
event loop and run on one of ``threads`` worker threads; apsw releases the GIL while SQLite steps, so the
loop keeps serving other tenants meanwhile. A short job may instead run at once on the loop
(:meth:`DbScheduler.run_inline`, in the tenant's turn like any job) when the caller bounds it: the node's
reads and record writes, stopped after 2 ms of SQLite work and then submitted here
(:mod:`pbfast.tenant_node.serving`), since the hand-over to a thread and back costs more than such a job.

Fairness: jobs of one tenant run one at a time, in the order they came (a tenant has one connection; that
is also its cap on concurrent statements). Tenants with pending jobs take turns: after each job its tenant
goes to the back of the line, so a burst from one tenant waits behind its own requests, not everyone's, and
holds at most one worker. A tenant may have at most ``queue_limit`` jobs waiting; beyond that
:class:`TenantBusy` is raised at once (the caller answers 429), so memory stays bounded whatever a client
sends. How long a job may run is the caller's business (:class:`pbfast.pocketbase.sqlite_guard.TimeLimit`).

Sharing the CPU: turns share the threads, not the cores. A tenant that keeps a thread busy (heavy lists, a
burst of writes) would otherwise take as much CPU as every other tenant together, and their requests would wait
for a core behind its work. So a tenant whose jobs filled more than :data:`HEAVY_SHARE` of a thread's time over
the last :data:`USAGE_WINDOW_SECONDS` is *heavy*, and while another tenant was served in that window too (on
this node: :meth:`DbScheduler.set_node_active` tells about other worker processes) its jobs run on the
*background* threads, which run at a lower OS priority (nice +:data:`BACKGROUND_NICE`), and never inline on
the loop. The kernel then gives a core to the other tenants' work first, and to the heavy tenant all the CPU
they leave: it is slowed only while others need the CPU, and alone on the node it runs as before.

Counters per tenant (jobs, queue waits, rejections, requests stopped by their time limit) feed ``/metrics``
and the heartbeat's usage.

Thread-safety: :meth:`DbScheduler.run` is called on the event loop; the queues are guarded by one lock
shared with the worker threads; results go back to the loop through a :class:`LoopWaker` (not
``call_soon_threadsafe``: see there).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pbfast.logs import component_logger
from pbfast.tenant_node.loop_waker import LoopWaker
from pbfast.thread_priority import lower_priority, lower_priority_but_moments

__all__ = ["BACKGROUND_NICE", "DEFAULT_QUEUE_LIMIT", "HEAVY_SHARE", "USAGE_WINDOW_SECONDS", "DbScheduler",
           "TenantBusy", "TenantLoad", "on_background_thread"]

log = component_logger("TenantNode")

T = TypeVar("T")

DEFAULT_QUEUE_LIMIT = 256  # jobs of one tenant waiting for a worker
USAGE_WINDOW_SECONDS = 1.0  # how far back a tenant's use of the threads counts (decaying), and "served recently"
HEAVY_SHARE = 0.5  # of one thread's time: above, a tenant's jobs go to the background threads while others wait
# A nice +10 thread gets ~1/10 of the CPU a nice 0 thread gets while both want it (kernel weights 110 vs 1024):
# enough that the heavy tenant keeps going, not enough to make the others wait for a core.
BACKGROUND_NICE = 10


class _ThreadRole(threading.local):
    """Per thread: whether it is a background database thread. A class default, so that the event loop's check on
    every request finds it without an AttributeError raised and caught (``getattr``'s default)."""

    background = False


_this_thread = _ThreadRole()


def on_background_thread() -> bool:
    """Whether the calling thread is a background database thread (a heavy tenant's, at nice +BACKGROUND_NICE):
    work done there gives way to other tenants' work, so a heavy tenant's answer is best sent from there too."""
    return _this_thread.background


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
class _Usage:
    """How much of a thread's time a tenant's jobs filled lately: seconds of work, decaying with time constant
    USAGE_WINDOW_SECONDS (so busy / USAGE_WINDOW_SECONDS is the share of one thread)."""

    busy: float = 0.0
    at: float = 0.0  # when busy was last brought up to date (monotonic)

    def share(self, now: float) -> float:
        return self.busy * math.exp((self.at - now) / USAGE_WINDOW_SECONDS) / USAGE_WINDOW_SECONDS

    def add(self, now: float, seconds: float) -> None:
        self.busy = self.busy * math.exp((self.at - now) / USAGE_WINDOW_SECONDS) + seconds
        self.at = now


@dataclass(slots=True)
class _Job:
    tenant_id: str
    work: Callable[[], Any]
    waker: LoopWaker  # hands the result to the caller's loop
    future: asyncio.Future[Any]
    queued_at: float = field(default_factory=time.monotonic)
    jobs: int = 1  # the requests' jobs it does, as the tenant's load counts them (a group commit's creates)


class DbScheduler:
    """Runs tenants' database jobs on ``threads`` worker threads, fairly between tenants, and heavy tenants'
    jobs on as many background threads while other tenants are served too."""

    _told_priority: ClassVar[bool] = False  # the log line about background threads' priority, once

    def __init__(self, threads: int, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if threads < 1:
            raise ValueError("the database pool needs at least one thread")
        self.threads = threads
        self.queue_limit = queue_limit
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Job]] = {}
        # Tenants with a job waiting and none running, in turn order, per lane (False: normal, True: background).
        self._turns: dict[bool, deque[str]] = {False: deque(), True: deque()}
        self._work_ready = {False: threading.Condition(self._lock), True: threading.Condition(self._lock)}
        self._running: set[str] = set()
        self._stopping = False
        self.load: dict[str, TenantLoad] = {}
        self._usage: dict[str, _Usage] = {}
        self._served: OrderedDict[str, float] = OrderedDict()  # tenant -> when its last job ended, oldest first
        self._node_active = 0  # tenants served recently in the whole node (other worker processes)
        # Per tenant, who waits in inline_turn: (the job to wait for, None: the one running; the waiter's future).
        self._inline_waiters: dict[str, list[tuple[_Job | None, asyncio.Future[None]]]] = {}
        self._wakers: dict[asyncio.AbstractEventLoop, LoopWaker] = {}  # per caller's loop (one in a node)
        self._workers = [threading.Thread(target=self._work, args=(background,),
                                          name=f"pbfast-db-{'bg-' if background else ''}{n}", daemon=True)
                         for background in (False, True) for n in range(threads)]
        for worker in self._workers:
            worker.start()

    # ---- event loop side --------------------------------------------------------------------------------

    async def run(self, tenant_id: str, work: Callable[[], T], bounded: bool = True, jobs: int = 1) -> T:
        """Run ``work()`` on a worker thread in the tenant's turn; its result or exception. Raises
        :class:`TenantBusy` when the tenant's queue is full (``bounded``: the node's own work, e.g. a close,
        is never refused). Cancelling the caller before the job starts drops the job; once started it runs to
        its end (its time limit bounds it). ``jobs``: how many requests' jobs ``work`` does (the tenant's load)."""
        loop = asyncio.get_running_loop()
        waker = self._waker()
        # In the caller's context, so what the job logs carries the request's id (pbfast.request_ids).
        job = _Job(tenant_id, functools.partial(contextvars.copy_context().run, work), waker, loop.create_future(),
                   jobs=jobs)
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
                self._give_turn(tenant_id)
        result: T = await job.future
        return result

    def _waker(self) -> LoopWaker:
        """The running loop's :class:`LoopWaker` (closed by :meth:`stop`). On the loop."""
        loop = asyncio.get_running_loop()
        waker = self._wakers.get(loop)
        if waker is None:
            waker = self._wakers[loop] = LoopWaker(loop)
        return waker

    def run_inline(self, tenant_id: str, work: Callable[[], bool], jobs: int = 1) -> bool:
        """Run ``work()`` now, on the calling thread (the event loop), in the tenant's turn, when the tenant
        has no job running or waiting; False when it has, when it is heavy while others are served too (its work
        belongs on the background threads), or when ``work()`` returned False (it gave up, see
        :meth:`pbfast.pocketbase.sqlite_guard.TimeLimit.within_budget`): then submit it with :meth:`run`.

        For short jobs: handing a job to a worker thread and its result back costs two thread switches,
        more CPU than a small read itself. ``work`` must bound the time it holds the calling thread. ``jobs``: how
        many requests' jobs ``work`` does (a group commit's creates), as the tenant's load counts them."""
        with self._lock:
            if self._stopping or tenant_id in self._running or self._queues.get(tenant_id):
                return False
            started = time.monotonic()
            if self._in_background(tenant_id, started):
                return False
            self._running.add(tenant_id)
        done = False
        try:
            done = work()
        finally:
            finished = time.monotonic()
            with self._lock:
                if done:
                    load = self.load.get(tenant_id) or self._load(tenant_id)  # (_load and _used inline: every read)
                    load.jobs += jobs
                    load.busy_seconds += finished - started
                usage = self._usage.get(tenant_id)
                if usage is None:
                    usage = self._usage[tenant_id] = _Usage()
                usage.add(finished, finished - started)
                self._served[tenant_id] = finished
                self._served.move_to_end(tenant_id)
                self._running.discard(tenant_id)
                queue = self._queues.get(tenant_id)
                if queue:  # not from the loop while it ran this, but should another thread have submitted
                    self._give_turn(tenant_id)
                elif queue is not None:
                    del self._queues[tenant_id]
        return done

    def idle(self, tenant_id: str) -> bool:
        """Whether the tenant has no job running or waiting, read without the lock: a hint that spares
        :meth:`inline_turn` (a coroutine) when there is nothing to wait for; :meth:`run_inline` checks again under
        the lock, and a job it refuses goes to :meth:`run`."""
        return tenant_id not in self._running and not self._queues.get(tenant_id)

    async def inline_turn(self, tenant_id: str) -> bool:
        """Wait until the tenant's jobs submitted so far have run (at once when it has none), before a job is
        tried with :meth:`run_inline`: under steady load a tenant's line of jobs never empties, so a job that
        joined it would keep every later one on the threads. False at once when the try would be refused anyway
        (its work belongs on the background threads) or when the tenant's line is full (:meth:`run` says so)."""
        with self._lock:
            queue = self._queues.get(tenant_id)
            if tenant_id not in self._running and not queue:
                return True
            if self._stopping or self._in_background(tenant_id, time.monotonic()):
                return False
            waiters = self._inline_waiters.get(tenant_id)
            if waiters is None:
                waiters = self._inline_waiters[tenant_id] = []
            if (len(queue) if queue else 0) + len(waiters) >= self.queue_limit:
                return False
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters.append((queue[-1] if queue else None, future))
        await future
        return True

    def queued(self, tenant_id: str) -> int:
        """Jobs of the tenant waiting now (not counting one running)."""
        with self._lock:
            queue = self._queues.get(tenant_id)
            return len(queue) if queue else 0

    def forget(self, tenant_id: str) -> TenantLoad | None:
        """Drop a tenant's counters (it left the node)."""
        with self._lock:
            self._usage.pop(tenant_id, None)
            self._served.pop(tenant_id, None)
            return self.load.pop(tenant_id, None)

    def set_node_active(self, tenants: int) -> None:
        """How many tenants the whole node served lately (a worker process learns it from the shared memory):
        a heavy tenant goes to the background threads also when the others were served by other processes."""
        self._node_active = tenants

    def shared(self) -> bool:
        """Whether more than one tenant was served lately (on this node: other worker processes count too)."""
        with self._lock:
            return self._node_active >= 2 or self._served_lately(time.monotonic()) >= 2

    def in_background(self, tenant_id: str) -> bool:
        """Whether the tenant's jobs run on the background threads now (heavy while others are served)."""
        with self._lock:
            return self._in_background(tenant_id, time.monotonic())

    def account(self, tenant_id: str, seconds: float) -> None:
        """Count ``seconds`` of the tenant's work done elsewhere (a login's bcrypt check) in its recent use, as
        its jobs' time is: a tenant busy with logins becomes heavy too. Any thread."""
        with self._lock:
            self._load(tenant_id).busy_seconds += seconds
            self._used(tenant_id, time.monotonic(), seconds)

    @staticmethod
    def enter_background() -> None:
        """Make the calling thread a background one (nice +BACKGROUND_NICE, :func:`on_background_thread`): for
        the thread pools that run a heavy tenant's work outside this scheduler."""
        lower_priority(BACKGROUND_NICE)
        _this_thread.background = True

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
            waiters = [future for tenant in self._inline_waiters.values() for _, future in tenant]
            self._inline_waiters.clear()
            for lane in (False, True):
                self._turns[lane].clear()
                self._work_ready[lane].notify_all()
        for job in dropped:
            self._settle(job, None, RuntimeError("the database pool is stopped"))
        for future in waiters:  # their run_inline is refused now, and run raises
            future.get_loop().call_soon_threadsafe(_wake, [future])
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if not any(worker.is_alive() for worker in self._workers):  # else a job may still hand its result back
            for waker in self._wakers.values():
                waker.close()

    # ---- worker side ------------------------------------------------------------------------------------

    def _load(self, tenant_id: str) -> TenantLoad:
        load = self.load.get(tenant_id)
        if load is None:
            load = self.load[tenant_id] = TenantLoad()
        return load

    def _used(self, tenant_id: str, now: float, seconds: float) -> None:
        """Count a job's time in the tenant's recent use, and the tenant as served now. Holds the lock."""
        usage = self._usage.get(tenant_id)
        if usage is None:
            usage = self._usage[tenant_id] = _Usage()
        usage.add(now, seconds)
        self._served[tenant_id] = now
        self._served.move_to_end(tenant_id)

    def _served_lately(self, now: float) -> int:
        """How many tenants had a job end within the window; forgets the others (oldest first, so this stops at
        the first recent one), and the use of those whose share has faded. Holds the lock."""
        while self._served:
            oldest, at = next(iter(self._served.items()))
            if now - at <= USAGE_WINDOW_SECONDS:
                break
            del self._served[oldest]
            usage = self._usage.get(oldest)
            if usage is not None and usage.share(now) < HEAVY_SHARE / 10:
                del self._usage[oldest]
        return len(self._served)

    def _in_background(self, tenant_id: str, now: float) -> bool:
        """Heavy while another tenant is served too. Holds the lock."""
        if self._node_active < 2 and (len(self._served) < 2 or self._served_lately(now) < 2):
            return False
        usage = self._usage.get(tenant_id)
        return usage is not None and usage.share(now) > HEAVY_SHARE

    def _give_turn(self, tenant_id: str, woken: bool = True) -> bool:
        """Put the tenant (a job waiting, none running) at the back of its lane's turns; its lane. ``woken``:
        wake a thread of the lane for it. Holds the lock."""
        background = self._in_background(tenant_id, time.monotonic())
        self._turns[background].append(tenant_id)
        if woken:
            self._work_ready[background].notify()
        return background

    def _next(self, background: bool) -> _Job | None:
        """The next job of the lane in turn order (None: stopping). Holds the lock."""
        turns = self._turns[background]
        while not turns:
            if self._stopping:
                return None
            self._work_ready[background].wait()
        tenant_id = turns.popleft()
        job = self._queues[tenant_id].popleft()
        self._running.add(tenant_id)
        return job

    def _done(self, tenant_id: str, background: bool) -> None:
        """The tenant's job on a thread of lane ``background`` ended: its next one (if any) waits for its turn
        at the back. Holds the lock.

        No other thread of the same lane is woken for that turn: this one takes the next turn itself right
        after, so the number of turns and of threads looking for one stays matched, and a busy tenant's jobs do
        not wake (and switch to) a sleeping thread each time, which cost more CPU than the job itself. A turn
        that changes lanes (the tenant became heavy, or stopped being) wakes a thread of its new lane."""
        self._running.discard(tenant_id)
        queue = self._queues.get(tenant_id)
        if queue:
            if self._give_turn(tenant_id, woken=False) != background:
                self._work_ready[not background].notify()
        elif queue is not None:
            del self._queues[tenant_id]

    def _work(self, background: bool) -> None:
        if background:
            # Back at the normal priority only to hand an answer over (pbfast.thread_priority: preempted there at
            # the lower one, the thread held the GIL every other tenant's request waited for).
            if not lower_priority_but_moments(BACKGROUND_NICE) and not DbScheduler._told_priority:
                DbScheduler._told_priority = True
                log.info("background database threads hand their answers over at nice +%d (going back up needs "
                         "CAP_SYS_NICE): other tenants may wait for the GIL behind them meanwhile", BACKGROUND_NICE)
            _this_thread.background = True
        while True:
            with self._lock:
                job = self._next(background)
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
                load.jobs += job.jobs
                load.wait_seconds += started - job.queued_at
                load.busy_seconds += finished - started
                self._used(job.tenant_id, finished, finished - started)
                self._done(job.tenant_id, background)
                inline_ready = self._inline_ready(job) if self._inline_waiters else None
            self._settle(job, result, error, inline_ready)

    def _inline_ready(self, job: _Job) -> list[asyncio.Future[None]] | None:
        """The inline_turn waiters of ``job``'s tenant whose wait ends with that job, taken off. Holds the lock."""
        waiters = self._inline_waiters.get(job.tenant_id)
        if not waiters:
            return None
        ready = [future for after, future in waiters if after is None or after is job]
        if len(ready) == len(waiters):
            del self._inline_waiters[job.tenant_id]
        else:
            waiters[:] = [(after, future) for after, future in waiters if not (after is None or after is job)]
        return ready

    @staticmethod
    def _settle(job: _Job, result: Any, error: BaseException | None,
                inline_ready: list[asyncio.Future[None]] | None = None) -> None:
        def settle() -> None:
            if not job.future.cancelled():
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(result)
            if inline_ready:  # after the job's own answer
                _wake(inline_ready)

        try:
            # Not call_soon_threadsafe: it wakes the loop holding the GIL (pbfast.tenant_node.loop_waker).
            job.waker.call(settle)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
