"""Serving a tenant request in a worker process of a multi-worker node: the same answers as a single-process
node (:mod:`pbfast.tenant_node.serving`), decided from the node's shared tenant table instead of the main
process's slots, with the worker's own database threads and its own connections to the tenants' databases.

The request path: the lease (503 when lost or not joined), the tenant's entry (:meth:`SharedTenantTable.lookup`)
for the epoch checks, the suspension and the daily quota (:class:`SharedQuotas`, one quota for all workers),
then the worker's connection to the tenant, opened under the entry's generation. What the table cannot
decide (a tenant not open yet, an epoch the node has not heard of, a tenant unknown here) is asked of the main
process (:meth:`WorkerLink.ensure`), which admits the request and opens the tenant as a single-process node
would; the worker then reads the table again.

Connections (:class:`WorkerTenants`): a worker *holds* a tenant (:class:`WorkerAcks`) under the generation it
opens it under, and closes and releases it once the main process stopped serving that generation (a move,
a fence, an eviction...): the main process is woken through a pipe, and a poll of the table's close sequence
catches what the pipe missed. A close runs in the tenant's turn on the worker's database threads, after the
requests that hold it; those queued behind it are answered 503 (retry).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbfast.http import ApiError, HeldResponse, HTTPProtocol, Scope, StatusRecorder, send_error
from pbfast.logs import component_logger, current_request_id
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.apis.front import CorsRecorder, answered_before_routes
from pbfast.pocketbase.sqlite_guard import DEFAULT_LIMITS
from pbfast.pocketbase.filesystem import StorageError, files_of
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import SharedQuotas, SharedTenantTable, WorkerAcks, WorkerCounters
from pbfast.tenant_node.db_scheduler import DbScheduler, TenantBusy, TenantLoad
from pbfast.tenant_node.ownership import moved
from pbfast.tenant_node.replication import NO_AUTOCHECKPOINT
from pbfast.tenant_node.inline_tries import InlineTries
from pbfast.tenant_node.serving import REALTIME_PATH, record_write, tenant_routing_path
from pbfast.tenant_node.shared_state import (
    ASSIGNED,
    DURABLE,
    IMPORTING,
    LEASE_LOST,
    NOT_JOINED,
    REALTIME,
    SERVING,
    SUSPENDED,
    WorkerCounter,
)
from pbfast.tenant_node.worker_link import WorkerLink

__all__ = ["WorkerServing", "WorkerTenants"]

log = component_logger("TenantWorker")

OAUTH2_REDIRECT_PATH = "/api/oauth2-redirect"
_COLLECTIONS_PREFIX = "/api/collections/"
_OAUTH2_LOGIN_SUFFIX = "/auth-with-oauth2"
ENSURE_ATTEMPTS = 3  # a tenant closed between the main process opening it and the worker using it: opened again
CLOSE_POLL_SECONDS = 0.1  # the table's close sequence is read this often besides the main process's wake-ups
STORAGE_MEASURE_SECONDS = 1.0
_INDEX, _GENERATION, _FLAGS, _EPOCH, _RELEASED, _TIME_LIMIT_MS, _MAX_BYTES = range(7)
_READS = ("GET", "HEAD", "OPTIONS")

Entry = tuple[int, int, int, int, int, int, int]


class _ClosedBeforeItsTurn(Exception):
    """The worker's connection to the tenant was closed while the request waited for its database turn."""


@dataclass(slots=True)
class _Held:
    tenant: Tenant
    generation: int
    index: int
    closing: asyncio.Future[None] | None = None
    files_measured: bool = False  # its files in the store counted (until then its size is not published)


class WorkerTenants:
    """The worker's connections to its node's open tenants, each held under the generation it was opened in."""

    def __init__(self, worker: int, tenants_dir: Path, table: SharedTenantTable, acks: WorkerAcks,
                 counters: WorkerCounters, db: DbScheduler, replicated: bool) -> None:
        self.worker = worker
        self.tenants_dir = tenants_dir
        self.table = table
        self.acks = acks
        self.counters = counters
        self.db = db
        self.replicated = replicated  # only Litestream checkpoints a replicated tenant
        self.held: dict[str, _Held] = {}
        self._opening: dict[tuple[str, int], asyncio.Future[Tenant | None]] = {}

    async def connection(self, tenant_id: str, generation: int) -> Tenant | None:
        """The worker's connection to the tenant served under ``generation``, opened if needed; None when the
        tenant stopped being served under it meanwhile."""
        held = self.held.get(tenant_id)
        if held is not None:
            if held.generation == generation and held.closing is None:
                return held.tenant
            await self.close(tenant_id, held)
        key = (tenant_id, generation)
        opening = self._opening.get(key)
        if opening is None:
            opening = self._opening[key] = asyncio.ensure_future(self._open(tenant_id, generation))
            opening.add_done_callback(lambda _: self._opening.pop(key, None))
        return await asyncio.shield(opening)

    async def _open(self, tenant_id: str, generation: int) -> Tenant | None:
        index = self.acks.hold(self.worker, tenant_id, generation)
        if index is None:
            return None
        try:
            tenant = await self.db.run(tenant_id, lambda: self._open_database(tenant_id), bounded=False)
        except BaseException:
            self.acks.release(self.worker, index, generation)
            raise
        held = self.held[tenant_id] = _Held(tenant, generation, index)
        self.counters.set(self.worker, WorkerCounter.OPEN_TENANTS, len(self.held))
        asyncio.ensure_future(self._measure_files(tenant_id, held))
        if self._stale(tenant_id, held):  # stopped while it opened: the close watch may have looked already
            asyncio.ensure_future(self.close(tenant_id, held))
            return None
        return tenant

    async def _measure_files(self, tenant_id: str, held: _Held) -> None:
        """Count the tenant's files toward its storage quota, off its turn: a listing of an unreachable store
        must not keep the connection from closing (a fence waits for that)."""
        try:
            await asyncio.to_thread(files_of(held.tenant).measure)
        except StorageError as err:
            log.warning("tenant %s: its files could not be measured: %s", tenant_id, err)
            return
        held.files_measured = True

    def holds_directory(self, directory: Path) -> bool:
        """Whether the worker holds an open connection to the tenant whose directory this is. Only reads, so
        any thread may ask (the request log writer does)."""
        held = self.held.get(directory.name)
        return held is not None and held.closing is None and held.tenant.directory == directory

    def files_measured(self, tenant: Tenant) -> bool:
        held = self.held.get(tenant.id)
        return held is not None and held.tenant is tenant and held.files_measured

    def _open_database(self, tenant_id: str) -> Tenant:
        tenant = Tenant.open(tenant_id, self.tenants_dir / tenant_id, False, DEFAULT_LIMITS)
        tenant.shared_schema = True  # the other workers change its collections too
        if self.replicated:
            tenant.conn.execute(NO_AUTOCHECKPOINT)
        return tenant

    def _stale(self, tenant_id: str, held: _Held) -> bool:
        entry = self.table.get(tenant_id)
        return entry is None or entry[_GENERATION] != held.generation or not entry[_FLAGS] & SERVING

    async def close(self, tenant_id: str, held: _Held) -> None:
        """Close a held connection in the tenant's turn (after the requests that hold it), then release it."""
        if held.closing is None:
            held.closing = asyncio.ensure_future(self._close(tenant_id, held))
        await asyncio.shield(held.closing)

    async def _close(self, tenant_id: str, held: _Held) -> None:
        if self.held.get(tenant_id) is held:
            del self.held[tenant_id]
        try:
            await self.db.run(tenant_id, lambda: held.tenant.close(checkpoint=False), bounded=False)
        except Exception:  # noqa: BLE001 - released anyway: the connection is gone or going
            log.exception("tenant %s: closing its connection failed", tenant_id)
        finally:
            self.acks.release(self.worker, held.index, held.generation)
            self.counters.set(self.worker, WorkerCounter.OPEN_TENANTS, len(self.held))

    async def close_stale(self) -> None:
        """Close every connection whose tenant is no longer served under the generation it was opened in."""
        stale = [self.close(tenant_id, held) for tenant_id, held in list(self.held.items())
                 if self._stale(tenant_id, held)]
        if stale:
            await asyncio.gather(*stale, return_exceptions=True)

    async def watch(self, woken: asyncio.Event) -> None:
        """Close stale connections whenever the main process wakes the worker or the close sequence moves."""
        seen = self.table.close_sequence
        while True:
            try:
                await asyncio.wait_for(woken.wait(), CLOSE_POLL_SECONDS)
            except TimeoutError:
                pass
            now = self.table.close_sequence
            if woken.is_set() or now != seen:
                woken.clear()
                seen = now
                try:
                    await self.close_stale()
                except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                    log.exception("closing stale connections failed")

    async def close_all(self) -> None:
        closing = [self.close(tenant_id, held) for tenant_id, held in list(self.held.items())]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)


class WorkerServing:
    def __init__(self, worker: int, table: SharedTenantTable, quotas: SharedQuotas, counters: WorkerCounters,
                 tenants: WorkerTenants, api: TenantApi, db: DbScheduler, link: WorkerLink,
                 request_time_limit: float) -> None:
        self.worker = worker
        self.table = table
        self.quotas = quotas
        self.counters = counters
        self.tenants = tenants
        self.api = api
        self.db = db
        self.link = link
        self.request_time_limit = request_time_limit  # seconds, for tenants without a limit of their own
        self._measured_at: dict[str, float] = {}
        self.inline = InlineTries(db)
        self._loads_published: dict[str, TenantLoad] = {}
        # A rejection or a time limit since the last publication: published when the request ends, so an
        # operator (and a test) reading /metrics right after sees it (the rest goes once a second).
        self.loads_changed = False

    def _count(self, slot: int) -> None:
        self.counters.add(self.worker, slot)

    async def serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> bool:
        """As :meth:`Serving.serve_tenant`: whether the request's whole body was read."""
        path = tenant_routing_path(scope, path)
        recorder = StatusRecorder(proto)
        try:
            await self._serve_tenant(tenant_id, epoch, path, scope, recorder)
        except ApiError as err:  # refused before the handler (quota, suspended, importing...): CORS as any answer
            send_error(CorsRecorder(recorder, scope), err.status, err.message, err.data, err.headers)
        finally:
            status_class = recorder.status // 100 - 1
            if 0 <= status_class < 5:
                self._count(WorkerCounter.REQUESTS + status_class)
            if self.loads_changed:
                self.loads_changed = False
                self.publish_loads()
        return recorder.body_read

    async def _reopen(self, tenant_id: str, epoch: int) -> Entry:
        """The entry of a tenant admitted under ``epoch`` and closed since: the main process opens it again."""
        entry = self.table.lookup(tenant_id)
        if entry is not None and entry[_FLAGS] & SERVING and entry[_EPOCH] == epoch:
            return entry
        if entry is None or not entry[_FLAGS] & ASSIGNED or entry[_EPOCH] != epoch or epoch <= entry[_RELEASED]:
            raise moved()
        return await self._ensure(tenant_id, epoch, counted=True)

    async def _admit(self, tenant_id: str, epoch: int) -> Entry:
        """The tenant's entry once the request is admitted under ``epoch`` and its tenant is open (asking the
        main process when the table cannot tell), else ApiError with the answer, as ``Ownership.admit``."""
        lease = self.table.lease_state()
        if lease == NOT_JOINED:
            raise ApiError(503, "The node has not joined the cluster yet; retry shortly.", headers=[("retry-after", "1")])
        if lease == LEASE_LOST:
            raise moved("The node lost contact with the control plane; the tenant is served elsewhere shortly, retry.")
        entry = self.table.lookup(tenant_id)
        counted = False
        if entry is not None:
            if epoch <= entry[_RELEASED] or (entry[_FLAGS] & ASSIGNED and entry[_EPOCH] > epoch):
                raise moved()
            if entry[_FLAGS] & ASSIGNED and entry[_EPOCH] == epoch:
                if entry[_FLAGS] & SUSPENDED:
                    raise ApiError(403, "The tenant is suspended.")
                allowed, _ = self.quotas.try_acquire(tenant_id)
                if not allowed:
                    self._count(WorkerCounter.QUOTA_REQUESTS)
                    raise ApiError(429, "The tenant's daily API request quota is used up.")
                counted = True
                if entry[_FLAGS] & SERVING:
                    return entry
                if entry[_FLAGS] & IMPORTING:
                    raise ApiError(503, "The tenant is being imported; retry shortly.", headers=[("retry-after", "1")])
        return await self._ensure(tenant_id, epoch, counted)

    async def _ensure(self, tenant_id: str, epoch: int, counted: bool) -> Entry:
        """Have the main process admit the request (unless ``counted``) and open its tenant; its entry then."""
        for _ in range(ENSURE_ATTEMPTS):
            self._count(WorkerCounter.ASKED_MAIN)
            answer = await self.link.ensure(tenant_id, epoch, counted)
            if not answer.ok:
                raise ApiError(answer.status, answer.message, answer.data or None, answer.headers)
            counted = True
            entry = self.table.lookup(tenant_id)
            if entry is not None and entry[_FLAGS] & SERVING and entry[_EPOCH] == epoch:
                return entry
            if entry is None or not entry[_FLAGS] & ASSIGNED or entry[_EPOCH] != epoch or epoch <= entry[_RELEASED]:
                raise moved()
            # Still assigned here under this epoch, closed in between (evicted, idle): opened again, as a single
            # process keeps a tenant open for the request it admitted.
        raise ApiError(503, "The tenant was closed on this node; retry.", headers=[("retry-after", "1")])

    def _main_serves(self, tenant_id: str, path: str, scope: Scope) -> bool:
        """Whether the main process answers this request: realtime streams and subscriptions are held there,
        and so are the writes of a tenant with streams open (their events are evaluated in the writer's
        turn, in commit order, against the streams' clients), and the OAuth2 redirect (it hands the code to a
        realtime client, and keeps Apple's user name for the login) with the logins that take that name."""
        if path == REALTIME_PATH or path == OAUTH2_REDIRECT_PATH:
            return True
        if scope.method == "POST" and path.endswith(_OAUTH2_LOGIN_SUFFIX) and path.startswith(_COLLECTIONS_PREFIX):
            return True
        if scope.method in _READS:
            return False
        entry = self.table.lookup(tenant_id)
        return entry is not None and bool(entry[_FLAGS] & REALTIME)

    async def _serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        if self._main_serves(tenant_id, path, scope):
            self._count(WorkerCounter.HANDED_OVER)
            await self.link.hand_over(scope, proto, current_request_id.get(),
                                      long_lived=path == REALTIME_PATH and scope.method == "GET")
            return
        if answered_before_routes(tenant_id, path, scope, proto):  # a redirect to the clean path, a CORS preflight
            return
        proto = CorsRecorder(proto, scope)
        entry = await self._admit(tenant_id, epoch)
        flags = entry[_FLAGS]
        if flags & IMPORTING:
            raise ApiError(503, "The tenant is being imported; retry shortly.", headers=[("retry-after", "1")])
        writes = scope.method not in _READS
        if writes and not self.quotas.storage_allows(tenant_id, 0):
            self._count(WorkerCounter.QUOTA_STORAGE)
            raise ApiError(403, "The tenant's storage quota is used up.")
        tenant = await self.tenants.connection(tenant_id, entry[_GENERATION])
        for _ in range(ENSURE_ATTEMPTS):
            if tenant is not None:
                break
            # Closed by the main process between the look-up and the connection (evicted, idle): the request
            # was admitted, so its tenant is opened again for it (counted once).
            entry = await self._reopen(tenant_id, epoch)
            flags = entry[_FLAGS]
            tenant = await self.tenants.connection(tenant_id, entry[_GENERATION])
        if tenant is None:
            raise ApiError(503, "The tenant was closed on this node; retry.", headers=[("retry-after", "1")])
        limit_ms = entry[_TIME_LIMIT_MS]
        time_limit = self.request_time_limit if limit_ms < 0 else limit_ms / 1000
        max_bytes = None if entry[_MAX_BYTES] < 0 else entry[_MAX_BYTES]
        try:
            if writes and flags & DURABLE and self.tenants.replicated:
                await self._handle_durably(tenant, path, scope, proto, time_limit, max_bytes)
            else:
                await self._handle(tenant, path, scope, proto, time_limit, max_bytes)
        except _ClosedBeforeItsTurn:
            # Nothing of it ran: "moved" when the tenant left (the gateway sends it to the new node), else retry.
            now = self.table.lookup(tenant_id)
            if now is None or not now[_FLAGS] & ASSIGNED or now[_EPOCH] != epoch or epoch <= now[_RELEASED]:
                raise moved() from None
            raise ApiError(503, "The tenant was closed on this node; retry.", headers=[("retry-after", "1")]) from None
        except TenantBusy:
            self._count(WorkerCounter.QUEUE_REJECTED)
            self.loads_changed = True
            raise ApiError(429, "Too many requests for this tenant are waiting; retry shortly.",
                           headers=[("retry-after", "1")]) from None
        if writes:
            self._measure_storage(tenant)

    async def _handle(self, tenant: Tenant, path: str, scope: Scope, proto: HTTPProtocol, time_limit: float,
                      max_bytes: int | None) -> None:
        # As in a single process (Serving._handle): a read, or a JSON write of a base collection's record, is
        # tried at once on the loop within a small budget (a thread hop costs more CPU than a small read), and
        # done again on a database thread when it ran over (or met another process's write lock).
        inline = (scope.method in ("GET", "HEAD") or record_write(tenant, path, scope)) and not tenant.closed

        async def run(work: Callable[[], None]) -> None:
            def job() -> None:
                if tenant.closed:  # closed (released, evicted) while the request waited for its turn
                    raise _ClosedBeforeItsTurn
                if tenant.max_bytes != max_bytes:  # the quota changed since it was opened
                    tenant.set_max_bytes(max_bytes)
                work()

            await self.inline.run(tenant, job, inline, write=scope.method not in ("GET", "HEAD"))

        await self.api.handle(tenant, path, scope, proto, run=run, time_limit=time_limit)

    async def _handle_durably(self, tenant: Tenant, path: str, scope: Scope, proto: HTTPProtocol,
                              time_limit: float, max_bytes: int | None) -> None:
        """Durable mode: answer a successful write only once the main process confirmed it in the replica."""
        held = HeldResponse(proto)
        await self._handle(tenant, path, scope, held, time_limit, max_bytes)
        if held.status is not None and held.status < 400:
            answer = await self.link.sync(tenant.id)
            if not answer.ok:
                send_error(proto, 503, "The change was saved on the node but the replica did not confirm it; "
                                       "it will be replicated when storage is reachable.",
                           headers=[("retry-after", "2")])
                return
        held.replay(proto)

    def _measure_storage(self, tenant: Tenant) -> None:
        """Refresh the tenant's stored bytes after writes, at most once per second per tenant and worker."""
        now = time.monotonic()
        if not self.tenants.files_measured(tenant):
            return  # the main process's figure stands meanwhile
        if now - self._measured_at.get(tenant.id, 0.0) >= STORAGE_MEASURE_SECONDS:
            self._measured_at[tenant.id] = now
            self.quotas.set_storage(tenant.id, tenant.size_bytes())

    def publish_loads(self) -> None:
        """Add what the worker's database threads did since the last call to the tenants' shared counters."""
        loads, queued = self.db.snapshot()
        self.counters.set(self.worker, WorkerCounter.DB_QUEUED, queued)
        for tenant_id, load in loads.items():
            before = self._loads_published.get(tenant_id) or TenantLoad()
            if load.jobs == before.jobs and load.rejected == before.rejected:
                continue
            if self.table.add_load(tenant_id, load.jobs - before.jobs, load.rejected - before.rejected,
                                   load.wait_seconds - before.wait_seconds, load.busy_seconds - before.busy_seconds,
                                   load.time_limited - before.time_limited):
                self._loads_published[tenant_id] = load
