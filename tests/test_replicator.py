"""The tenant node's Litestream supervision and its safety rules, against a real ``litestream`` process and a
local file replica: unregisters that Litestream did not confirm are remembered and retried (and block a
release), a halt is never undone by a restart, an orphaned Litestream dies with its node, point-in-time
restores past the newest replica file, and a tenant placed again while open is vetted again.

Faults are real: Litestream is frozen with SIGSTOP (its control socket stops answering) or killed."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from pbfast.http import ApiError
from helpers import freeze, thaw
from pbfast.pocketbase.tenant import DATA_DB
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.local_copy import read_marker
from pbfast.tenant_node.replica import ReplicaStore, ReplicationError
from pbfast.tenant_node.replication import Replicator


def _replicator(tmp_path: Path) -> Replicator:
    return Replicator(tmp_path / "litestream", ReplicaStore("unused", None, tmp_path / "replica"), ship_interval=0)


def _listed(replicator: Replicator) -> set[str]:
    """The databases the running litestream replicates, asked over its control socket."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(replicator.litestream.socket_path)), timeout=5) as client:
        return {entry["path"] for entry in client.get("http://litestream/list").json().get("databases", [])}


def _pid(replicator: Replicator) -> int:
    process = replicator.litestream.process  # noqa: SLF001 - the test freezes and kills the real child
    assert process is not None and process.returncode is None
    return process.pid


def _database(directory: Path) -> Path:
    import sqlite3  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DATA_DB
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('x')")
    return path


async def _until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_an_unconfirmed_unregister_is_remembered_and_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = _replicator(tmp_path)
        await replicator.start()
        try:
            db = _database(tmp_path / "tenants" / "alpha")
            await replicator.register(db, "alpha", "inc-1")
            assert _listed(replicator) == {str(db)}
            frozen = _pid(replicator)
            freeze(frozen)  # the control socket stops answering
            try:
                with pytest.raises(ReplicationError):
                    await replicator.unregister(db, timeout=1)
                assert not replicator.stopped(db)  # litestream may still write the replica
                assert str(db) in replicator.unregistering
                assert replicator.status()["unconfirmedUnregisters"] == 1
            finally:
                thaw(frozen)
            # It got no answer, so litestream was killed (it may carry the request out later, after others)
            # and restarted empty; the reconcile loop confirms the path is not registered.
            await _until(lambda: replicator.stopped(db))
            assert _pid(replicator) != frozen
            assert _listed(replicator) == set()
        finally:
            await replicator.stop()

    _run(scenario)


def test_a_registration_that_was_not_confirmed_is_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = _replicator(tmp_path)
        await replicator.start()
        try:
            db = _database(tmp_path / "tenants" / "alpha")
            frozen = _pid(replicator)
            freeze(frozen)
            try:
                register = asyncio.ensure_future(replicator.register(db, "alpha", "inc-1"))
                await asyncio.sleep(0.3)
            finally:
                thaw(frozen)
            await register
            await _until(lambda: _listed(replicator) == {str(db)})
        finally:
            await replicator.stop()

    _run(scenario)


def test_a_halt_is_not_undone_by_a_restarting_litestream(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = _replicator(tmp_path)
        await replicator.start()
        try:
            databases = [_database(tmp_path / "tenants" / name) for name in ("alpha", "beta", "gamma")]
            for db in databases:
                await replicator.register(db, db.parent.name, "inc-1")
            first = _pid(replicator)
            os.kill(first, signal.SIGKILL)  # the supervisor restarts it and registers the three again...
            replicator.halt()  # ...unless the node halted replication meanwhile
            await _until(lambda: replicator.litestream.process is not None and replicator.litestream.process.pid != first  # noqa: SLF001
                         and replicator.litestream.process.returncode is None and replicator.litestream.socket_path.exists())  # noqa: SLF001
            await asyncio.sleep(1.5)  # a restart and more than one reconcile pass
            assert _listed(replicator) == set()
            with pytest.raises(ReplicationError):
                await replicator.register(databases[0], "alpha", "inc-1")
            assert replicator.status()["halted"] is True
            replicator.resume()
            await replicator.register(databases[0], "alpha", "inc-1")
            assert _listed(replicator) == {str(databases[0])}
        finally:
            await replicator.stop()

    _run(scenario)


def test_litestream_dies_with_its_node_even_by_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from pbfast.tenant_node.replica import ReplicaStore
        from pbfast.tenant_node.replication import Replicator

        async def main():
            replicator = Replicator(Path({str(tmp_path / "litestream")!r}),
                                    ReplicaStore("unused", None, Path({str(tmp_path / "replica")!r})))
            await replicator.start()
            print(replicator.litestream.process.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        litestream_pid = int(node.stdout.readline())
        os.kill(litestream_pid, 0)  # running
        node.kill()
        node.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{litestream_pid}").exists():
            status = Path(f"/proc/{litestream_pid}/status").read_text() if Path(
                f"/proc/{litestream_pid}/status").exists() else ""
            if "State:\tZ" in status:
                break  # dead, waiting to be reaped by init
            assert time.monotonic() < deadline, "litestream outlived its node"
            time.sleep(0.05)
    finally:
        if node.poll() is None:
            node.kill()


def test_restore_at_a_time_after_the_newest_replica_file_gives_the_latest_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        import sqlite3  # noqa: PLC0415

        replicator = _replicator(tmp_path)
        await replicator.start()
        try:
            db = _database(tmp_path / "tenants" / "alpha")
            await replicator.register(db, "alpha", "inc-1")
            await replicator.sync(db)
            await asyncio.sleep(1.1)  # the listing has whole seconds: files in two different seconds
            with sqlite3.connect(db) as connection:
                connection.execute("INSERT INTO notes VALUES ('y')")
            await replicator.sync(db)
            await replicator.unregister(db)
        finally:
            await replicator.stop()
        later = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await asyncio.sleep(1.1)  # the replica's newest file is now in an earlier second than "later" + 1 s

        def rows(path: Path) -> int:
            with sqlite3.connect(path) as connection:
                return int(connection.execute("SELECT count(*) FROM notes").fetchone()[0])

        assert await replicator.restore("alpha", "inc-1", tmp_path / "later.db", later)
        assert rows(tmp_path / "later.db") == 2
        with pytest.raises(ReplicationError, match="holds no state"):
            await replicator.restore("alpha", "inc-1", tmp_path / "before.db", "2001-01-01T00:00:00Z")
        assert not await replicator.restore("alpha", "inc-never", tmp_path / "none.db")  # no replica at all

    _run(scenario)


def _node(tmp_path: Path) -> TenantNodeApp:
    replicator = Replicator(tmp_path / "litestream", ReplicaStore("unused", None, tmp_path / "replica"))
    node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path, replicator)
    node.lease = Lease()
    node.lease.renew(time.monotonic(), 600.0)
    return node


def _assign(node: TenantNodeApp, epoch: int, **extra: Any) -> None:
    node.apply_assignments({"alpha": {"epoch": epoch, "incarnation": "inc-1", **extra}}, [])


def test_a_release_is_refused_while_litestream_does_not_confirm(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node(tmp_path)
        replicator = node.replicator
        assert replicator is not None
        await replicator.start()
        try:
            _assign(node, 1)
            tenant = await node.open_tenant("alpha")
            tenant.conn.execute("CREATE TABLE notes (body TEXT)")
            frozen = _pid(replicator)
            freeze(frozen)
            try:
                with pytest.raises(ApiError) as refused:
                    await node.release("alpha", 1, budget=6)
                assert refused.value.status == 503
            finally:
                thaw(frozen)
            await _until(lambda: replicator.status()["running"] and _pid(replicator) != frozen
                         and replicator.litestream.socket_path.exists())  # killed (no answer) and restarted
            await _until(lambda: _listed(replicator) is not None)  # answering
            assert node.assignments["alpha"].epoch == 1  # not released: served again, as before
            assert node.released.get("alpha", 0) == 0
            reopened = await node.open_tenant("alpha")
            assert reopened.conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
            await node.release("alpha", 1, budget=20)  # Litestream answers again: released
            assert node.released["alpha"] == 1
            assert not (tmp_path / "tenants" / "alpha").exists()  # shipped, so the copy was deleted
        finally:
            await replicator.stop()

    _run(scenario)


def test_a_tenant_placed_again_while_open_is_closed_and_vetted_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node(tmp_path)
        replicator = node.replicator
        assert replicator is not None
        await replicator.start()
        try:
            _assign(node, 1)
            tenant = await node.open_tenant("alpha")
            tenant.conn.execute("CREATE TABLE notes (body TEXT)")
            marker = read_marker(tmp_path / "tenants" / "alpha")
            assert marker is not None and marker.epoch == 1
            _assign(node, 3)  # moved away and back between two heartbeats
            await _until(lambda: "alpha" not in node.tenants)  # closed (final sync, unregister) at once
            reopened = await node.open_tenant("alpha")
            assert reopened is not tenant
            marker = read_marker(tmp_path / "tenants" / "alpha")
            assert marker is not None and marker.epoch == 3
            assert node.metrics.render(await node.gauges()).count(b'reason="reassigned"') == 1
            assert reopened.conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0  # from the replica
            await node.close_all()
        finally:
            await replicator.stop()

    _run(scenario)


def test_malformed_assignments_change_nothing(tmp_path: Path) -> None:
    node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
    node.apply_assignments({"alpha": {"epoch": 2, "incarnation": "inc-1"}}, [])
    for tenants, deleted in [("alpha", []), ({"alpha": {"epoch": 3}}, "beta"), ({}, ["Bad_Id"])]:
        with pytest.raises(ValueError):
            node.apply_assignments(tenants, deleted)  # type: ignore[arg-type]
        assert node.assignments["alpha"].epoch == 2
        assert node.incarnations["alpha"] == "inc-1"


def test_a_malformed_entry_leaves_only_that_tenant_out(tmp_path: Path) -> None:
    node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
    for bad in [{"epoch": "3"}, {"epoch": 3, "incarnation": "../x"}, {"epoch": True},
                {"epoch": 3, "seed": {"incarnation": "inc-0", "at": "yesterday"}},
                {"epoch": 3, "superuser": {"email": 1}}]:
        node.apply_assignments({"alpha": {"epoch": 2, "incarnation": "inc-1"}, "beta": bad,
                                "Bad_Id": {"epoch": 1}}, [])
        assert node.confirmed == {"alpha": 2}
        assert "beta" not in node.assignments and "Bad_Id" not in node.assignments


def test_leftovers_of_an_interrupted_run_are_removed(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    (tenants / ".deleting-alpha-20261128T120000-abc123" / "sub").mkdir(parents=True)
    (tenants / ".restore-alpha-xyz.db").write_bytes(b"partial")
    (tenants / ".restore-alpha-xyz.db-wal").write_bytes(b"partial")
    (tenants / "beta").mkdir()
    (tenants / "beta" / ".import-abc.db").write_bytes(b"partial")
    (tenants / "beta" / ".pbfast-copy.json.123-abcd.tmp").write_bytes(b"{")
    (tenants / "beta" / DATA_DB).write_bytes(b"kept")
    node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
    assert node.clean_leftovers() == 5
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "tenants", "tenants/beta", f"tenants/beta/{DATA_DB}"]


def test_an_import_is_refused_when_the_tenant_has_a_replica(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = _node(tmp_path / "node")
        replicator = node.replicator
        assert replicator is not None
        await replicator.start()
        try:
            _assign(node, 1)
            await node.open_tenant("alpha")  # a new, empty tenant
            await node.close_all()
            upload = tmp_path / "upload"
            upload.mkdir()
            shutil.copy(tmp_path / "node" / "tenants" / "alpha" / DATA_DB, upload / DATA_DB)
            shutil.rmtree(tmp_path / "node" / "tenants" / "alpha")  # the node lost its disk: only the replica

            async def chunks() -> AsyncIterator[bytes]:
                yield (upload / DATA_DB).read_bytes()

            with pytest.raises(ApiError) as refused:
                await node.import_data("alpha", chunks())
            assert refused.value.status == 409
            assert "replica" in refused.value.message
            assert not (tmp_path / "node" / "tenants" / "alpha" / DATA_DB).exists()
            node.apply_assignments({"beta": {"epoch": 1, "incarnation": "inc-1"}}, [])
            await node.import_data("beta", chunks())  # a tenant without a replica takes the upload
            assert (tmp_path / "node" / "tenants" / "beta" / DATA_DB).exists()
        finally:
            await replicator.stop()

    _run(scenario)


def test_an_open_tenant_the_lru_lost_track_of_is_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
        _, evicted = node.open_tenants.acquire("alpha")  # as a request does
        assert evicted == []
        await node.open_tenant("alpha")
        node.open_tenants.release("alpha")
        await node.open_tenant("beta")  # opened while a release dropped it from the LRU
        node.close_idle(3600)
        await asyncio.sleep(0.05)
        assert set(node.tenants) == {"alpha", "beta"}  # seen untracked once: a request may still be running
        node.close_idle(3600)
        await _until(lambda: set(node.tenants) == {"alpha"})
        assert node.metrics.closes["idle"] == 1

    _run(scenario)


def test_litestream_keeps_what_point_in_time_restores_promise(tmp_path: Path) -> None:
    """Level-0 files are kept the exact hours plus one level-1 interval (a restore to T is exact while
    level-0 files reach back to the start of T's level-1 window); snapshots a day longer than the window."""
    replicator = Replicator(tmp_path / "litestream", ReplicaStore("unused", None, tmp_path / "replica"),
                            exact_restore_hours=2, restore_window_hours=72)
    replicator.litestream.write_config()  # noqa: SLF001
    config = (tmp_path / "litestream" / "litestream.yml").read_text()
    assert "l0-retention: 125m\n" in config
    assert "levels:\n  - interval: 5m\n" in config
    assert "snapshot:\n  interval: 24h\n  retention: 96h\n" in config


def test_heartbeats_report_only_tenants_with_new_usage(tmp_path: Path) -> None:
    from pbfast.tenant_node.membership import NodeMembership  # noqa: PLC0415

    class RecordingControlPlane:  # stands in for the control plane's heartbeat endpoint: the payload is the point
        def __init__(self) -> None:
            self.usage: list[dict[str, Any]] = []

        async def request(self, method: str, path: str, body: Any = None, timeout: float = 0) -> Any:
            if path.endswith("/heartbeat"):
                self.usage.append(body["usage"])
                return {"tenants": {t: {"epoch": 1} for t in ("alpha", "beta")}, "deleted": [],
                        "nodeTimeoutSeconds": 600}
            return {}

    async def scenario() -> None:
        node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
        control_plane = RecordingControlPlane()
        membership = NodeMembership(control_plane, node, "http://node-a", 10)  # type: ignore[arg-type]
        await membership.beat_once()  # learns alpha and beta (their quotas: unlimited)
        await membership.beat_once()
        node.quotas.try_acquire("alpha")
        await membership.beat_once()
        await membership.beat_once()
        assert [sorted(usage) for usage in control_plane.usage] == [[], ["alpha", "beta"], ["alpha"], []]
        assert control_plane.usage[2]["alpha"]["apiRequests"] == 1

    _run(scenario)


def test_only_litestream_checkpoints_a_replicated_tenant_and_the_node_bounds_the_wal_without_it(
        tmp_path: Path) -> None:
    """The tenant's connection never checkpoints (a checkpoint litestream did not make can move the WAL past
    frames it has not read: corrupt restores, issue 11 §4). While litestream does not replicate the tenant
    (here: it is not running), the node checkpoints the WAL itself once it is large."""
    async def scenario() -> None:
        node = _node(tmp_path)  # its litestream is never started: registering fails, the tenant is served
        _assign(node, 1)
        tenant = await node.open_tenant("alpha")
        assert tenant.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        tenant.conn.execute("CREATE TABLE notes (body TEXT)")
        wal = tmp_path / "tenants" / "alpha" / (DATA_DB + "-wal")

        def write_megabytes(megabytes: int) -> None:
            for _ in range(megabytes * 4):
                tenant.conn.execute("INSERT INTO notes VALUES (randomblob(256 * 1024))")

        write_megabytes(6)
        first = wal.stat().st_size
        assert first > 6 << 20  # nothing checkpointed it
        node.close_idle(300)  # the periodic housekeeping checkpoints what litestream does not watch
        await _until(lambda: not node.checkpoints.running)
        write_megabytes(6)  # reuses the checkpointed WAL instead of growing it
        assert wal.stat().st_size < first + (1 << 20)
        await node.close_all()

    _run(scenario)
