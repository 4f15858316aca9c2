"""A tenant's short jobs tried on the event loop (``InlineTries``): a try that meets another connection's write
lock (Litestream's checkpoint, another worker process) is done on a database thread, where it waits for the
lock, and the tenant's next jobs are still tried on the loop; a try that runs over its budget sends the tenant's
reads to the threads for a while. Real SQLite, a real tenant database, real threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import apsw

from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.inline_tries import InlineTries

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
