"""Continuous replication of open tenants with Litestream 0.5, supervised as a child process.

One ``litestream replicate`` process per node serves a control socket (HTTP over a unix socket). A tenant
is *registered* when the node opens it and *unregistered* after a final waited sync when the node closes
it, so replication costs stay proportional to ``--max-tenants``, not to the tenants on disk. A closed
tenant has been shipped whole and needs no watcher.

Where replicas live, what they keep and how they are restored: :mod:`pbfast.tenant_node.replica`.

Shipping delay: Litestream 0.5 gives a database registered over its socket fixed 1 s monitor and sync
intervals (they are settable only for ``dbs:`` in its config file), so a write reached the replica 0-1 s
after its commit (measured p50 0.56 s, max 1.0 s). The node therefore looks at every registered database's
WAL each :data:`SHIP_INTERVAL_SECONDS` and asks for a waited ``/sync`` of those written since the last look
(:class:`Shipper`):
RPO ~0.1-0.3 s for ~5 S3 PUTs/s per continuously written tenant, nothing for idle ones
(``benchmarks/RESULTS.md``).

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
import ctypes
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import orjson

from pbfast.config import DEFAULT_EXACT_RESTORE_HOURS, DEFAULT_RESTORE_WINDOW_HOURS
from pbfast.logs import component_logger
from pbfast.tenant_node.replica import ReplicaStore, Replicas, ReplicationError, Unanswered, litestream_config
from pbfast.timefmt import parse_time

__all__ = ["NO_AUTOCHECKPOINT", "RECONCILE_TIMEOUT_SECONDS", "SYNC_TIMEOUT_SECONDS", "Replicator", "Shipper"]

log = component_logger("TenantNode")

SOCKET_WAIT_SECONDS = 10.0
RESTART_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
SYNC_TIMEOUT_SECONDS = 30
SHIP_INTERVAL_SECONDS = 0.2  # 0: leave shipping to Litestream's own 1 s intervals
SHIP_TIMEOUT_SECONDS = 10
SHIP_CONCURRENCY = 4  # shipping syncs in flight at once (S3 down: they wait, the others do not pile up)
RECONCILE_SECONDS = 1.0  # retry of registers and unregisters litestream has not confirmed
RECONCILE_TIMEOUT_SECONDS = 5.0
REGISTER_TIMEOUT_SECONDS = 5.0  # a /register opens the database: quick, unless litestream is stuck
PR_SET_PDEATHSIG = 1
# The pragma for every connection that writes a replicated database: only litestream checkpoints it (see the
# module's docstring). While litestream does not replicate it, the node bounds its WAL itself.
NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint = 0"


_node_pid = os.getpid()  # the process that spawns litestream (set again in _spawn, for forks)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the node process dies, even by kill -9, so an orphaned
    litestream never keeps writing a replica that a restarted node (or another node) now owns. Not SIGTERM:
    litestream then flushes for as long as the store lets it (unbounded with S3 unreachable), past the
    lease's halt time. What it had not shipped stays in the local WAL and is shipped when the tenant is
    opened again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != _node_pid:
        os._exit(1)  # no death signal, or the node died before it was set up


class Replicator(Replicas):
    """Supervises ``litestream replicate`` and talks to its control socket; reads the replicas it writes
    (:class:`~pbfast.tenant_node.replica.Replicas`)."""

    def __init__(self, work_dir: Path, store: ReplicaStore, binary: str | None = None,
                 ship_interval: float | None = None, exact_restore_hours: float = DEFAULT_EXACT_RESTORE_HOURS,
                 restore_window_hours: float = DEFAULT_RESTORE_WINDOW_HOURS) -> None:
        self.exact_restore_hours = exact_restore_hours
        self.restore_window_hours = restore_window_hours
        self.work_dir = work_dir
        super().__init__(store, binary)
        self.socket_path = work_dir / "control.sock"
        self.config_path = work_dir / "litestream.yml"
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
        self._generation = 0  # bumped by each spawn: a confirmation from an older process means nothing
        self.paused = False  # pause(): no registrations until resume() (the node is fenced)
        self.halted = False  # halt(): litestream was killed with nothing registered; paused as well
        self._registered_at: dict[str, float] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._client: httpx.AsyncClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self.shipper = Shipper(self.registered, self._post,
                               SHIP_INTERVAL_SECONDS if ship_interval is None else ship_interval)
        self._shipping_loop: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.last_error = ""

    # ---- lifecycle ----------------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(litestream_config(self.socket_path, self.exact_restore_hours,
                                                      self.restore_window_hours))

    async def start(self) -> None:
        self.program()
        self._write_config()
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="litestream-supervisor")
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="litestream-reconcile")
        if self.shipper.interval > 0:
            self._shipping_loop = asyncio.create_task(self.shipper.run(), name="litestream-shipper")

    async def _spawn(self) -> None:
        global _node_pid  # noqa: PLW0603 - read by the child before exec
        _node_pid = os.getpid()
        self.socket_path.unlink(missing_ok=True)
        # A fresh client at once: until the new socket is up requests fail cleanly as "not sent", rather than
        # on a connection the old process left behind.
        old_client, self._client = self._client, httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)), base_url="http://litestream",
            timeout=SYNC_TIMEOUT_SECONDS + 5)
        if old_client is not None:
            await old_client.aclose()
        log_path = self.work_dir / "litestream.log"
        with open(log_path, "ab") as log_file:  # noqa: ASYNC230 - an append-only open, for the child
            self._process = await asyncio.create_subprocess_exec(
                self.program(), "replicate", "-config", str(self.config_path), "-log-level", "warn",
                stdout=log_file, stderr=log_file, env=self.store.environment(), start_new_session=True,
                preexec_fn=_die_with_parent)
        # A new process replicates nothing until told: what the old one had registered died with it.
        self._generation += 1
        self._confirmed.clear()
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while not self.socket_path.exists():
            if self._process.returncode is not None or time.monotonic() > deadline:
                if self._process.returncode is None:
                    self._process.kill()  # hung: the supervisor sees it exit and tries again
                raise ReplicationError(f"litestream did not start (see {log_path})")
            await asyncio.sleep(0.02)
        log.info("litestream replicating to %s (pid %d)",
                 self.store.endpoint and f"s3 bucket {self.store.bucket}" or self.store.local_root,
                 self._process.pid)

    async def _supervise(self) -> None:
        """Restart litestream when it dies, then register every open tenant again."""
        attempt = 0
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self.restarts += 1
            self.last_error = f"litestream exited with {code}"
            delay = RESTART_BACKOFF_SECONDS[min(attempt, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error("litestream exited with %s; restarting in %.1f s", code, delay)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                await self.reconcile()
                attempt = 0
            except (ReplicationError, OSError) as err:
                attempt += 1
                self.last_error = str(err)
                log.error("litestream restart failed: %s", err)
            except Exception as err:  # noqa: BLE001 - the supervisor must outlive any one failure
                attempt += 1
                self.last_error = repr(err)
                log.exception("litestream restart failed")

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
                generation = self._generation
                self._maybe.add(path)  # before sending: from now on litestream may have it
                await self._control("/register", {"path": path, "replica_url": want}, REGISTER_TIMEOUT_SECONDS)
                if self.halted:  # halted while it was in flight: it may have reached a new litestream
                    await self._control("/unregister", {"path": path, "timeout": 1}, 3)
                    self._maybe.discard(path)
                elif generation == self._generation:
                    self._confirmed[path] = want
            if not self._settled(path):
                raise ReplicationError(f"litestream registration of {path} keeps changing")

    async def _control(self, path: str, body: dict[str, Any], timeout: float) -> None:
        """A /register or /unregister whose outcome must be known: litestream serves each connection in its
        own goroutine and carries out a request whose client gave up, possibly after a later one (an old
        register landing after the unregister that followed it would replicate a database the node believes
        stopped). So when a request gets no answer, or its caller is cancelled, litestream is killed: the
        restarted process starts empty, and the reconcile loop registers what is wanted."""
        process = self._process
        try:
            await self._post(path, body, timeout)
        except Unanswered as err:
            self._reset(f"{path} of {body.get('path')} got no answer ({err})", process)
            raise
        except asyncio.CancelledError:
            self._reset(f"{path} of {body.get('path')} was abandoned", process)
            raise

    def _reset(self, why: str, process: asyncio.subprocess.Process | None = None) -> None:
        """Kill litestream (``process``: only if it is still the running one) so that nothing it was asked is
        carried out later; the supervisor restarts it."""
        process = process or self._process
        if process is not None and process is self._process and process.returncode is None:
            log.error("killing litestream: %s", why)
            process.kill()

    def drop_without_flush(self, db_path: Path) -> None:
        """Stop replicating the database at once, without letting litestream ship what it has not shipped of it
        (another node may own its replica now): forgotten, and litestream killed if it may have it."""
        self.forget(db_path)
        if str(db_path) in self._maybe and not self.halted:
            self._reset(f"{db_path} must stop replicating without a flush")

    async def reconcile(self, timeout: float = RECONCILE_TIMEOUT_SECONDS) -> int:
        """Bring litestream to :attr:`registered`: register what it has not confirmed, unregister what is no
        longer wanted. Each request is decided just before it is sent, so a halt or close meanwhile is never
        undone. Returns how many unregisters are still unconfirmed."""
        if self.halted or self._process is None or self._process.returncode is not None:
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
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

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
        for task in (self._supervisor, self._reconciler, self._shipping_loop):
            if task is not None:
                task.cancel()
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), 3)
            except TimeoutError:
                self._process.kill()
        if self._client is not None:
            await self._client.aclose()

    # ---- control socket -------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if self._client is None:
            raise ReplicationError("litestream is not running")
        try:
            response = await self._client.post(path, content=orjson.dumps(body),
                                               headers={"content-type": "application/json"},
                                               timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            raise ReplicationError(f"litestream {path}: {type(err).__name__} (not sent)") from err
        except httpx.HTTPError as err:
            raise Unanswered(f"litestream {path}: {type(err).__name__}") from err
        if response.status_code >= 400:
            raise ReplicationError(f"litestream {path}: {response.status_code} {response.text.strip()[:200]}")
        return response.json() if response.content else {}

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
        return await self._post("/sync", {"path": str(db_path), "wait": wait, "timeout": seconds}, seconds + 2)

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
        running = self._process is not None and self._process.returncode is None
        return running and not self.halted and str(db_path) in self._maybe

    @contextlib.asynccontextmanager
    async def registrations_held(self, db_path: Path) -> AsyncIterator[None]:
        """No /register or /unregister of the database is sent meanwhile (a spawned litestream replicates
        nothing until one is)."""
        async with self._path_locks.setdefault(str(db_path), asyncio.Lock()):
            yield

    async def lag_seconds(self) -> float | None:
        """How far the replica is behind, over every replicated tenant: the age of the last successful sync
        of a database written since then (0.0 when everything written is shipped; None if unknown)."""
        if self._client is None:
            return None
        try:
            response = await self._client.get("/list", timeout=2)
            databases = response.json().get("databases", [])
        except (httpx.HTTPError, ValueError):
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
        running = self._process is not None and self._process.returncode is None
        return {"running": running, "replicating": len(self.registered), "restarts": self.restarts,
                "unconfirmedUnregisters": len(self.unregistering), "halted": self.halted,
                "lastError": self.last_error}


class Shipper:
    """Ships what was written to the registered databases sooner than Litestream's own 1 s intervals: every
    ``interval`` a waited ``/sync`` of each registered database whose WAL changed since the last look."""

    def __init__(self, registered: dict[str, str], post: Callable[[str, dict[str, Any]], Awaitable[object]],
                 interval: float) -> None:
        self.registered = registered  # the replicator's: db path -> replica url (changed in place)
        self._post = post
        self.interval = interval
        self._wal_seen: dict[str, tuple[int, int]] = {}  # db path -> (mtime ns, size) of its WAL at the last look
        self._shipping: set[asyncio.Task[None]] = set()
        self._ship_slots = asyncio.Semaphore(SHIP_CONCURRENCY)
        self._stopping = False

    def forget(self, path: str | None = None) -> None:
        """Forget what was seen of ``path``'s WAL (every path's with None)."""
        if path is None:
            self._wal_seen.clear()
        else:
            self._wal_seen.pop(path, None)

    def stop(self) -> None:
        self._stopping = True
        for task in self._shipping:
            task.cancel()

    async def run(self) -> None:
        """Every ``interval``: a waited ``/sync`` of each registered database whose WAL changed since the
        last look, or seen for the first time (one at a time per database). Idle databases cost one ``stat``
        per look and no S3 request."""
        in_flight: set[str] = set()

        async def ship(path: str) -> None:
            try:
                async with self._ship_slots:
                    await self._post("/sync", {"path": path, "wait": True, "timeout": SHIP_TIMEOUT_SECONDS})
            except ReplicationError as err:  # Litestream's own intervals still ship it; lag shows in health
                log.debug("shipping %s: %s", path, err)
            except Exception:  # noqa: BLE001 - logged here, not when the task is collected
                log.exception("shipping %s failed", path)
            finally:
                in_flight.discard(path)

        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                self._ship_pass(in_flight, ship)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("shipping pass failed")

    def _ship_pass(self, in_flight: set[str], ship: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """One look at every registered database's WAL; ships those written since the last look."""
        if len(self._wal_seen) > len(self.registered):  # forgotten without unregister (fencing)
            for path in [p for p in self._wal_seen if p not in self.registered]:
                del self._wal_seen[path]
        for path in list(self.registered):
            if path in in_flight:  # compared with the mark from before that sync once it is done
                continue
            try:
                stat = os.stat(path + "-wal")
            except OSError:
                continue
            mark = (stat.st_mtime_ns, stat.st_size)
            previous = self._wal_seen.get(path)
            self._wal_seen[path] = mark
            if previous == mark:
                continue
            in_flight.add(path)
            task = asyncio.create_task(ship(path), name="litestream-ship")
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)
