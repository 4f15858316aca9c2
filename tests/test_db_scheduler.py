"""The database scheduler shares the CPU between tenants: a tenant that keeps a thread busy runs its jobs on the
background threads (a lower OS priority) while another tenant is served too, and as before when alone. Real
threads and a real event loop; jobs sleep instead of spinning, so the test costs no CPU. (Linux: each thread has
its own nice value.)"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time

from pbfast.tenant_node.db_scheduler import BACKGROUND_NICE, USAGE_WINDOW_SECONDS, DbScheduler

def _nice() -> int:
    """The calling thread's OS priority (nice value)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def _busy(db: DbScheduler, tenant_id: str, seconds: float) -> int:
    """A job of ``seconds`` of work on the tenant's turn; the nice value of the thread that ran it."""

    def work() -> int:
        time.sleep(seconds)
        return _nice()

    return await db.run(tenant_id, work)


def test_a_heavy_tenant_gives_way_only_while_others_are_served() -> None:
    async def scenario() -> None:
        db = DbScheduler(threads=2)
        try:
            normal = _nice()
            # Alone, a tenant that keeps a thread busy runs as before: normal threads, inline work allowed.
            for _ in range(5):
                assert await _busy(db, "noisy", 0.2) == normal
            assert not db.in_background("noisy")
            assert db.run_inline("noisy", lambda: True)

            # Another tenant served: the busy one's jobs go to the background threads, never inline...
            assert db.run_inline("quiet", lambda: True)
            assert db.in_background("noisy")
            assert not db.run_inline("noisy", lambda: True)
            assert await _busy(db, "noisy", 0.05) == min(19, normal + BACKGROUND_NICE)
            # ...while the other tenant's jobs keep the normal priority.
            assert await _busy(db, "quiet", 0.0) == normal
            assert not db.in_background("quiet")

            # Once the other tenant was not served for a while, the busy one is back on the normal threads.
            await asyncio.sleep(USAGE_WINDOW_SECONDS + 0.1)
            assert not db.in_background("noisy")
            assert await _busy(db, "noisy", 0.0) == normal
        finally:
            db.stop()

    asyncio.run(scenario())


def test_other_worker_processes_count_as_others_served() -> None:
    async def scenario() -> None:
        db = DbScheduler(threads=1)
        try:
            for _ in range(5):
                await _busy(db, "noisy", 0.2)
            assert not db.in_background("noisy")
            db.set_node_active(2)  # another tenant was served by another worker process of the node
            assert db.in_background("noisy")
            assert await _busy(db, "noisy", 0.0) == min(19, _nice() + BACKGROUND_NICE)
            db.set_node_active(1)
            assert not db.in_background("noisy")
        finally:
            db.stop()

    asyncio.run(scenario())


def test_a_tenant_that_becomes_heavy_keeps_its_order_and_its_turns() -> None:
    """Jobs of one tenant run one at a time, in the order they came, also when their lane changes meanwhile."""

    async def scenario() -> None:
        db = DbScheduler(threads=2)
        try:
            order: list[int] = []
            running = 0
            overlap = False

            def job(n: int) -> None:
                nonlocal running, overlap
                running += 1
                overlap = overlap or running > 1
                time.sleep(0.1)
                order.append(n)
                running -= 1

            burst = [asyncio.ensure_future(db.run("noisy", functools.partial(job, n))) for n in range(15)]
            await asyncio.sleep(1.0)  # heavy by now
            assert not db.in_background("noisy")
            assert db.run_inline("quiet", lambda: True)
            assert db.in_background("noisy")
            await asyncio.gather(*burst)
            assert order == list(range(15)) and not overlap
        finally:
            db.stop()

    asyncio.run(scenario())


def test_an_inline_turn_waits_for_the_jobs_submitted_before_it() -> None:
    """Under steady load a tenant's line of jobs never empties: a request that may run on the loop waits for the
    jobs ahead of it, then runs there, instead of joining the line behind them (and keeping the next ones on the
    threads too)."""

    async def scenario() -> None:
        db = DbScheduler(threads=1)
        try:
            gate = threading.Event()
            done: list[str] = []
            first = asyncio.ensure_future(db.run("t", lambda: done.append("first") if gate.wait(5) else None))
            second = asyncio.ensure_future(db.run("t", lambda: done.append("second")))
            await asyncio.sleep(0.05)  # the first runs on the thread, the second waits in line
            turn = asyncio.ensure_future(db.inline_turn("t"))
            await asyncio.sleep(0.05)
            assert not turn.done()
            later = asyncio.ensure_future(db.run("t", lambda: done.append("later")))  # submitted after the wait began
            await asyncio.sleep(0)
            gate.set()
            assert await turn
            assert done[:2] == ["first", "second"]  # the jobs ahead ran; the one behind may or may not have
            await asyncio.gather(first, second, later)
            assert done == ["first", "second", "later"]
            # with nothing ahead the turn is at once, and the inline run takes it
            assert await db.inline_turn("t")
            assert db.run_inline("t", lambda: True)
        finally:
            db.stop()

    asyncio.run(scenario())


def test_an_inline_turn_is_refused_at_once_for_work_of_the_background_threads() -> None:
    async def scenario() -> None:
        db = DbScheduler(threads=1)
        try:
            for _ in range(5):
                await _busy(db, "noisy", 0.2)
            db.set_node_active(2)
            gate = threading.Event()
            running = asyncio.ensure_future(db.run("noisy", lambda: gate.wait(5)))
            await asyncio.sleep(0.05)
            assert not await asyncio.wait_for(db.inline_turn("noisy"), 1)  # heavy while others are served
            gate.set()
            await running
        finally:
            db.stop()

    asyncio.run(scenario())
