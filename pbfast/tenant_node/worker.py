"""A worker process of a multi-worker tenant node (``pbfast serve --workers=N``, N > 1): it serves tenant
requests (``/t/{id}/...`` from gateways) on the node's port, on its own event loop with its own database
threads and its own connections to the tenants' databases, and hands every other request to the main process.

Forked by the node's fork server (:mod:`pbfast.tenant_node.worker_spawner`), or, without one, started by the
main process (:mod:`pbfast.tenant_node.workers`) as ``python -m pbfast.tenant_node.worker`` with its settings as
one JSON object on stdin (:class:`WorkerSettings`; the cluster token is among them, so not in its command
line); either way with the node's shared memory and a wake-up pipe as inherited descriptors. Each worker
listens on the node's address with SO_REUSEPORT (as granian binds), so the kernel spreads connections over the
workers. It dies with the main process (the parent-death signal), and stops on SIGTERM: no new connections,
requests in flight finish (bounded), connections to the tenants closed.

Thread-safety: event loop only (the database work runs on the worker's :class:`DbScheduler` threads).
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server as EmbeddedServer

from pbfast.native_reads import attach_at_start
from pbfast.pocketbase import filesystem
from pbfast.pocketbase.filesystem.cache import DEFAULT_CACHE_BYTES
from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER
from pbfast.config import LISTEN_BACKLOG, MAX_CONCURRENT_REQUESTS
from pbfast.gc_tuning import collect_when_idle, tune_for_serving
from pbfast.http import (
    ApiError,
    Guard,
    Handler,
    HTTPProtocol,
    Request,
    Router,
    Scope,
    declares_no_body,
    discard_unread_body,
)
from pbfast.logs import component_logger, configure_logging, current_request_id
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.apis.record_auth_otp import attempts as otp_attempts
from pbfast.pocketbase.sqlite_guard import set_heap_limits
from pbfast.primitives import (
    NodeSharedMemory,
    SharedQuotas,
    SharedRateLimiter,
    SharedTenantTable,
    WorkerAcks,
    WorkerCounters,
    is_valid_tenant_id,
)
from pbfast.request_ids import WithRequestId, bind_request_id
from pbfast.tenant_node.backups import backup_location
from pbfast.tenant_node.db_scheduler import USAGE_WINDOW_SECONDS, DbScheduler
from pbfast.tenant_node.shared_state import WorkerCounter
from pbfast.tenant_node.worker_link import WorkerLink
from pbfast.tenant_node.worker_serving import WorkerServing, WorkerTenants

__all__ = ["WorkerApp", "WorkerSettings", "main"]

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
STOP_GRACE_SECONDS = 2.0
LOAD_PUBLISH_SECONDS = 1.0
ACTIVITY_SECONDS = 0.5  # how often a worker reads how many tenants the node served lately (1 s grain anyway)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What the main process tells a worker at start."""

    index: int  # 0-based; the worker's row in the shared counters and holds
    parent_pid: int
    node_id: str
    data_dir: str
    host: str
    port: int
    hub_socket: str
    node_socket: str
    shm_fd: int
    wake_fd: int
    cluster_token: str
    replicated: bool
    db_threads: int
    request_time_limit: float
    queue_limit: int
    sqlite_memory_limit_mb: int
    log_level: int
    log_format: str
    s3_bucket: str = ""
    s3_endpoint: str | None = None  # the node's file store (its replica bucket; else <data-dir>/replica)
    file_retention_seconds: float = 0.0  # deleted files are kept this long (the restore window)

    def to_json(self) -> bytes:
        return json.dumps({name: getattr(self, name) for name in self.__slots__}).encode()


class WorkerApp:
    """The RSGI app of a worker: tenant requests forwarded by gateways are served here, the rest handed over."""

    def __init__(self, settings: WorkerSettings, memory: NodeSharedMemory) -> None:
        self.settings = settings
        self.table = SharedTenantTable(memory)
        self.counters = WorkerCounters(memory)
        self.db = DbScheduler(settings.db_threads, settings.queue_limit)
        self.api = TenantApi()
        self.api.backups.location = backup_location(settings.s3_bucket, settings.s3_endpoint, Path(settings.data_dir))
        self.api.on_time_limit = self._time_limited
        self.api.password_checks.share_with(self.db)
        self.api.rate_limits.limiter = SharedRateLimiter(memory)  # one count per client for the whole node
        otp_attempts.shared = self.api.rate_limits.limiter  # so are OTP guesses
        self.link = WorkerLink(settings.hub_socket, settings.node_socket, settings.cluster_token)
        self.tenants = WorkerTenants(settings.index, Path(settings.data_dir) / "tenants", self.table,
                                     WorkerAcks(memory), self.counters, self.db, settings.replicated)
        self.api.request_logs.follow_open_tenants(self.tenants.holds_directory)  # as many as the node has open
        self.serving = WorkerServing(settings.index, self.table, SharedQuotas(memory), self.counters, self.tenants,
                                     self.api, self.db, self.link, settings.request_time_limit)
        self.woken = asyncio.Event()
        self.router: Router[Handler] = Router()
        self.router.mount("/t/{id}", self._serve_forwarded,
                          guard=Guard(self._forwarded_by_gateway, "The request requires the cluster token."))

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        request_id, bound = bind_request_id(scope)
        try:
            wrapped = WithRequestId(proto, request_id)
            if self.router.match(scope.method, scope.path).handler is None:
                await self.link.hand_over(scope, wrapped, request_id)  # the node's own routes: the main process's
            else:
                await self.router.dispatch(scope, wrapped, on_error=self._log_error)
        finally:
            current_request_id.reset(bound)

    def _time_limited(self, tenant_id: str) -> None:
        """A request was stopped by its time limit (on a database thread): counted, and published soon."""
        self.db.count_time_limited(tenant_id)
        self.serving.loads_changed = True

    def _forwarded_by_gateway(self, scope: Scope) -> bool:
        return hmac.compare_digest((scope.headers.get(CLUSTER_TOKEN_HEADER) or "").encode(),
                                   self.settings.cluster_token.encode())

    async def _serve_forwarded(self, request: Request) -> None:
        tenant_id = request.params["id"]
        epoch_text = request.header(EPOCH_HEADER) or ""
        if not is_valid_tenant_id(tenant_id) or not epoch_text.isdigit():
            raise ApiError(400, "Invalid forwarded tenant request.")
        body_read = await self.serving.serve_tenant(tenant_id, int(epoch_text), request.path, request.scope,
                                                    request.proto)
        if not body_read and not declares_no_body(request.scope):
            await discard_unread_body(request.proto)  # answered early: let a gateway still sending the body finish

    def _log_error(self, err: BaseException) -> None:
        component_logger("TenantWorker").error("request failed: %r", err, exc_info=err)

    def wake(self) -> None:
        """The main process wrote to the wake-up pipe: a tenant stopped being served."""
        try:
            os.read(self.settings.wake_fd, 4096)
        except BlockingIOError:
            pass
        self.woken.set()

    async def publish_loads(self) -> None:
        while True:
            await asyncio.sleep(LOAD_PUBLISH_SECONDS)
            self.serving.publish_loads()
            self.serving.loads_changed = False

    async def watch_activity(self) -> None:
        """Tell the database scheduler how many tenants the whole node served lately: a heavy tenant gives way
        to the others also when they were served by other workers (they share the cores)."""
        while True:
            self.db.set_node_active(len(self.table.used_since(time.monotonic() - USAGE_WINDOW_SECONDS)))
            await asyncio.sleep(ACTIVITY_SECONDS)

    async def close(self) -> None:
        await asyncio.to_thread(self.api.request_logs.close)
        await self.tenants.close_all()
        self.serving.publish_loads()
        await self.link.aclose()
        self.db.stop()


async def _report_ready(settings: WorkerSettings, counters: WorkerCounters) -> None:
    """Tell the main process once the node's address takes connections (this worker's listener is bound
    first thing when it starts serving, before the first connect here can succeed)."""
    while True:
        try:
            _, writer = await asyncio.open_connection(settings.host, settings.port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        counters.set(settings.index, WorkerCounter.READY, 1)
        return


async def _watch_parent(parent_pid: int) -> None:
    """Ends when the main process is gone (a backup for the parent-death signal): its pidfd turns readable."""
    gone = asyncio.Event()
    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, gone.set)
    try:
        await gone.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def run(settings: WorkerSettings) -> int:
    log = component_logger(f"TenantWorker{settings.index + 1}")
    memory = NodeSharedMemory.attach(settings.shm_fd)
    os.close(settings.shm_fd)  # mapped (with a descriptor of its own)
    app = WorkerApp(settings, memory)
    server = EmbeddedServer(app, address=settings.host, port=settings.port, interface=Interfaces.RSGI,
                            http=HTTPModes.http1, websockets=False, backlog=LISTEN_BACKLOG,  # see server.Listener
                            backpressure=MAX_CONCURRENT_REQUESTS, log_enabled=False)
    configure_logging(settings.log_level, settings.log_format)  # granian's constructor reconfigures logging
    tune_for_serving()
    loop = asyncio.get_running_loop()
    os.set_blocking(settings.wake_fd, False)
    loop.add_reader(settings.wake_fd, app.wake)
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    serving = asyncio.create_task(server.serve(), name="serve")
    ready = asyncio.create_task(_report_ready(settings, app.counters), name="ready")
    background = [asyncio.create_task(app.tenants.watch(app.woken), name="close-watch"),
                  asyncio.create_task(app.publish_loads(), name="loads"),
                  asyncio.create_task(app.watch_activity(), name="activity"),
                  asyncio.create_task(collect_when_idle(), name="gc-when-idle")]
    parent = asyncio.create_task(_watch_parent(settings.parent_pid), name="parent")
    stop = asyncio.create_task(stopping.wait())
    log.info("serving tenants on %s:%d (pid %d)", settings.host, settings.port, os.getpid())
    done, _ = await asyncio.wait([serving, parent, stop, *background], return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if parent in done:
        log.error("the node's main process is gone; stopping")
        exit_code = 1
    elif serving in done and serving.exception() is not None:
        log.error("serving failed: %r", serving.exception())
        exit_code = 1
    server.stop()  # type: ignore[no-untyped-call]
    for task in [*background, parent, stop, ready]:
        task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(serving), STOP_GRACE_SECONDS)
    except (TimeoutError, Exception):  # noqa: BLE001 - stopping anyway
        serving.cancel()
    try:
        await asyncio.wait_for(app.close(), STOP_GRACE_SECONDS)
    except TimeoutError:
        log.warning("connections to tenants not closed in time")
    return exit_code


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent dies, even by kill -9: a worker never serves (or holds a port) for a node
    whose main process is gone (a restarted one would share the port with it). A worker's parent is the main
    process, or the fork server (:mod:`~pbfast.tenant_node.worker_spawner`), which dies with the main process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent_pid:
        os._exit(1)


def name_process(name: str) -> None:
    """The name ps, top and /proc/<pid>/comm show (15 bytes at most): which of the node's processes this is."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15])


def main() -> int:
    """A worker started as a program of its own, its settings on stdin (when the fork server is gone)."""
    settings = WorkerSettings(**json.loads(sys.stdin.buffer.read()))
    return serve_worker(settings, settings.parent_pid)


def serve_worker(settings: WorkerSettings, parent_pid: int) -> int:
    """Run the worker in this (new) process until it stops; its exit status."""
    die_with_parent(parent_pid)
    name_process(f"pbfast-worker{settings.index + 1}")
    configure_logging(settings.log_level, settings.log_format)
    attach_at_start()  # record views read natively on apsw's SQLite (or one log line: Python serves them)
    filesystem.configure_from(Path(settings.data_dir), settings.s3_bucket, settings.s3_endpoint, DEFAULT_CACHE_BYTES,
                              settings.file_retention_seconds, cache_name=f"file-cache-worker-{settings.index}")
    if settings.sqlite_memory_limit_mb:
        set_heap_limits(settings.sqlite_memory_limit_mb * 3 // 4 << 20, settings.sqlite_memory_limit_mb << 20)
    return uvloop.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
