"""Scheduled backups (PocketBase's ``backups.cron`` and ``backups.cronMaxKeep`` settings) for the tenants of a
node.

PocketBase keeps one cron job per app and ticks it every minute. A node holds thousands of tenants, most of
them closed, so it keeps neither a timer per tenant nor opens them to look: :class:`BackupSchedule` is a small
table (tenant -> its cron expression and next due minute) that the node learns whenever it reads a tenant's
settings (when it opens the tenant, when the settings API saves them, when it closes the tenant, and once a
minute for the open ones, which is when settings saved by a worker process are seen), kept in ``<data-dir>/backup-schedule.db`` so that a restart
loses nothing and a closed tenant's backup is still made. Once a minute :meth:`BackupCron.tick` looks for due
entries (a dictionary scan, no tenant is touched), and for each one of this node's tenants opens it (as any
request would: restored from its replica when it has no local copy), reads its settings again (they are the
truth: a cron changed meanwhile is learned, not run) and makes the backup on the tenant's database thread.

Only the node holding the tenant's assignment under a valid lease runs it: an entry of a tenant no longer
assigned here is forgotten (it moved or was deleted). The schedule moves with the tenant: a changed one is
also kept beside the tenant's backups in the object store (:class:`~pbfast.tenant_node.backups.ScheduleHints`),
and a node the tenant is placed on without a local copy or an entry reads it at its next tick, so the tenant's
backups go on even if it is never opened there. While the node has no valid lease (fenced, or not yet joined)
due entries wait, and run at the first tick once it has one. A due minute missed while the node was down
runs once at the next tick (PocketBase's ticker would skip it).

Thread-safety: :class:`BackupSchedule` may be used from any thread; :class:`BackupCron` on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.backups import BACKUP_THREADS, Backups, ScheduledBackup, ScheduledPlan, alert_superusers
from pbfast.pocketbase.backup_store import StoreError
from pbfast.pocketbase.cron import CronError, parse_cron
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.backups import ScheduleHints
from pbfast.tenant_node.pool import TenantPool
from pbfast.tenant_node.slots import Slots

__all__ = ["SCHEDULE_FILE", "BackupCron", "BackupSchedule", "ScheduleEntry", "ScheduledRun"]

log = component_logger("BackupCron")

SCHEDULE_FILE: Final = "backup-schedule.db"
HINT_READS_PER_TICK: Final = 200  # object store reads for tenants newly placed here, per minute
MAX_FORGOTTEN: Final = 10_000  # tenants remembered as "schedule forgotten, local copy kept" (oldest go first)
REREADS_AT_ONCE: Final = 64  # open tenants whose settings are read again concurrently


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    cron: str
    next_due: int  # Unix seconds of a whole UTC minute


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """One due entry handled by a tick: the backup made (``backup``), or why none was (``skipped``)."""

    tenant_id: str
    backup: ScheduledBackup | None = None
    skipped: str | None = None


class BackupSchedule:
    """Tenant -> cron expression and next due minute, in memory and in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._db, self._entries = _open_schedule(path)
        except sqlite3.DatabaseError as err:
            # The node must start: the file goes aside (for the operator), and the schedules are learned
            # again as tenants are opened, their settings saved, or their hints read.
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            log.error("the backup schedule %s cannot be read (%s); moved to %s, starting a new one", path, err,
                      aside.name)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
            self._db, self._entries = _open_schedule(path)

    @property
    def entries(self) -> dict[str, ScheduleEntry]:
        with self._lock:
            return dict(self._entries)

    def get(self, tenant_id: str) -> ScheduleEntry | None:
        """The tenant's entry (no copy of the table: a tick asks once per due tenant, thousands at midnight)."""
        with self._lock:
            return self._entries.get(tenant_id)

    def learn(self, tenant_id: str, cron: str, now: datetime) -> bool:
        """The tenant's settings say ``cron`` ("" for none). The same expression keeps its due minute; a new
        one is due at its first minute after ``now``. Whether the schedule changed."""
        with self._lock:
            known = self._entries.get(tenant_id)
            if known is not None and known.cron == cron:
                return False
            due = _next_due(cron, now)
            if due is None:
                if known is None:
                    return False
                self._delete(tenant_id)
                return True
            self._put(tenant_id, ScheduleEntry(cron, due))
            return True

    def forget(self, tenant_id: str) -> None:
        with self._lock:
            if tenant_id in self._entries:
                self._delete(tenant_id)

    def due(self, now: datetime) -> list[str]:
        """The tenants due at or before ``now``, the longest waiting first."""
        moment = now.timestamp()
        with self._lock:
            waiting = [(entry.next_due, tenant_id) for tenant_id, entry in self._entries.items()
                       if entry.next_due <= moment]
        return [tenant_id for _, tenant_id in sorted(waiting)]

    def advance(self, tenant_id: str, now: datetime) -> None:
        """The entry was handled at ``now``: due next at its first minute after ``now``."""
        with self._lock:
            known = self._entries.get(tenant_id)
            if known is None:
                return
            due = _next_due(known.cron, now)
            if due is None:
                self._delete(tenant_id)
            else:
                self._put(tenant_id, ScheduleEntry(known.cron, due))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # A failed write (a full disk) keeps the change in memory: the schedule goes on, and what the file lacks
    # is learned again after a restart.
    def _put(self, tenant_id: str, entry: ScheduleEntry) -> None:
        self._entries[tenant_id] = entry
        try:
            self._db.execute("INSERT OR REPLACE INTO scheduled (tenant_id, cron, next_due) VALUES (?, ?, ?)",
                             (tenant_id, entry.cron, entry.next_due))
        except sqlite3.Error as err:
            log.error("tenant %s: its backup schedule could not be saved: %s", tenant_id, err)

    def _delete(self, tenant_id: str) -> None:
        del self._entries[tenant_id]
        try:
            self._db.execute("DELETE FROM scheduled WHERE tenant_id = ?", (tenant_id,))
        except sqlite3.Error as err:
            log.error("tenant %s: its backup schedule could not be removed from the file: %s", tenant_id, err)


def _open_schedule(path: Path) -> tuple[sqlite3.Connection, dict[str, ScheduleEntry]]:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a crash may lose the last change: re-learned at open
        db.execute("CREATE TABLE IF NOT EXISTS scheduled (tenant_id TEXT PRIMARY KEY, cron TEXT NOT NULL, "
                   "next_due INTEGER NOT NULL) WITHOUT ROWID")
        entries = {tenant_id: ScheduleEntry(str(cron), int(next_due)) for tenant_id, cron, next_due
                   in db.execute("SELECT tenant_id, cron, next_due FROM scheduled")}
    except BaseException:
        db.close()
        raise
    return db, entries


def _next_due(cron: str, now: datetime) -> int | None:
    if not cron:
        return None
    try:
        due = parse_cron(cron).next_due(now)
    except CronError:  # the settings API refuses these: only a database changed by hand has one
        return None
    return None if due is None else int(due.timestamp())


class BackupCron:
    """Runs this node's due scheduled backups: :meth:`tick` once a minute (:meth:`run`)."""

    def __init__(self, schedule: BackupSchedule, backups: Backups, pool: TenantPool,
                 hints: ScheduleHints | None = None) -> None:
        self.schedule = schedule
        self.backups = backups
        self.pool = pool
        self.db: DbScheduler = pool.db
        self.ownership: Ownership = pool.ownership
        self.slots: Slots = pool.slots
        self.hints = hints  # the schedules kept beside the tenants' backups, for the nodes they move to
        self._looked_up: dict[str, int] = {}  # tenant -> the epoch of its placement whose hint was read
        # Tenants whose entry was forgotten here because they were no longer assigned, while their local copy
        # may stay (dropped without a release): placed back, their schedule is read from the hint again, as
        # their copy no longer says that the node learned it (insertion order: the oldest are let go first).
        self._forgotten: dict[str, None] = {}
        # Settings saved by this process's API are learned at once; the open and the close of a tenant are
        # told by the pool (on the tenant's database thread).
        reference = weakref.ref(self)
        app_settings.on_saved(lambda tenant, saved: _learn_saved(reference, tenant, saved))
        pool.on_settings_read = self.learn

    def learn(self, tenant: Tenant) -> None:
        """Learn the tenant's cron from its settings (its database thread)."""
        self.learn_settings(tenant, app_settings.load_settings(tenant.conn))

    def learn_settings(self, tenant: Tenant, settings: app_settings.Settings) -> None:
        """Learn the tenant's cron from ``settings`` (its database thread); a change is also kept beside its
        backups for the node it may move to."""
        cron = settings.backups.cron
        try:
            changed = self.schedule.learn(tenant.id, cron, datetime.now(UTC))
        except sqlite3.Error as err:  # a full disk: learned again at the tenant's next open or close
            log.error("tenant %s: its backup schedule could not be kept: %s", tenant.id, err)
            return
        if changed and self.hints is not None:
            try:
                self.hints.write(tenant, cron)
            except StoreError as err:  # written again with its next change; known here meanwhile
                log.warning("tenant %s: its backup schedule could not be kept in the object store: %s",
                            tenant.id, err)

    async def run(self) -> None:
        """Tick at the start of every minute (PocketBase's ticker does too)."""
        while True:
            await asyncio.sleep(60.0 - time.time() % 60.0 + 0.01)  # just past the minute, never just before
            try:
                await self.tick(datetime.now(UTC))
            except Exception:  # noqa: BLE001 - the next minute's tick goes on
                log.exception("scheduled backups failed")

    async def tick(self, now: datetime) -> list[ScheduledRun]:
        """Make the backups due at ``now``, one tenant after the other (thousands may be due at midnight:
        in turn they take one database thread and the store's bandwidth, not all of them)."""
        await self._look_up_placements(now)
        await self._reread_open_tenants()
        runs = []
        for tenant_id in self.schedule.due(now):
            run = await self._run_due(tenant_id, now)
            if run is not None:
                runs.append(run)
        return runs

    async def _look_up_placements(self, now: datetime) -> None:
        """Learn the schedules of tenants placed here that the node has not seen (no local copy, no entry: moved
        here, or restored onto a new disk; or placed back after their entry was forgotten here) from what their previous node kept beside their backups: one read
        per placement, a bounded number per tick (a new node may get thousands at once)."""
        if self.hints is None or not self._lease_valid():
            return
        entries = self.schedule.entries
        assigned = {slot.tenant_id: slot for slot in self.slots if slot.assignment is not None}
        for gone in self._looked_up.keys() - assigned.keys():  # one entry per tenant placed here now: bounded
            del self._looked_up[gone]
        placed = [(tenant_id, slot.assignment.epoch, slot.current_incarnation) for tenant_id, slot in assigned.items()
                  if slot.assignment is not None and self._looked_up.get(tenant_id) != slot.assignment.epoch]
        looked_up = 0
        for tenant_id, epoch, incarnation in placed:
            if tenant_id in entries or (tenant_id not in self._forgotten
                                        and self.pool.copies.directory(tenant_id).exists()):
                self._looked_up[tenant_id] = epoch  # learned from its settings when it was opened here
                continue
            if looked_up >= HINT_READS_PER_TICK:
                break
            looked_up += 1
            try:
                cron = await asyncio.to_thread(self.hints.read, tenant_id, incarnation)
            except StoreError as err:  # tried again at the next tick
                log.warning("tenant %s: its backup schedule could not be read from the object store: %s",
                            tenant_id, err)
                continue
            self._looked_up[tenant_id] = epoch
            self._forgotten.pop(tenant_id, None)
            if cron and self.schedule.learn(tenant_id, cron, now):
                log.info("tenant %s: backup schedule %r learned from its previous node", tenant_id, cron)

    async def _reread_open_tenants(self) -> None:
        """Read the settings of the open tenants again: with worker processes a save is made in a worker, whose
        connection is not this process's (a row read per open tenant a minute, in each tenant's turn)."""
        tenants = list(self.slots.open_tenants().values())
        for start in range(0, len(tenants), REREADS_AT_ONCE):
            batch = tenants[start:start + REREADS_AT_ONCE]
            outcomes = await asyncio.gather(*(self.db.run(tenant.id, functools.partial(self._reread, tenant),
                                                          bounded=False) for tenant in batch),
                                            return_exceptions=True)
            for tenant, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                    log.warning("tenant %s: its settings could not be read again: %r", tenant.id, outcome)

    def _reread(self, tenant: Tenant) -> None:
        if not tenant.closed:
            self.learn(tenant)

    def _lease_valid(self) -> bool:
        return self.ownership.lease is None or not self.ownership.lease_lost()

    def _ours(self, tenant_id: str) -> bool | None:
        """Whether the node may back the tenant up now; None while it cannot tell (no valid lease)."""
        if self.ownership.lease is None:
            return True  # a node without a control plane serves every tenant it has
        if not self._lease_valid():
            return None
        slot = self.slots.get(tenant_id)
        return slot is not None and slot.assignment is not None

    async def _run_due(self, tenant_id: str, now: datetime) -> ScheduledRun | None:
        ours = self._ours(tenant_id)
        if ours is None:
            return None  # stays due: run once the lease is back (or forgotten once it is known elsewhere)
        if not ours:
            self.schedule.forget(tenant_id)
            self._forgotten[tenant_id] = None
            if len(self._forgotten) > MAX_FORGOTTEN:
                self._forgotten.pop(next(iter(self._forgotten)), None)
            log.info("tenant %s: not assigned here any more; its backup schedule is left to its node", tenant_id)
            return ScheduledRun(tenant_id, skipped="not assigned to this node")
        expected = self.schedule.get(tenant_id)
        self.schedule.advance(tenant_id, now)  # a failure is not retried every minute: PocketBase's neither
        slot = self.slots.get(tenant_id)
        assignment = slot.assignment if slot is not None else None

        def still_ours() -> bool:  # asked on the backup's thread: reads of the loop's state, no change
            return self._ours(tenant_id) is True and (slot is None or slot.assignment == assignment)

        try:
            async with self.pool.using(tenant_id) as tenant:
                plan = await self.db.run(tenant.id, lambda: self._plan(tenant, now, expected), bounded=False)
                if isinstance(plan, str):
                    outcome: ScheduledBackup | str = plan
                else:  # made and uploaded off the tenant's turn: its requests go on meanwhile
                    outcome = await asyncio.get_running_loop().run_in_executor(
                        BACKUP_THREADS, self.backups.make_scheduled, tenant, plan, still_ours)
                    failure = outcome.failure
                    if failure is not None:  # PocketBase's "Autobackup failure" mail (reads the superusers)
                        settings = plan.settings
                        alerted = await self.db.run(tenant.id, lambda: alert_superusers(tenant, settings, failure),
                                                    bounded=False)
                        outcome = dataclasses.replace(outcome, alerted=alerted)
        except ApiError as err:  # not served here after all (moved meanwhile, fenced, restoring)
            log.warning("tenant %s: scheduled backup not made: %s", tenant_id, err.message)
            return ScheduledRun(tenant_id, skipped=err.message)
        except Exception as err:  # noqa: BLE001 - the other tenants' backups go on
            log.exception("tenant %s: scheduled backup failed", tenant_id)
            return ScheduledRun(tenant_id, skipped=repr(err))
        if isinstance(outcome, str):
            return ScheduledRun(tenant_id, skipped=outcome)
        if outcome.error is not None:
            log.error("tenant %s: scheduled backup %s failed: %s", tenant_id, outcome.name, outcome.error)
        else:
            log.info("tenant %s: scheduled backup %s made%s", tenant_id, outcome.name,
                     f", {len(outcome.pruned)} old ones deleted" if outcome.pruned else "")
        return ScheduledRun(tenant_id, backup=outcome)

    def _plan(self, tenant: Tenant, now: datetime, expected: ScheduleEntry | None) -> ScheduledPlan | str:
        """On the tenant's database thread: the backup to make, unless its settings no longer ask for this one."""
        settings = app_settings.load_settings(tenant.conn)
        if expected is None or settings.backups.cron != expected.cron:
            self.learn_settings(tenant, settings)
            return "its settings changed the schedule"
        return self.backups.plan_scheduled(tenant, now)


def _learn_saved(reference: Callable[[], BackupCron | None], tenant: Tenant, saved: app_settings.Settings) -> None:
    cron = reference()
    slot = None if cron is None else cron.slots.get(tenant.id)
    if cron is not None and slot is not None and slot.tenant is tenant:  # a tenant this node serves
        cron.learn_settings(tenant, saved)
