"""Serving one request of a tenant: admitted under its route's epoch (:class:`Ownership`), the tenant opened
(or waited for), its PocketBase API run with the tenant's database work on the node's database threads
within the tenant's time limit, and, in durable mode, a write answered only once it is in the replica.

Thread-safety: event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pbfast.cluster.wire import RAW_PATH_HEADER, STREAM_HOLDER_HEADER
from pbfast.http import ApiError, HeldResponse, HTTPProtocol, Scope, StatusRecorder, routing_path, send_error
from pbfast.logs import component_logger
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.apis.front import CorsRecorder, answered_before_routes
from pbfast.pocketbase.apis.realtime import connect_address
from pbfast.pocketbase.realtime.hub import SSE_HEADERS
from pbfast.pocketbase.tenant import DATA_DB, Tenant
from pbfast.primitives import QuotaCounters, SharedQuotas
from pbfast.tenant_node.db_scheduler import DbScheduler, TenantBusy
from pbfast.tenant_node.group_commit import may_answer_from_job
from pbfast.tenant_node.inline_tries import InlineTries
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.ownership import Ownership, moved
from pbfast.tenant_node.pool import TenantPool
from pbfast.tenant_node.replica import ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.slots import Assignment, TenantSlot

__all__ = ["Serving", "tenant_routing_path"]

log = component_logger("TenantNode")

STORAGE_MEASURE_SECONDS = 1.0
REALTIME_PATH = "/api/realtime"


def record_write(tenant: Tenant, path: str, scope: Scope) -> bool:
    """A create, update or delete of a record of a base collection with a JSON body (or none): its only
    lasting effect is its SQLite transaction. Not auth collections (passwords are hashed: long CPU work),
    views, or multipart bodies (files); the caller also leaves out tenants with realtime clients (the
    fan-out after the commit evaluates every client's rules)."""
    if scope.method not in ("POST", "PATCH", "DELETE"):
        return False
    parts = path.split("/")
    if not 5 <= len(parts) <= 6 or parts[1] != "api" or parts[2] != "collections" or parts[4] != "records":
        return False
    if scope.method != "DELETE" and not (scope.headers.get("content-type") or "").startswith("application/json"):
        return False
    collection = tenant.collection(parts[3])
    return collection is not None and collection.type == "base"


def tenant_routing_path(scope: Scope, path: str) -> str:
    """The routing path (:func:`pbfast.http.routing_path`) of a tenant's request at tenant-relative ``path``
    (decoded), from the client's spelling the gateway forwards. Every process that routes a tenant's request
    (the main one, a worker) goes through this: the tenant's router decodes a routing path's segments once
    more, so a decoded path handed to it straight would be decoded twice."""
    raw = scope.headers.get(RAW_PATH_HEADER)  # the gateway's: the path as the client spelt it, if any
    if raw is not None:
        # what precedes the tenant's path (/t/{id}, or nothing for a Host naming the tenant) holds no "%"
        prefix = scope.path[:len(scope.path) - len(path)] if scope.path.endswith(path) else None
        raw = raw[len(prefix):] or "/" if prefix is not None and raw.startswith(prefix) else None
    return routing_path(path, raw)


class Serving:
    def __init__(self, ownership: Ownership, pool: TenantPool, api: TenantApi, db: DbScheduler,
                 replicator: Replicator | None, quotas: QuotaCounters | SharedQuotas, metrics: NodeMetrics,
                 request_time_limit: float) -> None:
        self.ownership = ownership
        self.pool = pool
        self.api = api
        self.db = db
        self.replicator = replicator
        self.quotas = quotas
        self.metrics = metrics
        self.request_time_limit = request_time_limit  # seconds, for tenants without a limit of their own
        self.inline = InlineTries(db)

    async def serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> bool:
        """Serve one request of ``tenant_id`` (routed with fencing ``epoch``) at tenant-relative ``path``;
        whether its whole body was read (else the caller drains what is left)."""
        path = tenant_routing_path(scope, path)
        recorder = self._answered_early(tenant_id, path, scope, proto)
        if recorder is None:
            recorder = CorsRecorder(proto, scope)
            try:
                await self._serve_tenant(tenant_id, epoch, path, scope, recorder)
            finally:
                self.metrics.observe(recorder.status)
        return recorder.body_read

    async def serve_local(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> int:
        """:meth:`serve_tenant` for a gateway in this process (an all-in-one's), which reads every body whole
        before: the status answered. (Its own coroutine, not a wrapper: one level less on every request.)"""
        path = tenant_routing_path(scope, path)
        recorder = self._answered_early(tenant_id, path, scope, proto)
        if recorder is None:
            recorder = CorsRecorder(proto, scope)
            try:
                await self._serve_tenant(tenant_id, epoch, path, scope, recorder)
            finally:
                self.metrics.observe(recorder.status)
        return recorder.status

    def _answered_early(self, tenant_id: str, path: str, scope: Scope, proto: HTTPProtocol) -> StatusRecorder | None:
        """What recorded the answer PocketBase gives before its routes (a redirect to the clean path, a CORS
        preflight), if it gives one."""
        if "//" in path or scope.method == "OPTIONS":
            early = StatusRecorder(proto)
            if answered_before_routes(tenant_id, path, scope, early):
                self.metrics.observe(early.status)
                return early
        return None

    async def _serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        try:
            slot = self.ownership.admit(tenant_id, epoch)
        except ApiError as err:
            send_error(proto, err.status, err.message, err.data, err.headers)
            return
        if slot.importing:
            send_error(proto, 503, "The tenant is being imported; retry shortly.", headers=[("retry-after", "1")])
            return
        if path == REALTIME_PATH and scope.method == "HEAD":
            # Go answers HEAD with the GET handler, body left out: the stream's head, and no client is kept.
            proto.response_empty(200, SSE_HEADERS)
            return
        if path == REALTIME_PATH and scope.method == "GET":
            # The stream needs no database and must not pin the tenant open: events open it when they come.
            realtime = self.api.realtime
            await realtime.connect(tenant_id, proto, lambda: self.ownership.serves(slot, epoch) is not None,
                                   served_key=epoch, held=realtime.holds(scope.headers.get(STREAM_HOLDER_HEADER)),
                                   address=connect_address(tenant_id, scope))
            return
        writes = scope.method not in ("GET", "HEAD", "OPTIONS")
        if writes and not self.quotas.storage_allows(tenant_id, 0):
            self.metrics.quota_rejected("storage")
            send_error(proto, 403, "The tenant's storage quota is used up.")
            return
        _, evicted = self.pool.cache.acquire(tenant_id)
        if evicted:
            self.pool.close_evicted(evicted)
        try:
            try:
                tenant = slot.tenant
                if tenant is None or slot.superseded:
                    tenant = await self.pool.open_within(tenant_id, self.pool.open_wait_seconds)
            except ApiError as err:  # the lease ran out meanwhile, or the open takes long
                send_error(proto, err.status, err.message, err.data, err.headers)
                return
            except Exception as err:  # noqa: BLE001 - answer clearly, keep the node up
                log.error("cannot open tenant %s: %r", tenant_id, err, exc_info=err)
                send_error(proto, 503, "The tenant cannot be opened right now; retry.", headers=[("retry-after", "1")])
                return
            assignment = self.ownership.serves(slot, epoch)
            if assignment is None:  # the open may have waited long: admitted again
                refusal = moved()
                send_error(proto, refusal.status, refusal.message, headers=refusal.headers)
                return
            try:
                if writes and self.replicator is not None and assignment.durability == "sync":
                    await self._handle_durably(slot, tenant, assignment, path, scope, proto)
                else:
                    await self._handle(slot, tenant, assignment, path, scope, proto)
            except TenantBusy:
                self.metrics.queue_rejected()
                send_error(proto, 429, "Too many requests for this tenant are waiting; retry shortly.",
                           headers=[("retry-after", "1")])
                return
            if writes:
                self._measure_storage(slot, tenant)
        finally:
            try:
                evicted = self.pool.cache.release(tenant_id)
                if evicted:
                    self.pool.close_evicted(evicted)
            except KeyError:
                pass  # dropped (moved or deleted) while this request ran

    def _handle(self, slot: TenantSlot, tenant: Tenant, assignment: Assignment, path: str, scope: Scope,
                proto: HTTPProtocol) -> Awaitable[None]:
        """The tenant's API, its database work on the scheduler within the tenant's time limit (the API's
        coroutine, returned to be awaited: no coroutine of its own on every request)."""
        limit_ms = assignment.time_limit_ms
        time_limit = self.request_time_limit if limit_ms is None else limit_ms / 1000
        max_bytes = self.ownership.max_bytes(slot)
        # A read, or a JSON write of a base collection's record, is tried at once on the loop (stopped before it
        # commits anything, it is thrown away and done again on a worker thread): pbfast.tenant_node.inline_tries.
        inline = ((scope.method in ("GET", "HEAD")
                   or (record_write(tenant, path, scope) and not self.api.realtime.tenant_streams(tenant.id)))
                  and not tenant.closed)

        write = scope.method not in ("GET", "HEAD")
        # A record create (record_write) while the tenant has other requests in flight: committed with the creates
        # ready in the same loop iteration (group_commit); alone, it would only wait an iteration for nobody.
        create = inline and scope.method == "POST" and self.pool.cache.pins(tenant.id) > 1

        def run(work: Callable[[], None]) -> Awaitable[None]:
            def job() -> None:
                if tenant.max_bytes != max_bytes and not tenant.closed:  # the quota changed since it was opened
                    tenant.set_max_bytes(max_bytes)
                work()

            return self.inline.run(tenant, job, inline, write=write, group=create)

        # A heavy tenant's answer goes out from its background thread (nice +10): handing it to granian wakes
        # granian's thread, and the loop that every tenant shares would wait meanwhile (benchmarks/RESULTS.md).
        return self.api.handle(tenant, path, scope, proto, run=run, time_limit=time_limit,
                               answer_from_job=may_answer_from_job)

    async def _handle_durably(self, slot: TenantSlot, tenant: Tenant, assignment: Assignment, path: str,
                              scope: Scope, proto: HTTPProtocol) -> None:
        """Durable mode: answer a successful write only once it is in the replica (RPO 0)."""
        assert self.replicator is not None
        held = HeldResponse(proto)
        await self._handle(slot, tenant, assignment, path, scope, held)
        if held.status is not None and held.status < 400:
            try:
                await self.replicator.sync(tenant.directory / DATA_DB, wait=True)
            except ReplicationError as err:
                log.warning("tenant %s: durable write not confirmed by the replica: %s", tenant.id, err)
                send_error(proto, 503, "The change was saved on the node but the replica did not confirm it; "
                                       "it will be replicated when storage is reachable.",
                           headers=[("retry-after", "2")])
                return
        held.replay(proto)

    def _measure_storage(self, slot: TenantSlot, tenant: Tenant) -> None:
        """Refresh the tenant's stored bytes after writes, at most once per second per tenant."""
        now = time.monotonic()
        if now - slot.storage_measured_at >= STORAGE_MEASURE_SECONDS:
            slot.storage_measured_at = now
            self.quotas.set_storage(tenant.id, tenant.size_bytes())
