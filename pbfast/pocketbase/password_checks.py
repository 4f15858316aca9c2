"""Where logins' bcrypt checks run: off the tenants' database turns, on a few threads shared fairly by tenants.

A check is 50-250 ms of CPU. Made in the tenant's turn (its jobs run one at a time), it kept every other
request of the tenant (a token refresh, a read) waiting behind all of its queued logins. Here each tenant has
at most one check running, as it had in its turn, and tenants with checks waiting take turns on the threads, so
a burst of logins of one tenant delays neither another tenant's logins nor its own other requests. A tenant may
have at most ``queue_limit`` checks waiting; beyond, the login is answered 429 at once.

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
from pbfast.pocketbase.auth import PasswordCheck

__all__ = ["DEFAULT_CHECKS_WAITING", "PasswordChecks", "SchedulerHooks"]

DEFAULT_CHECKS_WAITING = 256  # per tenant, as its database jobs (pbfast.tenant_node.db_scheduler)


class SchedulerHooks(Protocol):
    """What the checks need of the node's database scheduler (:class:`pbfast.tenant_node.db_scheduler.DbScheduler`)."""

    def in_background(self, tenant_id: str) -> bool: ...

    def account(self, tenant_id: str, seconds: float) -> None: ...

    def enter_background(self) -> None: ...


@dataclass(slots=True)
class _Waiting:
    check: PasswordCheck
    done: asyncio.Future[None]


class PasswordChecks:
    """Makes :class:`PasswordCheck` s on ``threads`` threads (one per core: more cannot make CPU work go faster),
    one at a time per tenant, tenants in turn."""

    def __init__(self, threads: int = os.cpu_count() or 2, queue_limit: int = DEFAULT_CHECKS_WAITING) -> None:
        self.threads = threads
        self.queue_limit = queue_limit
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pbfast-bcrypt")
        self._background: ThreadPoolExecutor | None = None  # a heavy tenant's checks (made with the hooks)
        self._hooks: SchedulerHooks | None = None
        self._waiting: dict[str, deque[_Waiting]] = {}
        self._turns: deque[str] = deque()  # tenants with a check waiting and none running, in turn order
        self._running: set[str] = set()

    def share_with(self, hooks: SchedulerHooks) -> None:
        """Take part in the node's scheduling (see the module's docs); before serving."""
        self._hooks = hooks
        self._background = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="pbfast-bcrypt-bg",
                                              initializer=hooks.enter_background)

    async def check(self, tenant_id: str, check: PasswordCheck,
                    client_disconnect: Callable[[], Awaitable[object]] | None = None) -> bool:
        """Make ``check`` (its answer in ``check.matches``) in the tenant's turn on the threads; False when the
        client went away while it waited (``client_disconnect``: granian's), and it was not made: a load tool's
        connections closed at the end of a run would otherwise leave seconds of checks for nobody."""
        waiting = self._waiting.get(tenant_id)
        if waiting is None:
            waiting = self._waiting[tenant_id] = deque()
        if len(waiting) >= self.queue_limit:
            raise ApiError(429, "Too many requests for this tenant are waiting; retry shortly.",
                           headers=[("retry-after", "1")])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(_Waiting(check, done))
        if tenant_id not in self._running and len(waiting) == 1:
            self._turns.append(tenant_id)
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
        while self._turns and len(self._running) < self.threads:
            tenant_id = self._turns.popleft()
            waiting = self._waiting[tenant_id]
            job = waiting.popleft()
            if job.done.cancelled():  # its request went away while it waited
                self._next_turn(tenant_id)
                continue
            self._running.add(tenant_id)
            hooks, executor = self._hooks, self._executor
            if hooks is not None and self._background is not None and hooks.in_background(tenant_id):
                executor = self._background
            run = job.check.run if hooks is None else functools.partial(_timed, job.check.run, hooks, tenant_id)
            ran = loop.run_in_executor(executor, run)
            ran.add_done_callback(functools.partial(self._ended, tenant_id, job))

    def _ended(self, tenant_id: str, job: _Waiting, ran: asyncio.Future[None]) -> None:
        self._running.discard(tenant_id)
        if ran.cancelled():  # the loop is closing
            job.done.cancel()
        elif not job.done.done():
            error = ran.exception()
            if error is not None:
                job.done.set_exception(error)
            else:
                job.done.set_result(None)
        self._next_turn(tenant_id)
        self._start()

    def _next_turn(self, tenant_id: str) -> None:
        """The tenant's next check (if any) waits for its turn at the back."""
        if self._waiting.get(tenant_id):
            self._turns.append(tenant_id)
        else:
            self._waiting.pop(tenant_id, None)


def _timed(run: Callable[[], None], hooks: SchedulerHooks, tenant_id: str) -> None:
    """``run`` (a check, on a thread), its CPU time counted in the tenant's use."""
    started = time.thread_time()
    try:
        run()
    finally:
        hooks.account(tenant_id, time.thread_time() - started)
