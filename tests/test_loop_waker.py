"""The database threads hand results back to the event loop through a pipe the loop watches, not with
``call_soon_threadsafe`` (uvloop's wakes the loop holding the GIL: a heavy tenant's nice +10 thread, preempted in
that call, kept every other thread waiting for the GIL; benchmarks/RESULTS.md, "Noisy neighbour"). Real threads,
real event loops (uvloop's, as the node runs, and asyncio's own to count the calls)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import uvloop

from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.loop_waker import LoopWaker


class CountingLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, counting ``call_soon_threadsafe`` calls made from other threads."""

    def __init__(self) -> None:
        super().__init__()
        self.from_other_threads = 0
        self._thread = threading.get_ident()

    def call_soon_threadsafe(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.get_ident() != self._thread:
            self.from_other_threads += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_database_jobs_hand_their_results_back_without_call_soon_threadsafe() -> None:
    async def scenario() -> int:
        db = DbScheduler(threads=2)
        try:
            # Two tenants, one busy (its jobs on the background threads once the other is served): every job's
            # result and exception comes back, and no worker thread woke the loop with call_soon_threadsafe.
            async def busy() -> list[int]:
                return [await db.run("noisy", lambda n=n: (time.sleep(0.002), n)[1]) for n in range(40)]

            async def failing() -> None:
                def work() -> None:
                    raise ValueError("bad")
                try:
                    await db.run("quiet", work)
                except ValueError:
                    return
                raise AssertionError("the job's exception was lost")

            results = await asyncio.gather(busy(), *(db.run("quiet", lambda n=n: n) for n in range(20)), failing())
            assert results[0] == list(range(40))
            assert results[1:21] == list(range(20))
            return asyncio.get_running_loop().from_other_threads  # type: ignore[attr-defined,no-any-return]
        finally:
            db.stop()

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        assert runner.run(scenario()) == 0


def test_callbacks_from_many_threads_all_run_on_the_loop_in_order_per_thread() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waker = LoopWaker(loop)
        seen: dict[int, list[int]] = {t: [] for t in range(4)}
        loop_thread = threading.get_ident()
        done = asyncio.Event()
        remaining = [4 * 2000]

        def record(t: int, n: int) -> None:
            assert threading.get_ident() == loop_thread
            seen[t].append(n)
            remaining[0] -= 1
            if not remaining[0]:
                done.set()

        def send(t: int) -> None:
            for n in range(2000):
                waker.call(lambda n=n: record(t, n))

        threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.wait_for(done.wait(), 30)
        for thread in threads:
            thread.join()
        assert all(numbers == list(range(2000)) for numbers in seen.values())
        waker.close()

    uvloop.run(scenario())


def test_close_runs_what_is_queued_and_later_calls_still_reach_the_loop() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fds_before = len(os.listdir("/proc/self/fd"))
        waker = LoopWaker(loop)
        ran: list[str] = []
        waker.call(lambda: ran.append("queued"))
        waker.close()  # on the loop: what was queued runs now
        assert ran == ["queued"]
        assert len(os.listdir("/proc/self/fd")) == fds_before  # the pipe is closed
        arrived = asyncio.Event()
        threading.Thread(target=waker.call, args=(arrived.set,)).start()  # after the close: the loop's own way
        await asyncio.wait_for(arrived.wait(), 10)

    uvloop.run(scenario())
