"""Which tenants' work is tried on the event loop (``InlineGate``): a tenant whose work held the loop past the
budget has its next requests done on the threads for a while; waiting for a core or for the GIL meanwhile (a
neighbour's load) does not count against it while other tenants are served, only when it is served alone.
Real SQLite, a real scheduler (its threads sleep)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from pbfast.pocketbase.sqlite_guard import TimeLimit
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.serving import INLINE_BUDGET_SECONDS, InlineGate

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def db() -> Iterator[DbScheduler]:
    scheduler = DbScheduler(threads=1)
    yield scheduler
    scheduler.stop()


@pytest.fixture
def connection(tmp_path: Path) -> apsw.Connection:
    return apsw.Connection(str(tmp_path / "data.db"))


def test_waiting_while_the_work_runs_counts_only_for_a_tenant_served_alone(db: DbScheduler,
                                                                          connection: apsw.Connection) -> None:
    gate, limit = InlineGate(db), TimeLimit(connection)

    def waits_then_reads() -> None:
        time.sleep(INLINE_BUDGET_SECONDS * 5)  # off the CPU, as when a neighbour's thread has the core or the GIL
        assert connection.execute("SELECT 1").get == 1

    # Served alone: the wall clock counts (saturating the loop, its requests run back to back on the threads).
    assert db.run_inline("quiet", lambda: True)
    assert gate.run("quiet", limit, waits_then_reads)
    assert not gate.open_for("quiet")

    # Another tenant served too: waiting behind it does not count against the tenant.
    assert db.run_inline("noisy", lambda: True)
    assert gate.run("quiet", limit, waits_then_reads)
    assert gate.open_for("quiet")


def test_work_that_holds_the_loop_past_the_budget_goes_to_the_threads_for_a_while(db: DbScheduler,
                                                                                  connection: apsw.Connection) -> None:
    gate, limit = InlineGate(db), TimeLimit(connection)

    def burns_cpu() -> None:  # Python around the statements (a big page's JSON): the budget cannot stop it
        started = time.thread_time()
        while time.thread_time() - started < INLINE_BUDGET_SECONDS * 3:
            pass
        assert connection.execute("SELECT 1").get == 1

    assert gate.run("noisy", limit, burns_cpu)  # done: what it did stands
    assert not gate.open_for("noisy")
    assert gate.open_for("quiet")


def test_work_stopped_by_the_budget_goes_to_the_threads_for_a_while(db: DbScheduler,
                                                                  connection: apsw.Connection) -> None:
    gate, limit = InlineGate(db), TimeLimit(connection)
    assert not gate.run("noisy", limit, lambda: connection.execute(ENDLESS).get)
    assert not gate.open_for("noisy")
