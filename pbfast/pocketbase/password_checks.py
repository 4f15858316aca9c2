"""Where logins' bcrypt checks run: off the tenants' database turns, on a few threads shared fairly by tenants.

A check is 50-250 ms of CPU. Made in the tenant's turn (its jobs run one at a time), it kept every other
request of the tenant (a token refresh, a read) waiting behind all of its queued logins. Here the checks run on
one thread per core (the bcrypt binding releases the GIL, so they run in parallel), two of a tenant's waiting
checks at a time on one thread when it has two (their Blowfish rounds interleaved: about one check's CPU time for
both, ``rust/src/bcrypt/pair.rs``), and tenants with checks
waiting take turns for the threads: a free thread goes to the waiting tenant with the fewest checks running
(then the longest waiting), so one tenant's burst of logins uses every core while it is alone, and another
tenant's login gets the next free thread. A tenant may have at most ``queue_limit`` checks waiting; beyond, the
login is answered 429 at once.

On a node, the checks take part in the database scheduler's sharing (:class:`SchedulerHooks`): a check's time
counts in its tenant's recent use, and a heavy tenant's checks run on threads at the background threads' lower
OS priority, as its database jobs do, so a burst of logins gives way to other tenants' work.

Thread-safety: event loop only (a check runs on a thread; its end comes back as a callback on the loop).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import time
from typing import Protocol, cast

from pbfast.http import ApiError
from pbfast.pocketbase.auth import BcryptJob, PasswordCheck

__all__ = ["DEFAULT_CHECKS_WAITING", "PasswordChecks", "SchedulerHooks"]

DEFAULT_CHECKS_WAITING = 256  # per tenant, as its database jobs (pbfast.tenant_node.db_scheduler)


class SchedulerHooks(Protocol):
    """What the checks need of the node's database scheduler (:class:`pbfast.tenant_node.db_scheduler.DbScheduler`)."""

    def in_background(self, tenant_id: str) -> bool: ...

    def account(self, tenant_id: str, seconds: float) -> None: ...

    def enter_background(self) -> None: ...


@dataclass(slots=True)
class _Waiting:
    check: BcryptJob
    done: asyncio.Future[None]


class PasswordChecks:
    """Makes bcrypt jobs (:class:`pbfast.pocketbase.auth.PasswordCheck` s, ``PasswordHash`` es) on ``threads`` threads (one per core: more cannot make CPU work go faster),
    tenants in turn (see the module's docs)."""

    def __init__(self, threads: int = os.cpu_count() or 2, queue_limit: int = DEFAULT_CHECKS_WAITING) -> None:
        self.threads = threads
        self.queue_limit = queue_limit
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pbfast-bcrypt")
        self._background: ThreadPoolExecutor | None = None  # a heavy tenant's checks (made with the hooks)
        self._hooks: SchedulerHooks | None = None
        self._waiting: dict[str, deque[_Waiting]] = {}  # only tenants with checks waiting
        self._turns: deque[str] = deque()  # the tenants of _waiting, in turn order
        self._running: dict[str, int] = {}  # checks running, per tenant with any
        self._running_total = 0

    def share_with(self, hooks: SchedulerHooks) -> None:
        """Take part in the node's scheduling (see the module's docs); before serving."""
        self._hooks = hooks
        self._background = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="pbfast-bcrypt-bg",
                                              initializer=hooks.enter_background)

    async def check(self, tenant_id: str, check: BcryptJob,
                    client_disconnect: Callable[[], Awaitable[object]] | None = None) -> bool:
        """Make ``check`` (its answer in the job: ``matches``, ``hashed``) in the tenant's turn on the threads; False when the
        client went away while it waited (``client_disconnect``: granian's), and it was not made: a load tool's
        connections closed at the end of a run would otherwise leave seconds of checks for nobody."""
        waiting = self._waiting.get(tenant_id)
        if waiting is None:
            waiting = self._waiting[tenant_id] = deque()
            self._turns.append(tenant_id)
        if len(waiting) >= self.queue_limit:
            raise ApiError(429, "Too many requests for this tenant are waiting; retry shortly.",
                           headers=[("retry-after", "1")])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(_Waiting(check, done))
        watch: asyncio.Future[object] | None = None
        if client_disconnect is not None:
            gone = client_disconnect()
            # granian's is a future of its own: a callback on it costs no task
            watch = cast(asyncio.Future[object], gone) if hasattr(gone, "add_done_callback") else asyncio.ensure_future(gone)
            watch.add_done_callback(lambda _: done.cancel())  # taken off the line when its turn comes
        self._start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            if not done.cancelled():
                raise  # the request itself was cancelled
            return False
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
        return True

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        while self._turns and self._running_total < self.threads:
            tenant_id = self._next_tenant()
            waiting = self._waiting[tenant_id]
            job = waiting.popleft()
            if waiting:
                self._turns.append(tenant_id)  # its next check waits at the back
            else:
                del self._waiting[tenant_id]
            if job.done.cancelled():  # its request went away while it waited
                continue
            jobs = [job]
            partner = self._partner(tenant_id, job)
            if partner is not None:
                jobs.append(partner)
            self._running[tenant_id] = self._running.get(tenant_id, 0) + len(jobs)
            self._running_total += 1
            hooks, executor = self._hooks, self._executor
            if hooks is not None and self._background is not None and hooks.in_background(tenant_id):
                executor = self._background
            work = job.check.run if partner is None else functools.partial(
                cast(PasswordCheck, job.check).run_with, cast(PasswordCheck, partner.check))
            run = work if hooks is None else functools.partial(_timed, work, hooks, tenant_id)
            ran = loop.run_in_executor(executor, run)
            ran.add_done_callback(functools.partial(self._ended, tenant_id, jobs))

    def _partner(self, tenant_id: str, job: _Waiting) -> _Waiting | None:
        """A check of the same tenant waiting next to make together with ``job`` on its thread (see
        :meth:`PasswordCheck.run_with`), taken off the line; None when there is none (or either is no check)."""
        if not isinstance(job.check, PasswordCheck) or not job.check.pairable():
            return None
        waiting = self._waiting.get(tenant_id)
        while waiting:
            candidate = waiting[0]
            if candidate.done.cancelled():  # its request went away while it waited
                waiting.popleft()
                continue
            if not isinstance(candidate.check, PasswordCheck) or not candidate.check.pairable():
                return None
            waiting.popleft()
            self._forget_if_empty(tenant_id, waiting)
            return candidate
        if waiting is not None:
            self._forget_if_empty(tenant_id, waiting)
        return None

    def _forget_if_empty(self, tenant_id: str, waiting: deque[_Waiting]) -> None:
        """Take a tenant whose line :meth:`_partner` emptied off the turns (:meth:`_start` gave it one back)."""
        if not waiting:
            del self._waiting[tenant_id]
            self._turns.remove(tenant_id)

    def _next_tenant(self) -> str:
        """Taken off the turns: the first tenant with the fewest checks running (a tenant with none at once)."""
        chosen, fewest = 0, self.threads
        for index, tenant_id in enumerate(self._turns):
            running = self._running.get(tenant_id, 0)
            if running < fewest:
                chosen, fewest = index, running
                if running == 0:
                    break
        tenant_id = self._turns[chosen]
        del self._turns[chosen]
        return tenant_id

    def _ended(self, tenant_id: str, jobs: list[_Waiting], ran: asyncio.Future[None]) -> None:
        self._running_total -= 1
        left = self._running[tenant_id] - len(jobs)
        if left:
            self._running[tenant_id] = left
        else:
            del self._running[tenant_id]
        for job in jobs:
            if ran.cancelled():  # the loop is closing
                job.done.cancel()
            elif not job.done.done():
                error = ran.exception()
                if error is not None:
                    job.done.set_exception(error)
                else:
                    job.done.set_result(None)
        self._start()


def _timed(run: Callable[[], None], hooks: SchedulerHooks, tenant_id: str) -> None:
    """``run`` (a check, on a thread), its CPU time counted in the tenant's use."""
    started = time.thread_time()
    try:
        run()
    finally:
        hooks.account(tenant_id, time.thread_time() - started)
