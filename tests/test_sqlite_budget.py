"""Work tried on the event loop within a time budget (``TimeLimit.within_budget``): a read within the
budget runs to its end there; one beyond is stopped and reported, whatever the code around its statement did
with the interruption, and the connection's time limit answers as before afterwards. Real SQLite."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import pytest

from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.sqlite_guard import TimeLimit, TimeLimitExceeded

COUNT_TO = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) SELECT count(*) FROM c"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def connection(tmp_path: Path) -> apsw.Connection:
    return apsw.Connection(str(tmp_path / "data.db"))


def test_a_small_read_runs_to_its_end_within_the_budget(connection: apsw.Connection) -> None:
    limit = TimeLimit(connection)
    results: list[int] = []
    assert limit.within_budget(0.05, lambda: results.append(connection.execute(COUNT_TO, (100,)).get))
    assert results == [100]


def test_a_heavy_read_is_stopped_and_the_time_limit_still_holds(connection: apsw.Connection) -> None:
    limit = TimeLimit(connection)

    def heavy() -> None:
        with limit.running(30):  # the request's own limit, far away
            assert connection.execute(COUNT_TO, (50_000_000,)).get == 50_000_000

    assert not limit.within_budget(0.002, heavy)
    # the connection works, without a budget: the same read runs to its end
    assert connection.execute(COUNT_TO, (200_000,)).get == 200_000
    # and a statement past the time limit is the time limit's (not the budget's) to report
    with pytest.raises(TimeLimitExceeded), limit.running(0.05):
        assert connection.execute(ENDLESS).get is None


def test_a_read_that_swallows_the_interruption_is_still_over_budget(connection: apsw.Connection) -> None:
    limit = TimeLimit(connection)
    answers: list[str] = []

    def swallowing() -> None:
        try:
            assert connection.execute(COUNT_TO, (50_000_000,)).get == 50_000_000
        except apsw.Error:
            answers.append("an answer made of the interruption")

    assert not limit.within_budget(0.002, swallowing)
    assert answers  # thrown away by the caller, who does the work again elsewhere


def test_a_write_stopped_before_its_commit_leaves_nothing(connection: apsw.Connection) -> None:
    limit = TimeLimit(connection)
    connection.execute("CREATE TABLE t (x INTEGER)")

    def heavy_write() -> None:
        with write_transaction(connection):
            connection.execute(f"INSERT INTO t SELECT x FROM ({COUNT_TO.replace('count(*)', 'x')})", (50_000_000,))

    assert not limit.within_budget(0.002, heavy_write)
    assert connection.execute("SELECT count(*) FROM t").get == 0  # rolled back: safe to do again elsewhere


def test_after_a_commit_the_budget_ends_and_the_work_counts_as_done(connection: apsw.Connection) -> None:
    limit = TimeLimit(connection)
    connection.execute("CREATE TABLE t (x INTEGER)")
    counted: list[int] = []

    def write_then_heavy_read() -> None:
        with write_transaction(connection):
            connection.execute("INSERT INTO t VALUES (1)")
        counted.append(connection.execute(COUNT_TO, (2_000_000,)).get)  # far past the budget: not stopped

    assert limit.within_budget(0.002, write_then_heavy_read)
    assert counted == [2_000_000]
    assert connection.execute("SELECT count(*) FROM t").get == 1


def test_a_write_does_not_wait_for_another_connections_lock_within_the_budget(tmp_path: Path) -> None:
    path = str(tmp_path / "data.db")
    holder, connection = apsw.Connection(path), apsw.Connection(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE t (x INTEGER)")
    connection.set_busy_timeout(5_000)
    limit = TimeLimit(connection, 5_000)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, say

    def write() -> None:
        with write_transaction(connection):
            connection.execute("INSERT INTO t VALUES (1)")

    started = time.monotonic()
    assert not limit.within_budget(0.002, write)  # given up at once: done again where waiting is fine
    assert time.monotonic() - started < 1
    holder.execute("ROLLBACK")
    write()  # the connection's own busy timeout is back (and nothing holds the lock now)
    assert connection.execute("SELECT count(*) FROM t").get == 1


def test_a_write_behind_another_connections_lock_goes_on_soon_after_the_lock_is_free(tmp_path: Path) -> None:
    """Outside a budget a write waits for the lock (Litestream's checkpoint, another worker's write) up to the
    busy timeout given to TimeLimit, looking again every ms: it goes on within a few ms of the release, where
    SQLite's own busy timeout sleeps in growing steps (held 240 ms, the lock is tried again at 328 ms) while the
    tenant's later writes queue behind the waiting one."""
    path = str(tmp_path / "data.db")
    holder, connection = apsw.Connection(path), apsw.Connection(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE t (x INTEGER)")
    TimeLimit(connection, 5_000)
    holder.execute("BEGIN IMMEDIATE")
    released: list[float] = []

    def release() -> None:
        time.sleep(0.24)
        holder.execute("ROLLBACK")
        released.append(time.monotonic())

    thread = threading.Thread(target=release)
    thread.start()
    try:
        connection.execute("INSERT INTO t VALUES (1)")  # waits for the holder
        done = time.monotonic()
    finally:
        thread.join()
    assert done - released[0] < 0.06  # a loaded machine's scheduling included
    assert connection.execute("SELECT count(*) FROM t").get == 1
