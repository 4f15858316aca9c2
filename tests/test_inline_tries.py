"""A tenant's short jobs tried on the event loop (``InlineTries``): a try that meets another connection's write
lock (Litestream's checkpoint, another worker process) is done on a database thread, where it waits for the
lock, and the tenant's next jobs are still tried on the loop; a try that runs over its budget sends the tenant's
reads to the threads for a while (while other tenants are served, only by the loop thread's CPU time). Real
SQLite, a real tenant database, real threads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import apsw

from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.inline_tries import INLINE_BUDGET_SECONDS, InlineTries

COUNT_TO = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) SELECT count(*) FROM c"


def test_a_lock_sends_one_job_to_a_thread_and_a_long_job_pauses_the_tenant(tmp_path: Path) -> None:
    tenant = Tenant.open("t", tmp_path / "t", create=True)
    other = apsw.Connection(str(tmp_path / "t" / "data.db"))

    async def scenario() -> None:
        db = DbScheduler(threads=1)
        tries = InlineTries(db)
        threads: list[str] = []

        def insert() -> None:
            threads.append(threading.current_thread().name)
            tenant.conn.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
            tenant.conn.execute("INSERT INTO notes VALUES ('x')")

        try:
            await tries.run(tenant, insert, inline=True, write=True)  # no lock: done on the loop
            assert threads == [threading.current_thread().name]

            other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock for a moment
            asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
            threads.clear()
            await tries.run(tenant, insert, inline=True, write=True)
            assert threads[-1].startswith("pbfast-db-")  # stopped on the lock, then done on a thread that waited
            assert not tries.paused("t", write=True)  # the lock was not the tenant's doing: its next writes are tried inline
            threads.clear()
            await tries.run(tenant, insert, inline=True, write=True)
            assert threads == [threading.current_thread().name]

            counted: list[int] = []
            await tries.run(tenant, lambda: counted.append(tenant.conn.execute(COUNT_TO, (100_000,)).get),
                            inline=True, write=False)
            assert counted[-1] == 100_000  # stopped on the loop, done again on a thread
            assert tries.paused("t", write=False) and not tries.paused("t", write=True)
        finally:
            db.stop()

    try:
        asyncio.run(scenario())
        assert tenant.conn.execute("SELECT count(*) FROM notes").get == 3
    finally:
        other.close()
        tenant.close()


def test_a_read_that_waited_behind_another_tenant_is_not_held_against_its_tenant(tmp_path: Path) -> None:
    """Waiting for a core or the GIL in the middle of a read (a neighbour's load) does not pause the tenant's
    inline reads while other tenants are served; served alone, the wall clock counts as before; CPU always."""
    tenant = Tenant.open("quiet", tmp_path / "quiet", create=True)

    def waits_then_reads() -> None:
        time.sleep(INLINE_BUDGET_SECONDS * 5)  # off the CPU, as when a neighbour's thread has the core or the GIL
        assert tenant.conn.execute("SELECT 1").get == 1

    def burns_cpu() -> None:  # Python around the statement (a big page's JSON): the budget cannot stop it
        started = time.thread_time()
        while time.thread_time() - started < INLINE_BUDGET_SECONDS * 3:
            pass

    async def scenario() -> None:
        db = DbScheduler(threads=1)
        try:
            alone = InlineTries(db)
            await alone.run(tenant, waits_then_reads, inline=True, write=False)
            assert alone.paused("quiet", write=False)

            assert db.run_inline("noisy", lambda: True)  # another tenant served too
            shared = InlineTries(db)
            await shared.run(tenant, waits_then_reads, inline=True, write=False)
            assert not shared.paused("quiet", write=False)
            await shared.run(tenant, burns_cpu, inline=True, write=False)
            assert shared.paused("quiet", write=False)
        finally:
            db.stop()

    try:
        asyncio.run(scenario())
    finally:
        tenant.close()
