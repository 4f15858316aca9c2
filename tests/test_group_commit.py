"""Group commit (``pbfast.tenant_node.group_commit``): a tenant's creates ready in one loop iteration are tried on
the loop in one transaction; each is done (and may answer) only once the group committed; a group that cannot
commit whole is rolled back whole and every member done again alone on a database thread; realtime changes are
published after the commit, once. Real SQLite, a real tenant database, real threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from pbfast.pocketbase.realtime.fanout import RecordChange
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.inline_tries import InlineTries

COUNT_TO = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) SELECT count(*) FROM c"


class Bus:
    """A realtime bus that records what it was given and whether the change was committed when it was."""

    def __init__(self, tenant: Tenant, reader: apsw.Connection) -> None:
        self.tenant, self.reader = tenant, reader
        self.published: list[tuple[str, bool]] = []

    def publish(self, tenant: Tenant, change: RecordChange) -> None:
        seen = self.reader.execute("SELECT count(*) FROM notes WHERE body = ?", (change.row["body"],)).get
        self.published.append((change.row["body"], seen == 1))


def _open(tmp_path: Path) -> tuple[Tenant, apsw.Connection]:
    tenant = Tenant.open("t", tmp_path / "t", create=True)
    tenant.conn.execute("CREATE TABLE notes (body TEXT UNIQUE)")
    return tenant, apsw.Connection(str(tmp_path / "t" / "data.db"))


def _wal_frames(tenant: Tenant) -> int:
    wal = Path(tenant.directory) / "data.db-wal"
    return (wal.stat().st_size - 32) // (4096 + 24) if wal.exists() else 0


def _creates(tenant: Tenant, bodies: list[str], ran: list[tuple[str, str]],
             extra: Callable[[str], None] | None = None) -> list[Callable[[], None]]:
    """One job per body: insert it (as a create's handler does, the realtime hook after it) and note where it ran."""

    def create(body: str) -> None:
        ran.append((body, threading.current_thread().name))
        if extra is not None:
            extra(body)
        tenant.conn.execute("INSERT INTO notes VALUES (?)", (body,))
        if tenant.realtime is not None:
            tenant.realtime.publish(tenant, RecordChange("create", "c", {"body": body}))

    return [lambda body=body: create(body) for body in bodies]  # type: ignore[misc]


def _run_all(tenant: Tenant, jobs: list[Callable[[], None]], scenario: Callable[[InlineTries], Any] | None = None
             ) -> None:
    async def main() -> None:
        db = DbScheduler(threads=1)
        try:
            tries = InlineTries(db)
            await asyncio.gather(*(tries.run(tenant, job, inline=True, write=True, group=True) for job in jobs))
            if scenario is not None:
                await scenario(tries)
        finally:
            db.stop()

    asyncio.run(main())


def test_creates_ready_together_share_one_commit_and_publish_after_it(tmp_path: Path) -> None:
    tenant, reader = _open(tmp_path)
    bus = Bus(tenant, reader)
    tenant.realtime = bus
    try:
        before = _wal_frames(tenant)
        ran: list[tuple[str, str]] = []
        bodies = [f"n{i}" for i in range(12)]

        async def counted(tries: InlineTries) -> None:
            assert tries.db.load["t"].jobs == 12  # the tenant's load counts each create, not the group

        _run_all(tenant, _creates(tenant, bodies, ran), counted)
        loop_thread = threading.current_thread().name
        assert [name for _, name in ran] == [loop_thread] * 12  # all on the loop, each once
        assert reader.execute("SELECT count(*) FROM notes").get == 12
        # one transaction: the table's page (and the unique index's) once, not twice per create
        assert _wal_frames(tenant) - before <= 4
        assert bus.published == [(body, True) for body in bodies]  # in order, each once, once committed
        assert tenant.realtime is bus
    finally:
        reader.close()
        tenant.close()


def test_a_create_that_fails_alone_leaves_the_others_committed(tmp_path: Path) -> None:
    """A unique index refusing one create (its handler answers 400) undoes only that statement."""
    tenant, reader = _open(tmp_path)
    try:
        answers: list[str] = []

        def create(body: str) -> Callable[[], None]:
            def job() -> None:
                try:
                    tenant.conn.execute("INSERT INTO notes VALUES (?)", (body,))
                    answers.append(f"200 {body}")
                except apsw.ConstraintError:
                    answers.append(f"400 {body}")
            return job

        _run_all(tenant, [create("a"), create("b"), create("a"), create("c")])
        assert answers == ["200 a", "200 b", "400 a", "200 c"]  # each ran once, in the group
        assert reader.execute("SELECT group_concat(body, '') FROM (SELECT body FROM notes ORDER BY body)").get == "abc"
    finally:
        reader.close()
        tenant.close()


def test_a_group_that_cannot_commit_whole_is_done_again_one_by_one(tmp_path: Path) -> None:
    """A member that raises rolls the group back: no change of the group is published, every member is done again
    alone on a database thread (the raising one raises to its own caller), each row stored once."""
    tenant, reader = _open(tmp_path)
    bus = Bus(tenant, reader)
    tenant.realtime = bus
    try:
        ran: list[tuple[str, str]] = []
        raised = {"x": 0}

        def fails_once(body: str) -> None:
            if body == "x" and not raised["x"]:
                raised["x"] += 1
                raise RuntimeError("boom")

        _run_all(tenant, _creates(tenant, ["v", "w", "x", "y"], ran, fails_once))
        on_loop = [body for body, name in ran if not name.startswith("pbfast-db-")]
        on_threads = [body for body, name in ran if name.startswith("pbfast-db-")]
        assert on_loop == ["v", "w", "x"]  # the group got as far as the member that raised
        assert sorted(on_threads) == ["v", "w", "x", "y"]  # then each alone
        assert reader.execute("SELECT count(*) FROM notes").get == 4
        assert sorted(bus.published) == [("v", True), ("w", True), ("x", True), ("y", True)]  # only the commits'
    finally:
        reader.close()
        tenant.close()


def test_a_group_stopped_by_the_budget_or_a_lock_is_done_on_the_threads(tmp_path: Path) -> None:
    tenant, reader = _open(tmp_path)
    try:
        ran: list[tuple[str, str]] = []

        def long_statement(body: str) -> None:
            if body == "slow":
                assert tenant.conn.execute(COUNT_TO, (3_000_000,)).get == 3_000_000

        _run_all(tenant, _creates(tenant, ["p", "slow", "q"], ran, long_statement))
        assert reader.execute("SELECT count(*) FROM notes").get == 3  # stopped mid-group, rolled back, done again
        assert sorted(body for body, name in ran if name.startswith("pbfast-db-")) == ["p", "q", "slow"]

        reader.execute("BEGIN IMMEDIATE")  # another connection's write lock: the group's BEGIN meets it
        threading.Timer(0.2, reader.execute, ("COMMIT",)).start()
        ran.clear()

        async def later(tries: InlineTries) -> None:
            assert not tries.paused("t", write=True)  # the lock was not the tenant's doing

        _run_all(tenant, _creates(tenant, ["r", "s"], ran), later)
        assert sorted(name.startswith("pbfast-db-") for _, name in ran) == [True, True]
        assert reader.execute("SELECT count(*) FROM notes").get == 5
    finally:
        reader.close()
        tenant.close()


def test_a_try_that_fails_itself_answers_every_member(tmp_path: Path) -> None:
    """An error of the inline try itself (not of a create's job) reaches a lone create's caller, as an inline
    try's does, and sends a group's creates to be done alone: no member waits forever."""
    from pbfast.tenant_node.group_commit import GroupCommits

    tenant, reader = _open(tmp_path)

    def failing_try(tenant: Tenant, work: Callable[[], None], jobs: int) -> bool:
        raise apsw.IOError("disk I/O error")

    async def main() -> None:
        async def on_thread(tenant_id: str, work: Callable[[], bool], jobs: int) -> bool:
            raise AssertionError("not expected")

        groups = GroupCommits(failing_try, on_thread)
        alone = await asyncio.gather(groups.run(tenant, lambda: None, True), return_exceptions=True)
        assert isinstance(alone[0], apsw.IOError)
        assert await asyncio.gather(*(groups.run(tenant, lambda: None, True) for _ in range(3))) == [False] * 3

    try:
        asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        reader.close()
        tenant.close()


def test_the_storage_quota_refuses_exactly_the_creates_it_stores_not(tmp_path: Path) -> None:
    """Creates in groups against a small storage quota: every create answered as stored is stored, every one
    refused (SQLite's page limit, answered 403 by the handler) is not, whether SQLite undid just the statement or
    the whole group (then done again alone)."""
    tenant, reader = _open(tmp_path)
    try:
        tenant.conn.execute("CREATE TABLE blobs (body TEXT PRIMARY KEY, data BLOB)")
        pages = tenant.conn.execute("PRAGMA page_count").get
        tenant.set_max_bytes((pages + 40) * 4096)  # room for ~30 of the 60 creates below
        answers: dict[str, int] = {}

        def create(body: str) -> Callable[[], None]:
            def job() -> None:
                try:
                    tenant.conn.execute("INSERT INTO blobs VALUES (?, zeroblob(5000))", (body,))
                    answers[body] = 200
                except apsw.FullError:
                    answers[body] = 403
            return job

        _run_all(tenant, [create(f"b{i}") for i in range(60)])
        stored = {row[0] for row in reader.execute("SELECT body FROM blobs")}
        assert stored == {body for body, status in answers.items() if status == 200}
        assert 0 < len(stored) < 60 and len(answers) == 60
    finally:
        reader.close()
        tenant.close()


def test_creates_of_a_tenant_whose_writes_are_paused_share_one_thread_job(tmp_path: Path) -> None:
    """A tenant's writes paused (one ran over the budget): its creates ready together go to a database thread as
    one job in one transaction, not one job and one commit each."""
    tenant, reader = _open(tmp_path)
    try:
        ran: list[tuple[str, str]] = []

        async def paused_then_created(tries: InlineTries) -> None:
            await tries.run(tenant, lambda: tenant.conn.execute(COUNT_TO, (3_000_000,)).get, inline=True, write=True)
            assert tries.paused("t", write=True)
            jobs_before = tries.db.load["t"].jobs
            before = _wal_frames(tenant)
            await asyncio.gather(*(tries.run(tenant, job, inline=True, write=True, group=True)
                                   for job in _creates(tenant, [f"p{i}" for i in range(12)], ran)))
            assert _wal_frames(tenant) - before <= 4
            assert tries.db.load["t"].jobs - jobs_before == 12

        _run_all(tenant, [], paused_then_created)
        assert len(ran) == 12 and all(name.startswith("pbfast-db-") for _, name in ran)
        assert reader.execute("SELECT count(*) FROM notes").get == 12
    finally:
        reader.close()
        tenant.close()


def test_a_group_on_a_heavy_tenants_thread_answers_only_after_its_commit(tmp_path: Path) -> None:
    """A heavy tenant's job sends its own answer from its background thread; a group's member does not (its answer
    waits for the group's COMMIT, which comes after every member ran)."""
    import pbfast.tenant_node.db_scheduler as db_scheduler
    from pbfast.tenant_node.group_commit import GroupCommits, may_answer_from_job

    tenant, reader = _open(tmp_path)
    seen: list[bool] = []

    def create(body: str) -> Callable[[], None]:
        def job() -> None:
            tenant.conn.execute("INSERT INTO notes VALUES (?)", (body,))
            seen.append(may_answer_from_job())
        return job

    async def on_background_thread(tenant_id: str, work: Callable[[], bool], jobs: int) -> bool:
        def flagged() -> bool:
            db_scheduler._this_thread.background = True
            return work()
        return await asyncio.to_thread(flagged)

    async def main() -> None:
        groups = GroupCommits(lambda tenant, work, jobs: False, on_background_thread)  # the loop gives up
        assert await asyncio.gather(*(groups.run(tenant, create(f"h{i}"), True) for i in range(3))) == [True] * 3

    try:
        asyncio.run(asyncio.wait_for(main(), 10))
        assert seen == [False, False, False]
        assert reader.execute("SELECT count(*) FROM notes").get == 3

        def alone() -> bool:
            db_scheduler._this_thread.background = True
            return may_answer_from_job()

        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(alone()))
        thread.start()
        thread.join()
        assert result == [True]
    finally:
        reader.close()
        tenant.close()
