"""Continuous replication of open tenants with Litestream 0.5, supervised as a child process.

One ``litestream replicate`` process per node serves a control socket (HTTP over a unix socket). A tenant
is *registered* when the node opens it and *unregistered* after a final waited sync when the node closes
it, so replication costs stay proportional to ``--max-tenants``, not to the tenants on disk. A closed
tenant has been shipped whole and needs no watcher.

Where replicas live, what they keep and how they are restored: :mod:`pbfast.tenant_node.replica`.

The child process and its control socket: :mod:`pbfast.tenant_node.litestream_process`. Shipping sooner than
Litestream's own 1 s intervals: :mod:`pbfast.tenant_node.shipper`.

Checkpoints: only litestream checkpoints a database it replicates (the node's connections run with
``wal_autocheckpoint=0``, see :data:`NO_AUTOCHECKPOINT`). Litestream keeps a read transaction open so that no
one else can move the WAL past what it has read, but a ``/sync`` that initialises the database or
checkpoints it takes that transaction again under the request's context, which ends with the request: the
read lock is gone until litestream's own loop checkpoints next (Litestream 0.5.9-0.5.17, every version with
``/sync``). An application checkpoint in that window copies unread frames into the database and restarts
the WAL over them; litestream then ships the next transactions without them, and every restore from there
on fails ``PRAGMA integrity_check`` (measured: ``benchmarks/RESULTS.md``, "Restores after full-speed
writes").

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pbfast.config import DEFAULT_EXACT_RESTORE_HOURS, DEFAULT_RESTORE_WINDOW_HOURS
from pbfast.logs import component_logger
from pbfast.tenant_node import shipper
from pbfast.tenant_node.litestream_process import SYNC_TIMEOUT_SECONDS, LitestreamProcess
from pbfast.tenant_node.replica import ReplicaStore, Replicas, ReplicationError, Unanswered
from pbfast.tenant_node.shipper import Shipper
from pbfast.timefmt import parse_time

__all__ = ["NO_AUTOCHECKPOINT", "RECONCILE_TIMEOUT_SECONDS", "SYNC_TIMEOUT_SECONDS", "Replicator", "Shipper"]

log = component_logger("TenantNode")

RECONCILE_SECONDS = 1.0  # retry of registers and unregisters litestream has not confirmed
RECONCILE_TIMEOUT_SECONDS = 5.0
REGISTER_TIMEOUT_SECONDS = 5.0  # a /register opens the database: quick, unless litestream is stuck
# The pragma for every connection that writes a replicated database: only litestream checkpoints it (see the
# module's docstring). While litestream does not replicate it, the node bounds its WAL itself.
NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = 0"


class Replicator(Replicas):
    """Keeps litestream replicating exactly the databases the node wants replicated (registered, each under
    its replica URL), through :class:`~.litestream_process.LitestreamProcess`; reads the replicas it writes
    (:class:`~pbfast.tenant_node.replica.Replicas`)."""

    def __init__(self, work_dir: Path, store: ReplicaStore, binary: str | None = None,
                 ship_interval: float | None = None, exact_restore_hours: float = DEFAULT_EXACT_RESTORE_HOURS,
                 restore_window_hours: float = DEFAULT_RESTORE_WINDOW_HOURS) -> None:
        super().__init__(store, binary)
        self.litestream = LitestreamProcess(work_dir, store, self.program, exact_restore_hours,
                                            restore_window_hours)
        # What litestream must replicate (the open tenants): db path -> replica url. Litestream is brought to
        # it by register()/unregister() and, for what they could not confirm, by the reconcile loop.
        self.registered: dict[str, str] = {}
        # Path -> url the running litestream confirmed registered (what it replicates, as far as known).
        self._confirmed: dict[str, str] = {}
        # Paths litestream may have registered: a /register was sent and no /unregister confirmed since. Those
        # not in ``registered`` are :attr:`unregistering`. Kept across restarts of litestream (a register in
        # flight may reach the new process); an unregister of a path it lacks is a harmless no-op.
        self._maybe: set[str] = set()
        self._path_locks: dict[str, asyncio.Lock] = {}  # one /register or /unregister in flight per path
        self.paused = False  # pause(): no registrations until resume() (the node is fenced)
        self.halted = False  # halt(): litestream was killed with nothing registered; paused as well
        self._registered_at: dict[str, float] = {}
        self._reconciler: asyncio.Task[None] | None = None
        self.shipper = Shipper(self.registered, self.litestream.post,
                               shipper.SHIP_INTERVAL_SECONDS if ship_interval is None else ship_interval)
        self._shipping_loop: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.litestream.start(self._confirmed.clear, self.reconcile)
        await asyncio.to_thread(self.reader.warm)  # the in-node restores' S3 client, before a tenant waits for it
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="litestream-reconcile")
        if self.shipper.interval > 0:
            self._shipping_loop = asyncio.create_task(self.shipper.run(), name="litestream-shipper")

    async def _reconcile_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                await self.reconcile()
            except ReplicationError as err:
                log.debug("reconcile: %s", err)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("litestream reconcile failed")

    @property
    def unregistering(self) -> set[str]:
        """Paths no longer wanted whose unregister litestream has not confirmed: it may still write their
        replicas. Retried by the reconcile loop; a fence or release counts them as not stopped."""
        return {path for path in self._maybe if path not in self.registered}

    def _settled(self, path: str) -> bool:
        want = self.registered.get(path)
        if want is None:
            return path not in self._maybe
        return self.paused or self.halted or self._confirmed.get(path) == want

    async def _converge(self, path: str, timeout: float) -> None:
        """Bring litestream's registration of ``path`` to what :attr:`registered` wants, one request in flight
        per path. A path registered under another replica URL (or an unknown one) is unregistered first:
        litestream answers "already registered" without changing the URL. Raises :class:`ReplicationError`."""
        lock = self._path_locks.setdefault(path, asyncio.Lock())
        async with lock:
            seconds = max(1, math.ceil(timeout))
            for _ in range(4):  # each step re-reads the wanted state, which callers change without the lock
                if self._settled(path):
                    return
                want = self.registered.get(path)
                if path in self._maybe and (want is None or self._confirmed.get(path) != want):
                    self._confirmed.pop(path, None)  # whatever the answer, it is not known registered any more
                    await self._control("/unregister", {"path": path, "timeout": seconds}, seconds + 2)
                    self._maybe.discard(path)
                    continue
                if want is None or self.paused or self.halted:
                    continue
                generation = self.litestream.generation
                self._maybe.add(path)  # before sending: from now on litestream may have it
                await self._control("/register", {"path": path, "replica_url": want}, REGISTER_TIMEOUT_SECONDS)
                if self.halted:  # halted while it was in flight: it may have reached a new litestream
                    await self._control("/unregister", {"path": path, "timeout": 1}, 3)
                    self._maybe.discard(path)
                elif generation == self.litestream.generation:
                    self._confirmed[path] = want
            if not self._settled(path):
                raise ReplicationError(f"litestream registration of {path} keeps changing")

    async def _control(self, path: str, body: dict[str, Any], timeout: float) -> None:
        """A /register or /unregister whose outcome must be known: litestream serves each connection in its
        own goroutine and carries out a request whose client gave up, possibly after a later one (an old
        register landing after the unregister that followed it would replicate a database the node believes
        stopped). So when a request gets no answer, or its caller is cancelled, litestream is killed: the
        restarted process starts empty, and the reconcile loop registers what is wanted."""
        process = self.litestream.process
        try:
            await self.litestream.post(path, body, timeout)
        except Unanswered as err:
            self.litestream.kill(f"{path} of {body.get('path')} got no answer ({err})", process)
            raise
        except asyncio.CancelledError:
            self.litestream.kill(f"{path} of {body.get('path')} was abandoned", process)
            raise

    def drop_without_flush(self, db_path: Path) -> None:
        """Stop replicating the database at once, without letting litestream ship what it has not shipped of it
        (another node may own its replica now): forgotten, and litestream killed if it may have it."""
        self.forget(db_path)
        if str(db_path) in self._maybe and not self.halted:
            self.litestream.kill(f"{db_path} must stop replicating without a flush")

    async def reconcile(self, timeout: float = RECONCILE_TIMEOUT_SECONDS) -> int:
        """Bring litestream to :attr:`registered`: register what it has not confirmed, unregister what is no
        longer wanted. Each request is decided just before it is sent, so a halt or close meanwhile is never
        undone. Returns how many unregisters are still unconfirmed."""
        if self.halted or not self.litestream.running:
            return len(self.unregistering)
        for path in [p for p, lock in self._path_locks.items()
                     if not lock.locked() and not getattr(lock, "_waiters", None)
                     and p not in self.registered and p not in self._maybe]:
            del self._path_locks[path]  # nobody holds it or waits for it
        unsettled = [path for path in {*self.registered, *self._maybe} if not self._settled(path)]
        for path in sorted(unsettled, key=lambda p: p in self.registered):  # unregisters first
            try:
                await self._converge(path, timeout)
            except ReplicationError as err:
                log.warning("litestream registration of %s not confirmed yet: %s", path, err)
        return len(self.unregistering)

    def halt(self) -> None:
        """Nothing of this node may reach the replica from now on (a fence's last resort): forget every
        database and kill litestream without letting it flush. Registrations are refused until
        :meth:`resume`; the supervisor restarts an empty litestream."""
        self.paused = self.halted = True
        self.registered.clear()
        self._registered_at.clear()
        self._maybe.clear()
        self._confirmed.clear()
        self.shipper.forget()
        if self.litestream.running:
            self.litestream.kill("halted: nothing of this node may reach the replica")

    def pause(self) -> None:
        """Register nothing until :meth:`resume` (the node is fenced); unregisters go on."""
        self.paused = True

    def resume(self) -> None:
        """The node may replicate again (its lease was renewed)."""
        self.paused = self.halted = False

    async def stop(self) -> None:
        """Stop litestream (it flushes what it has); unregistering first is the caller's choice."""
        self._stopping = True
        self.shipper.stop()
        for task in (self._reconciler, self._shipping_loop):
            if task is not None:
                task.cancel()
        await self.litestream.stop()

    # ---- registrations ----------------------------------------------------------------------------

    async def register(self, db_path: Path, tenant_id: str, incarnation: str) -> None:
        """Replicate the database from now on. Raises :class:`ReplicationError` when paused or halted (nothing
        is registered), or when litestream did not confirm it: it stays wanted, and the reconcile loop (or the
        supervisor, after a restart) registers it."""
        if self.paused or self.halted:
            raise ReplicationError("replication is paused: the node lost its lease")
        key = str(db_path)
        self.registered[key] = self.store.url(tenant_id, incarnation)
        self._registered_at.setdefault(key, time.time())
        await self._converge(key, RECONCILE_TIMEOUT_SECONDS)

    async def sync(self, db_path: Path, wait: bool = True, timeout: float = SYNC_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Ship everything committed so far; with ``wait``, return only once it is in the replica (at most
        ``timeout`` seconds)."""
        seconds = max(1, int(timeout))
        return await self.litestream.post("/sync", {"path": str(db_path), "wait": wait, "timeout": seconds}, seconds + 2)

    async def settle(self, db_path: Path, timeout: float = RECONCILE_TIMEOUT_SECONDS) -> None:
        """Bring litestream's registration of this one database to what is wanted (see :meth:`reconcile`)."""
        await self._converge(str(db_path), timeout)

    def forget(self, db_path: Path) -> None:
        """No longer want the database replicated (at once, without waiting): it counts as
        :attr:`unregistering` until litestream confirms (:meth:`unregister`, or the reconcile loop)."""
        key = str(db_path)
        self.registered.pop(key, None)
        self._registered_at.pop(key, None)
        self.shipper.forget(key)

    async def unregister(self, db_path: Path, timeout: float = SYNC_TIMEOUT_SECONDS) -> None:
        """Stop replicating the database (litestream flushes it first, for at most ``timeout`` seconds).
        Raises :class:`ReplicationError` when litestream did not confirm it: the database then stays in
        :attr:`unregistering`, retried by the reconcile loop and counted by fences and releases."""
        self.forget(db_path)
        if self.halted:
            return  # litestream was killed with nothing registered
        await self._converge(str(db_path), timeout)

    def stopped(self, db_path: Path) -> bool:
        """Whether litestream is known not to replicate the database (not wanted, no unconfirmed unregister)."""
        key = str(db_path)
        return self.halted or (key not in self.registered and key not in self._maybe)

    def watching(self, db_path: Path) -> bool:
        """Whether the running litestream may be replicating the database now: then only litestream may
        checkpoint it (see :data:`NO_AUTOCHECKPOINT`). Stable while :meth:`registrations_held` is held."""
        return self.litestream.running and not self.halted and str(db_path) in self._maybe

    @contextlib.asynccontextmanager
    async def registrations_held(self, db_path: Path) -> AsyncIterator[None]:
        """No /register or /unregister of the database is sent meanwhile (a spawned litestream replicates
        nothing until one is)."""
        async with self._path_locks.setdefault(str(db_path), asyncio.Lock()):
            yield

    async def lag_seconds(self) -> float | None:
        """How far the replica is behind, over every replicated tenant: the age of the last successful sync
        of a database written since then (0.0 when everything written is shipped; None if unknown)."""
        databases = await self.litestream.databases()
        if databases is None:
            return None
        now, worst = time.time(), 0.0
        for entry in databases:
            path = entry.get("path", "")
            synced_text = entry.get("last_sync_at")
            synced = parse_time(synced_text) if synced_text else self._registered_at.get(path, now)
            try:
                written = max(os.stat(path + "-wal").st_mtime, os.stat(path).st_mtime)
            except FileNotFoundError:
                continue
            if written > synced:
                worst = max(worst, now - synced)
        return round(worst, 3)

    def status(self) -> dict[str, Any]:
        return {"running": self.litestream.running, "replicating": len(self.registered),
                "restarts": self.litestream.restarts, "unconfirmedUnregisters": len(self.unregistering),
                "halted": self.halted, "lastError": self.litestream.last_error}
