"""Scheduled backups (``backups.cron``, ``backups.cronMaxKeep``) on a real tenant node served over HTTP
(granian on loopback, as ``pbfast serve`` runs it), with the clock given only to the scheduler's ``tick``:
the backup is a real one (listed by ``GET /api/backups``, downloadable, restorable), only the automatic ones
are pruned, the schedule survives the scheduler's restart and runs for a closed tenant, and only the node the
tenant is assigned to runs it."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from helpers import free_port
from pbfast.pocketbase.apis.backups import NOT_OURS_ANY_MORE
from pbfast.pocketbase.auth import hash_password
from pbfast.pocketbase.egress import ALLOW_LOOPBACK_ENV
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.backup_cron import SCHEDULE_FILE, BackupCron, BackupSchedule
from pbfast.tenant_node.backups import SCHEDULE_HINT, ScheduleHints, backup_location
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.replica import ReplicaStore
from pbfast.tenant_node.replication import Replicator

TOKEN = "cluster-token"
EMAIL, PASSWORD = "admin@example.com", "a-long-password"


class Node:
    def __init__(self, app: TenantNodeApp, url: str, client: httpx.AsyncClient) -> None:
        self.app, self.url, self.client = app, url, client
        self.auth: dict[str, str] = {}

    async def sign_in(self, tenant: str) -> None:
        signed_in = await self.ok(tenant, "POST", "/api/collections/_superusers/auth-with-password",
                                  json={"identity": EMAIL, "password": PASSWORD})
        self.auth = {"authorization": signed_in.json()["token"]}

    async def call(self, tenant: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        epoch = str(self.app.assignments[tenant].epoch)
        headers = {"x-pbfast-cluster-token": TOKEN, "x-pbfast-epoch": epoch, **self.auth, **kwargs.pop("headers", {})}
        return await self.client.request(method, f"{self.url}/t/{tenant}{path}", headers=headers, timeout=30,
                                         **kwargs)

    async def ok(self, tenant: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.call(tenant, method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response

    async def backups(self, tenant: str) -> list[str]:
        return sorted(item["key"] for item in (await self.ok(tenant, "GET", "/api/backups")).json())


@asynccontextmanager
async def running_node(data_dir: Path, tenants: tuple[str, ...], objects: Path | None = None,
                       replicator: Replicator | None = None, node_id: str = "node-a") -> AsyncIterator[Node]:
    """A node serving ``tenants`` (with a superuser each) over HTTP, its object store under ``objects``."""
    app = TenantNodeApp(node_id, 10, TOKEN, data_dir, replicator)
    app.api.backups.location = backup_location("unused", None, objects or data_dir)  # the local object store
    app.lease = Lease()
    app.lease.renew(time.monotonic(), 600.0)
    app.apply_assignments({tenant: {"epoch": 1, "incarnation": "inc-1"} for tenant in tenants}, [])
    if replicator is not None:
        await replicator.start()
    for tenant in tenants:
        await app.upsert_tenant_superuser(tenant, EMAIL, hash_password(PASSWORD, cost=4))
    port = free_port()
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                    websockets=False, log_enabled=False)
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient() as client:
            node = Node(app, f"http://127.0.0.1:{port}", client)
            for _ in range(200):
                try:
                    await client.get(f"{node.url}/api/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            if tenants:
                await node.sign_in(tenants[0])
            yield node
    finally:
        server.stop()  # type: ignore[no-untyped-call]
        await asyncio.wait_for(serving, 10)
        await app.close_all()
        app.db.stop()
        if replicator is not None:
            await replicator.stop()


def minute(schedule: BackupSchedule, tenant: str) -> datetime:
    return datetime.fromtimestamp(schedule.entries[tenant].next_due, UTC)


def test_scheduled_backups_are_made_pruned_kept_across_restarts_and_restorable(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_node(tmp_path, ("alpha",)) as node:
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            app = node.app
            cron = BackupCron(schedule, app.api.backups, app.pool)
            await node.ok("alpha", "POST", "/api/collections", json={
                "name": "notes", "type": "base", "fields": [{"name": "text", "type": "text"}],
                "listRule": "", "createRule": ""})
            kept = (await node.ok("alpha", "POST", "/api/collections/notes/records", json={"text": "kept"})).json()
            await node.ok("alpha", "POST", "/api/backups", json={"name": "manual.zip"})
            assert schedule.entries == {}
            await node.ok("alpha", "PATCH", "/api/settings",
                          json={"meta": {"appName": "My App"}, "backups": {"cron": "0 3 * * *", "cronMaxKeep": 2}})
            first = minute(schedule, "alpha")  # learned from the save: the next 03:00 UTC
            assert (first.hour, first.minute) == (3, 0) and first > datetime.now(UTC)

            assert await cron.tick(first - timedelta(minutes=1)) == []  # not due yet
            runs = await cron.tick(first)
            assert [(run.tenant_id, run.backup and run.backup.error) for run in runs] == [("alpha", None)]
            first_name = f"@auto_pb_backup_my_app_{first:%Y%m%d}030000.zip"
            assert runs[0].backup is not None and runs[0].backup.name == first_name
            assert minute(schedule, "alpha") == first + timedelta(days=1)
            assert await cron.tick(first + timedelta(seconds=30)) == []  # once per due minute
            assert await node.backups("alpha") == [first_name, "manual.zip"]

            # Downloadable with a superuser's file token, and a whole backup.
            file_token = (await node.ok("alpha", "POST", "/api/files/token")).json()["token"]
            download = await node.call("alpha", "GET", f"/api/backups/{first_name}?token={file_token}")
            assert download.status_code == 200, download.text
            assert "data.db" in zipfile.ZipFile(io.BytesIO(download.content)).namelist()

            # Restorable: a record written after it is gone.
            later = (await node.ok("alpha", "POST", "/api/collections/notes/records", json={"text": "later"})).json()
            await node.ok("alpha", "POST", f"/api/backups/{first_name}/restore")
            assert (await node.call("alpha", "GET", f"/api/collections/notes/records/{later['id']}")).status_code == 404
            assert (await node.call("alpha", "GET", f"/api/collections/notes/records/{kept['id']}")).status_code == 200

            # Two more days: three automatic backups, the oldest pruned; the manual one stays.
            second, third = first + timedelta(days=1), first + timedelta(days=2)
            await cron.tick(second)
            runs = await cron.tick(third)
            assert runs[0].backup is not None and runs[0].backup.pruned == (first_name,)
            second_name, third_name = (f"@auto_pb_backup_my_app_{day:%Y%m%d}030000.zip" for day in (second, third))
            assert await node.backups("alpha") == [second_name, third_name, "manual.zip"]

            # The node restarts its scheduler while the tenant is closed: the schedule is still there, and
            # the due backup opens the tenant.
            await app.pool.close("alpha", "idle")
            assert "alpha" not in app.tenants
            schedule.close()
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            assert minute(schedule, "alpha") == third + timedelta(days=1)
            cron = BackupCron(schedule, app.api.backups, app.pool)
            fourth = third + timedelta(days=1, hours=5)  # missed while down: made once, at the next tick
            runs = await cron.tick(fourth)
            assert [run.backup and run.backup.error for run in runs] == [None]
            assert minute(schedule, "alpha") == third + timedelta(days=2)
            fourth_name = f"@auto_pb_backup_my_app_{fourth:%Y%m%d%H%M}00.zip"
            assert await node.backups("alpha") == [third_name, fourth_name, "manual.zip"]

            # Turned off: forgotten.
            await node.ok("alpha", "PATCH", "/api/settings", json={"backups": {"cron": ""}})
            assert schedule.entries == {}
            schedule.close()

    asyncio.run(scenario())


def test_only_the_node_the_tenant_is_assigned_to_runs_its_schedule(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_node(tmp_path, ("alpha", "beta")) as node:
            app = node.app
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            cron = BackupCron(schedule, app.api.backups, app.pool)
            for tenant in ("alpha", "beta"):
                signed_in = await node.ok(tenant, "POST", "/api/collections/_superusers/auth-with-password",
                                          json={"identity": EMAIL, "password": PASSWORD})
                await node.ok(tenant, "PATCH", "/api/settings", json={"backups": {"cron": "*/5 * * * *"}},
                              headers={"authorization": signed_in.json()["token"]})
            due = max(minute(schedule, "alpha"), minute(schedule, "beta"))
            app.apply_assignments({"alpha": {"epoch": 1, "incarnation": "inc-1"}}, [])  # beta moved away
            runs = await cron.tick(due)
            made = {run.tenant_id: (run.backup is not None, run.skipped) for run in runs}
            assert made == {"alpha": (True, None), "beta": (False, "not assigned to this node")}
            assert set(schedule.entries) == {"alpha"}

            app.fence()  # no valid lease: nothing runs, and nothing is forgotten
            assert await cron.tick(due + timedelta(minutes=5)) == []
            assert set(schedule.entries) == {"alpha"}
            schedule.close()

    asyncio.run(scenario())


class Hold:
    """A job that holds a tenant's database turn until released."""

    def __init__(self) -> None:
        self.running, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.running.set()
        self.release.wait(30)


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def test_a_backup_of_a_tenant_placed_elsewhere_while_it_waited_writes_and_deletes_nothing(tmp_path: Path) -> None:
    """A node whose tenant is placed anew while its scheduled backup waits for the tenant's turn (a fence, a
    move) neither uploads a backup of its copy nor prunes the automatic backups the new owner makes."""
    async def scenario() -> None:
        async with running_node(tmp_path, ("alpha",)) as node:
            app = node.app
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            cron = BackupCron(schedule, app.api.backups, app.pool)
            await node.ok("alpha", "PATCH", "/api/settings", json={"backups": {"cron": "0 3 * * *", "cronMaxKeep": 1}})
            first = minute(schedule, "alpha")
            assert [run.backup and run.backup.error for run in await cron.tick(first)] == [None]
            before = await node.backups("alpha")
            assert len(before) == 1

            # The tick first reads the open tenants' settings again (a job in the tenant's turn), then queues
            # the backup: a second hold queued behind that read keeps the backup waiting for its turn.
            first_hold, second_hold = Hold(), Hold()
            held = asyncio.ensure_future(app.db.run("alpha", first_hold, bounded=False))
            await asyncio.to_thread(first_hold.running.wait, 30)
            ticking = asyncio.ensure_future(cron.tick(first + timedelta(days=1)))
            await until(lambda: app.db.queued("alpha") == 1)  # the settings read
            held_again = asyncio.ensure_future(app.db.run("alpha", second_hold, bounded=False))
            await until(lambda: app.db.queued("alpha") == 2)
            first_hold.release.set()
            await asyncio.to_thread(second_hold.running.wait, 30)
            await until(lambda: app.db.queued("alpha") == 1)  # the backup, behind the second hold
            app.apply_assignments({"alpha": {"epoch": 2, "incarnation": "inc-1"}}, [])  # placed anew meanwhile
            second_hold.release.set()
            await asyncio.gather(held, held_again)
            runs = await ticking
            assert [(run.backup.error, run.backup.pruned) for run in runs if run.backup] == [(NOT_OURS_ANY_MORE, ())]
            assert await node.backups("alpha") == before
            schedule.close()

    asyncio.run(scenario())


def test_a_moved_tenant_takes_its_schedule_to_its_new_node(tmp_path: Path) -> None:
    """The schedule goes with the tenant: its new node learns it before opening it (from what the old node kept
    beside its backups), makes the due backup from the tenant's replica, and the old node forgets it."""
    objects = tmp_path / "objects"  # the object store both nodes share (replicas and backups)

    def replicator(node: str) -> Replicator:
        return Replicator(tmp_path / node / "litestream", ReplicaStore("unused", None, objects / "replica"),
                          ship_interval=0)

    async def scenario() -> None:
        location = backup_location("unused", None, objects)
        async with running_node(tmp_path / "a", ("alpha",), objects, replicator("a"), "node-a") as old:
            old_schedule = BackupSchedule(tmp_path / "a" / SCHEDULE_FILE)
            old_cron = BackupCron(old_schedule, old.app.api.backups, old.app.pool, ScheduleHints(location))
            await old.ok("alpha", "PATCH", "/api/settings",
                         json={"meta": {"appName": "Moved"}, "backups": {"cron": "0 3 * * *", "cronMaxKeep": 3}})
            hint = objects / "replica" / "tenants" / "alpha" / "inc-1" / SCHEDULE_HINT
            assert hint.read_text() == "0 3 * * *"
            await old.app.release("alpha", 1, budget=20)
            old.app.apply_assignments({}, [])

            async with running_node(tmp_path / "b", (), objects, replicator("b"), "node-b") as new:
                new.app.apply_assignments({"alpha": {"epoch": 2, "incarnation": "inc-1"}}, [])
                schedule = BackupSchedule(tmp_path / "b" / SCHEDULE_FILE)
                cron = BackupCron(schedule, new.app.api.backups, new.app.pool, ScheduleHints(location))
                assert await cron.tick(datetime.now(UTC)) == []  # learned, nothing due yet
                assert "alpha" not in new.app.tenants  # without opening it
                due = minute(schedule, "alpha")
                assert (due.hour, due.minute) == (3, 0)

                moved = await old_cron.tick(due)
                assert [(run.tenant_id, run.skipped) for run in moved] == [("alpha", "not assigned to this node")]
                assert old_schedule.entries == {}
                runs = await cron.tick(due)
                assert [(run.tenant_id, run.backup and run.backup.error) for run in runs] == [("alpha", None)]
                await new.sign_in("alpha")  # the tenant's data came from its replica
                assert f"@auto_pb_backup_moved_{due:%Y%m%d}030000.zip" in await new.backups("alpha")

                await new.ok("alpha", "PATCH", "/api/settings", json={"backups": {"cron": ""}})
                assert not hint.exists()  # off: a later move finds no schedule
                schedule.close()
            old_schedule.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_settings_saved_by_another_process_are_learned_at_the_next_tick(tmp_path: Path) -> None:
    """With worker processes a settings save is made on a worker's connection: the node's scheduler sees it at
    its next tick (it reads the open tenants' settings again), not only when the tenant closes."""
    async def scenario() -> None:
        async with running_node(tmp_path, ("alpha",)) as node:
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            cron = BackupCron(schedule, node.app.api.backups, node.app.pool)
            await node.ok("alpha", "GET", "/api/settings")  # open
            with sqlite3.connect(tmp_path / "tenants" / "alpha" / "data.db", timeout=10) as other:  # a worker's
                stored = json.loads(other.execute("SELECT value FROM _params WHERE id = 'settings'").fetchone()[0])
                stored["backups"] = {**stored["backups"], "cron": "15 */2 * * *", "cronMaxKeep": 1}
                other.execute("UPDATE _params SET value = ? WHERE id = 'settings'", (json.dumps(stored),))
            assert schedule.entries == {}
            assert await cron.tick(datetime.now(UTC) - timedelta(minutes=1)) == []
            assert schedule.entries["alpha"].cron == "15 */2 * * *"
            schedule.close()

    asyncio.run(scenario())


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def test_a_failed_scheduled_backup_is_mailed_to_the_superusers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As PocketBase: every superuser gets an "Autobackup failure" system alert through the tenant's SMTP."""
    monkeypatch.setenv(ALLOW_LOOPBACK_ENV, "1")  # the operator's switch: the test's SMTP server is on loopback
    inbox, smtp_port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()

    async def scenario() -> None:
        async with running_node(tmp_path, ("alpha",)) as node:
            schedule = BackupSchedule(tmp_path / SCHEDULE_FILE)
            cron = BackupCron(schedule, node.app.api.backups, node.app.pool)
            await node.ok("alpha", "PATCH", "/api/settings", json={
                "meta": {"appName": "Shop", "senderAddress": "robot@example.com"},
                "smtp": {"enabled": True, "host": "127.0.0.1", "port": smtp_port},
                "backups": {"cron": "@daily", "cronMaxKeep": 1, "s3": {  # a bucket nobody answers for
                    "enabled": True, "endpoint": f"http://127.0.0.1:{free_port()}", "bucket": "b", "region": "r",
                    "accessKey": "k", "secret": "s", "forcePathStyle": True}}})
            runs = await cron.tick(minute(schedule, "alpha"))
            backup = runs[0].backup
            assert backup is not None and backup.error and backup.alerted == (EMAIL,)
            deadline = time.monotonic() + 20
            while not inbox.messages:
                assert time.monotonic() < deadline, "no alert mail"
                await asyncio.sleep(0.05)
            mail = inbox.messages[0]
            assert mail["Subject"] == "[Shop system alert] Autobackup failure"
            assert mail["To"] == EMAIL and "robot@example.com" in mail["From"]
            html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
            assert "Shop system alert occurred:" in html
            assert "Failed to create/upload automated backup. Raw error:" in html
            schedule.close()

    try:
        asyncio.run(scenario())
    finally:
        controller.stop()


def test_an_unreadable_schedule_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    path.write_bytes(b"not a database at all" * 100)
    schedule = BackupSchedule(path)
    assert schedule.entries == {}
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert schedule.learn("alpha", "0 3 * * *", now)
    schedule.close()
    assert [p.read_bytes()[:21] for p in tmp_path.glob(f"{SCHEDULE_FILE}.unreadable-*")] == [b"not a database at all"]
    again = BackupSchedule(path)  # the new file is the one read next time
    assert again.entries["alpha"].cron == "0 3 * * *"
    again.close()


def test_a_tenant_dropped_without_a_release_and_placed_back_gets_its_schedule_back(tmp_path: Path) -> None:
    """Dropped (no longer assigned, no release: its local copy stays) when its backup was due, the tenant's entry
    is forgotten; placed back and never opened, its schedule is read again from beside its backups."""
    objects = tmp_path / "objects"

    async def scenario() -> None:
        location = backup_location("unused", None, objects)
        async with running_node(tmp_path / "a", ("alpha",), objects) as node:
            schedule = BackupSchedule(tmp_path / "a" / SCHEDULE_FILE)
            cron = BackupCron(schedule, node.app.api.backups, node.app.pool, ScheduleHints(location))
            await node.ok("alpha", "PATCH", "/api/settings", json={"backups": {"cron": "0 3 * * *"}})
            due = minute(schedule, "alpha")
            node.app.apply_assignments({}, [])  # placed elsewhere: dropped here, its copy kept
            await until(lambda: "alpha" not in node.app.tenants)
            skipped = await cron.tick(due)
            assert [(run.tenant_id, run.skipped) for run in skipped] == [("alpha", "not assigned to this node")]
            assert schedule.entries == {}
            assert (tmp_path / "a" / "tenants" / "alpha").exists()

            node.app.apply_assignments({"alpha": {"epoch": 2, "incarnation": "inc-1"}}, [])  # and back
            assert await cron.tick(due + timedelta(minutes=1)) == []  # learned, without opening it
            assert "alpha" not in node.app.tenants
            assert minute(schedule, "alpha") == due + timedelta(days=1)
            runs = await cron.tick(due + timedelta(days=1))
            assert [(run.tenant_id, run.backup and run.backup.error) for run in runs] == [("alpha", None)]
            schedule.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))
