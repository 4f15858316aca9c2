"""``pbfast serve``: builds each mode's components and runs their HTTP listeners on one uvloop loop.

Every listener is a granian server embedded in this process's event loop (RSGI interface), so all-in-one
runs control plane, tenant node and gateway in one process and the gateway reaches the node in-process.
Background work (Raft housekeeping, node heartbeats, the gateway's route watch) runs as tasks on the same
loop. SIGINT/SIGTERM stop everything; the whole stop, to the process's exit, is bounded by
:data:`SHUTDOWN_TIMEOUT_SECONDS` (:mod:`pbfast.shutdown`): each step takes what is left of it.

A tenant node with ``--workers`` > 1 serves its tenant requests in worker processes instead
(:mod:`pbfast.tenant_node.workers`): they listen on the node's address, this process on two private Unix
sockets for what they hand over and ask. In all-in-one the node then gets a loopback port of its own, which
the gateway forwards to like to any remote node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server as EmbeddedServer

from pbfast.pocketbase import filesystem
from pbfast.pocketbase.filesystem.cache import DEFAULT_CACHE_BYTES
from pbfast.config import LISTEN_BACKLOG, MAX_CONCURRENT_REQUESTS, Address, Mode, ServeConfig, is_loopback
from pbfast.control_plane.api import ControlPlaneApi
from pbfast.control_plane.node_client import NodeClient
from pbfast.control_plane.app import ControlPlaneApp
from pbfast.control_plane.raft import RaftMember
from pbfast.control_plane.reconciler import Reconciler
from pbfast.control_plane.routes import RouteFeed
from pbfast.cp_client import ControlPlaneClient, SyncControlPlaneClient
from pbfast.gateway.app import MOVE_WAIT_SECONDS, GatewayApp, LocalNode
from pbfast.gateway.metrics import GatewayMetrics
from pbfast.gateway.native import IN_PROCESS_CAPACITY, HeldStreamLimits, NativeFrontend
from pbfast.gateway.proxy import NodeProxy, ProxyLimits
from pbfast.gateway.routes import RouteWatcher
from pbfast.gc_tuning import collect_when_idle, tune_for_serving
from pbfast.logs import component_logger, configure_logging
from pbfast.node_identity import (
    NODE_ID_FILE,
    NodeIdError,
    load_or_create_instance_id,
    load_or_create_node_id,
    lock_data_dir,
)
from pbfast.open_files import raise_open_file_limit, tenants_within
from pbfast.primitives import CircuitBreakers, RoutingTable, StreamHolder
from pbfast.profiling.app import ProfilingApp
from pbfast.shutdown import SHUTDOWN_TIMEOUT_SECONDS, StopClock
from pbfast.pocketbase.sqlite_guard import set_heap_limits
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.lease_keeper import bare_beats_over_http
from pbfast.tenant_node.membership import NodeMembership
from pbfast.tenant_node.metrics import WithNodeMetrics
from pbfast.tenant_node.backup_cron import SCHEDULE_FILE, BackupCron, BackupSchedule
from pbfast.tenant_node.backups import ScheduleHints, backup_location
from pbfast.tenant_node.replica import ReplicaStore, ReplicationError
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.shared_state import SharedState
from pbfast.tenant_node.worker import WorkerSettings
from pbfast.tenant_node.worker_hub import WorkerHub
from pbfast.tenant_node.worker_spawner import WorkerSpawner
from pbfast.tenant_node.workers import WorkerSupervisor
from pbfast.tokens import ADMIN_TOKEN_FILE, CLUSTER_TOKEN_FILE, TokenFileError, load_or_create_token

__all__ = ["SHUTDOWN_TIMEOUT_SECONDS", "StartupError", "serve"]

NATIVE_GRACE_SECONDS = 1.0
REQUEST_GRACE_SECONDS = 1.0  # what the listeners' requests still running get once the listeners stopped
# Of the stop's bound: kept for the closers after the tenants' (database threads, Litestream, Raft) and the
# exit, and for the interpreter's exit after the closers.
AFTER_TENANTS_SECONDS = 1.0
EXIT_SECONDS = 0.25
DB_STOP_SECONDS = 5.0  # the database threads' join when no stop has begun (a start-up that failed)
IDLE_CHECK_SECONDS = 15.0
EXIT_STARTUP_FAILED = 1

log = component_logger("Server")


class StartupError(RuntimeError):
    """The server cannot start; the message is one line for the operator."""


@dataclass(slots=True)
class Listener:
    component: str
    address: Address
    app: Any
    uds: Path | None = None  # listen on this Unix socket instead of ``address``
    # Only gateways (HTTP/1.1) talk to it: granian's HTTP/1-only server holds ~8 KB less per connection than
    # its auto-detecting one (an idle realtime stream is a connection held for minutes).
    http1_only: bool = False


@dataclass(slots=True)
class Components:
    """What one process runs: HTTP listeners, background tasks, and what to close at the end."""

    listeners: list[Listener] = field(default_factory=list)
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)
    on_loop: list[Callable[[asyncio.AbstractEventLoop], None]] = field(default_factory=list)
    before_stop: list[Callable[[], None]] = field(default_factory=list)
    startups: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    native: list[NativeFrontend] = field(default_factory=list)  # started once the listeners serve
    stop: StopClock = field(default_factory=StopClock)  # started by SIGINT/SIGTERM; closers read what is left


def _token(config: ServeConfig, given: str | None, file_name: str, component: str, usage: str) -> str:
    if given is not None:
        return given
    try:
        token, path, created = load_or_create_token(config.data_dir, file_name)
    except (TokenFileError, OSError) as err:
        raise StartupError(f"{file_name}: {err}") from err
    component_logger(component).info("%s %s %s (%s)", file_name.replace(".", " "),
                                     "generated and stored in" if created else "read from", path.resolve(), usage)
    return token


def _connect_address(address: Address) -> Address:
    """Where this process reaches its own listener (a wildcard bind is reached on loopback)."""
    return Address("127.0.0.1" if address.host in ("0.0.0.0", "::") else address.host, address.port)


def _control_plane(config: ServeConfig, parts: Components, admin_token: str, cluster_token: str,
                   local_nodes: dict[str, TenantNodeApp]) -> ControlPlaneApi:
    assert config.raft_bind_addr is not None
    _check_bindable(config.raft_bind_addr)
    try:
        member = RaftMember(config.raft_bind_addr, config.raft_peers, config.data_dir, cluster_token)
    except OSError as err:
        raise StartupError(f"raft: {err}") from err
    feed = RouteFeed(member.registry)
    member.registry.on_change = feed.notify_threadsafe
    node_client = NodeClient(cluster_token, dict(local_nodes))
    api = ControlPlaneApi(member, feed, node_client, node_timeout=config.node_timeout)
    hint = ("It was given with --admin-token or PBFAST_ADMIN_TOKEN." if config.admin_token is not None else
            f"This server keeps it in {(config.data_dir / ADMIN_TOKEN_FILE).resolve()}.")
    parts.listeners.append(Listener("ControlPlane", config.http_addr,
                                    ControlPlaneApp(api, admin_token, cluster_token, admin_token_hint=hint)))
    reconciler = Reconciler(member, node_timeout=config.node_timeout, delete_retention=config.delete_retention,
                            on_placed=api.push_pending_superuser)
    parts.on_loop.append(feed.attach)
    parts.before_stop.append(feed.close)
    parts.tasks.append(reconciler.run)
    parts.closers += [node_client.aclose, member.close]
    component_logger("ControlPlane").info("raft member %s, peers: %s", config.raft_bind_addr,
                                          ", ".join(map(str, config.raft_peers)) or "none (a cluster of one)")
    return api


def _tenant_node(config: ServeConfig, parts: Components, cluster_token: str, cp_addrs: tuple[Address, ...],
                 address: str) -> tuple[TenantNodeApp, NodeMembership]:
    """The node and its membership; a remote control plane gets the lease keeper's bare heartbeats over HTTP
    (all-in-one hands its own control plane to :meth:`NodeMembership.keep_lease_beside_loop` instead)."""
    store = ReplicaStore(config.s3_bucket, config.s3_endpoint, config.data_dir / "replica")
    filesystem.configure_from(config.data_dir, config.s3_bucket, config.s3_endpoint, DEFAULT_CACHE_BYTES,
                              retention_seconds=config.restore_window_hours * 3600)
    replicator = Replicator(config.data_dir / "litestream", store, exact_restore_hours=config.exact_restore_hours,
                            restore_window_hours=config.restore_window_hours)
    engine = config.engine
    set_heap_limits(engine.sqlite_memory_limit_mb * 3 // 4 << 20, engine.sqlite_memory_limit_mb << 20)
    assert config.node_id is not None  # resolved before the components are built
    shared = SharedState.create(config.max_tenants, engine.workers) if engine.workers > 1 else None
    node = TenantNodeApp(config.node_id, config.max_tenants, cluster_token, config.data_dir, replicator,
                         engine=engine, shared=shared)
    location = backup_location(config.s3_bucket, config.s3_endpoint, config.data_dir)
    node.api.backups.location = location

    async def clean_leftovers() -> None:
        await asyncio.to_thread(node.clean_leftovers)

    parts.startups += [clean_leftovers, replicator.start]
    client = ControlPlaneClient(cp_addrs, cluster_token)
    membership = NodeMembership(client, node, address, config.max_tenants, instance_id=config.instance_id)
    if config.mode is Mode.TENANT_NODE:
        keeper_client = SyncControlPlaneClient(cp_addrs, cluster_token)  # the keeper thread's own
        membership.keep_lease_beside_loop(bare_beats_over_http(keeper_client, config.node_id))
        parts.closers.append(keeper_client.close)

    async def close_idle_tenants() -> None:
        while True:
            await asyncio.sleep(min(IDLE_CHECK_SECONDS, config.tenant_idle_seconds / 2))
            try:
                node.close_idle(config.tenant_idle_seconds)
            except Exception:  # noqa: BLE001 - idle closing must go on
                component_logger("TenantNode").exception("closing idle tenants failed")

    # Scheduled backups (backups.cron): the schedule the node learned is kept in its data dir.
    schedule = BackupSchedule(config.data_dir / SCHEDULE_FILE)
    backup_cron = BackupCron(schedule, node.api.backups, node.pool, ScheduleHints(location))
    parts.tasks += [membership.run, close_idle_tenants, backup_cron.run]
    parts.closers.insert(0, schedule.close)  # closers run in reverse: after the tenants' closes learned theirs
    _stream_holder(config, parts, node, cluster_token)
    parts.before_stop.append(node.api.realtime.end_all)  # realtime streams end first: nothing waits for them
    clock = parts.stop
    parts.closers += [replicator.stop, client.aclose,  # run in reverse order, bounded by the stop's clock
                      lambda: node.db.stop(min(DB_STOP_SECONDS, clock.left(EXIT_SECONDS))),
                      lambda: node.close_all(finish_by=clock.deadline - AFTER_TENANTS_SECONDS),
                      node.api.request_logs.close]
    return node, membership


def _stream_holder(config: ServeConfig, parts: Components, node: TenantNodeApp, cluster_token: str) -> None:
    """The node's native holder of the realtime streams gateways send it (pbfast.pocketbase.realtime.held), on
    an ephemeral port of the node's host (loopback in all-in-one: only its own gateway reads it)."""
    host = "127.0.0.1" if config.mode is Mode.ALL_IN_ONE else config.http_addr.host
    try:
        holder = StreamHolder(host, 0, cluster_token, mux=config.engine.realtime_mux,
                              gateway_timeout_seconds=config.engine.realtime_gateway_timeout)
    except OSError as err:
        raise StartupError(f"realtime stream holder: {err}") from err
    hub = node.api.realtime
    parts.on_loop.append(lambda loop: hub.attach_holder(holder, loop))
    parts.closers.insert(0, holder.close)  # closers run in reverse: the last, once the streams were ended
    parts.closers.insert(0, hub.detach_holder)


def _node_workers(config: ServeConfig, parts: Components, node: TenantNodeApp, cluster_token: str,
                  listen: Address, spawner: WorkerSpawner | None) -> None:
    """A node's worker processes on ``listen`` (forked by ``spawner``); this process serves what they hand over
    and ask on two Unix sockets in a private directory (mode 0700)."""
    assert node.shared is not None and config.node_id is not None
    engine = config.engine
    private = Path(tempfile.mkdtemp(prefix="pbfast-node-"))
    node_socket, hub_socket = private / "node.sock", private / "hub.sock"
    # Checked for bindability as the node's address (in all-in-one: the control plane's, checked anyway).
    parts.listeners.append(Listener("TenantNode", config.http_addr, node, uds=node_socket))
    parts.listeners.append(Listener("TenantNode", config.http_addr, WorkerHub(node, cluster_token), uds=hub_socket))
    memory_mb = max(64, engine.sqlite_memory_limit_mb // engine.workers) if engine.sqlite_memory_limit_mb else 0
    queue_limit = max(1, engine.queue_limit // engine.workers)  # a tenant's waiting requests, over all workers
    data_dir = str(config.data_dir.resolve())
    node_id = config.node_id

    def settings_for(index: int, shm_fd: int, wake_fd: int) -> WorkerSettings:
        return WorkerSettings(
            index=index, parent_pid=os.getpid(), node_id=node_id, data_dir=data_dir, host=listen.host,
            port=listen.port, hub_socket=str(hub_socket), node_socket=str(node_socket), shm_fd=shm_fd,
            wake_fd=wake_fd, cluster_token=cluster_token, replicated=node.replicator is not None,
            db_threads=engine.db_threads, request_time_limit=engine.request_time_limit,
            queue_limit=queue_limit, sqlite_memory_limit_mb=memory_mb, log_level=config.log_level,
            log_format=config.log_format, s3_bucket=config.s3_bucket, s3_endpoint=config.s3_endpoint,
            file_retention_seconds=config.restore_window_hours * 3600)

    supervisor = WorkerSupervisor(engine.workers, node.shared, settings_for, spawner)
    node.metrics.workers = lambda: (supervisor.running, supervisor.restarts)
    # Listening before any listener here serves (an all-in-one's gateway forwards to them) or the node registers.
    parts.startups += [supervisor.start, supervisor.ready]
    parts.tasks.append(supervisor.run)
    if spawner is not None:
        parts.closers.append(spawner.close)
    parts.closers.append(supervisor.stop)  # closers run in reverse: the workers stop before the tenants close
    parts.closers.insert(0, lambda: shutil.rmtree(private, ignore_errors=True))


NODE_PORT_FILE = "node-loopback.port"


def _reserve_loopback_port(data_dir: Path) -> socket.socket:
    """A loopback port for an all-in-one's node workers: bound with SO_REUSEPORT, never listening, so the
    workers can bind it too while no other program takes it. The port of the last run when it is free (kept in
    the data dir): the node's address stays the same across restarts, so the routes the control plane kept
    lead to it at once (another address is unreachable until the node registered again)."""
    remembered = data_dir / NODE_PORT_FILE
    try:
        wanted = int(remembered.read_text().strip())
    except (OSError, ValueError):
        wanted = 0
    if wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # without SO_REUSEPORT: nobody's?
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last run's TIME_WAIT leftovers
            try:
                probe.bind(("127.0.0.1", wanted))
            except OSError:
                wanted = 0
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind(("127.0.0.1", wanted))
    except OSError:
        reservation.bind(("127.0.0.1", 0))
    try:
        remembered.write_text(f"{reservation.getsockname()[1]}\n")
    except OSError as err:
        log.warning("cannot keep the node's loopback port in %s: %s", remembered, err)
    return reservation


def _gateway(config: ServeConfig, parts: Components, cluster_token: str, cp_addrs: tuple[Address, ...],
             address: Address, local_nodes: dict[str, LocalNode] | None = None) -> None:
    """The gateway: route watch, the proxy to remote nodes, and the in-process hop to ``local_nodes``.

    With the native data path (the default) the public listener is the Rust server, which reads request
    targets as PocketBase does (rust/src/gateway/target.rs), and the Python app listens on a private Unix
    socket for what the native side hands over (in all-in-one: every tenant request)."""
    settings = config.gateway
    client = ControlPlaneClient(cp_addrs, cluster_token)
    routes = RoutingTable(config.base_domain)
    watcher = RouteWatcher(client, routes)
    metrics = GatewayMetrics()
    limits = ProxyLimits(max_body_bytes=settings.max_body_bytes, connect_timeout_seconds=settings.connect_timeout,
                         read_timeout_seconds=settings.read_timeout,
                         client_idle_seconds=settings.client_idle_timeout)
    breakers = CircuitBreakers(limits.breaker_failures, limits.breaker_cooldown_seconds, 1)
    proxy = NodeProxy(cluster_token, limits, metrics, breakers)
    if settings.native:
        held = HeldStreamLimits(stream_limit_bytes=settings.held_stream_limit_kb << 10,
                                budget_bytes=settings.held_streams_budget_mb << 20,
                                timeout_seconds=settings.held_stream_timeout)
        frontend = NativeFrontend(address, routes, breakers, cluster_token, limits, settings.threads,
                                  MOVE_WAIT_SECONDS, access_log=settings.access_log, held=held,
                                  in_process_capacity=IN_PROCESS_CAPACITY if local_nodes else None)
        app = GatewayApp(watcher, local_nodes, proxy, metrics, metrics_token=cluster_token, trust_client_header=True,
                         native_stats=frontend.stats)
        frontend.dispatch_to(app.__rsgi__)  # plain requests skip the Unix socket (pbfast.gateway.in_process)
        parts.on_loop.append(frontend.attach)
        parts.listeners.append(Listener("Gateway", address, app, uds=frontend.socket_path, http1_only=True))
        parts.native.append(frontend)
        parts.tasks.append(frontend.run_logs)
        parts.closers.append(frontend.close)
    else:
        parts.listeners.append(Listener("Gateway", address, GatewayApp(watcher, local_nodes, proxy, metrics,
                                                                       metrics_token=cluster_token,
                                                                       access_log=settings.access_log)))
    parts.tasks.append(watcher.run)
    parts.closers += [client.aclose, proxy.aclose]


def build_components(config: ServeConfig, spawner: WorkerSpawner | None = None) -> Components:
    """The listeners, tasks and closers of ``config.mode`` (``spawner``: forks a node's worker processes)."""
    parts = Components()
    tokens = [config.cluster_token] if config.cluster_token is not None else []  # may read profiles remotely
    if config.mode is Mode.CONTROL_PLANE:
        assert config.cluster_token is not None
        admin = _token(config, config.admin_token, ADMIN_TOKEN_FILE, "ControlPlane",
                       "send it as 'Authorization: Bearer <token>'")
        tokens.append(admin)
        _control_plane(config, parts, admin, config.cluster_token, {})
    elif config.mode is Mode.TENANT_NODE:
        assert config.cluster_token is not None and config.node_address is not None
        node, _ = _tenant_node(config, parts, config.cluster_token, config.control_plane_addrs, config.node_address)
        if config.engine.workers > 1:
            _node_workers(config, parts, node, config.cluster_token, config.http_addr, spawner)
        else:
            parts.listeners.append(Listener("TenantNode", config.http_addr, node, http1_only=True))
    elif config.mode is Mode.GATEWAY:
        assert config.cluster_token is not None
        _gateway(config, parts, config.cluster_token, config.control_plane_addrs, config.http_addr)
    else:
        assert config.gateway_addr is not None
        admin = _token(config, config.admin_token, ADMIN_TOKEN_FILE, "ControlPlane",
                       "send it as 'Authorization: Bearer <token>'")
        cluster = _token(config, config.cluster_token, CLUSTER_TOKEN_FILE, "ControlPlane",
                         "give it to nodes and gateways that join this cluster")
        tokens = [cluster, admin]
        own_cp = (_connect_address(config.http_addr),)
        workers = config.engine.workers
        if workers > 1:  # the workers serve on a loopback port of the node's own, the gateway forwards there
            reservation = _reserve_loopback_port(config.data_dir)
            parts.closers.insert(0, reservation.close)
            node_address = Address("127.0.0.1", reservation.getsockname()[1])
            local_address = node_address.url
        else:
            local_address = f"local://{config.node_id}"
        node, membership = _tenant_node(config, parts, cluster, own_cp, local_address)
        control_plane = _control_plane(config, parts, admin, cluster, {local_address: node} if workers == 1 else {})
        node_id = config.node_id
        assert node_id is not None
        # Its own control plane's listener is on the same (busy) loop: the lease keeper goes to it directly.
        membership.keep_lease_beside_loop(
            lambda heartbeat, timeout: control_plane.bare_heartbeat(node_id, heartbeat, timeout))
        # The node has no public listener of its own here: its /metrics is on the control plane's listener.
        parts.listeners[-1].app = WithNodeMetrics(parts.listeners[-1].app, node)
        node.metrics_tokens.append(admin)
        _gateway(config, parts, cluster, own_cp, config.gateway_addr,
                 {local_address: node.serve_tenant} if workers == 1 else None)
        if workers > 1:
            _node_workers(config, parts, node, cluster, node_address, spawner)
    if config.pprof_addr is not None:
        _profiling(config, config.pprof_addr, parts, tokens)
    return parts


def _profiling(config: ServeConfig, address: Address, parts: Components, tokens: list[str]) -> None:
    """The profiling listener: open on loopback; elsewhere it takes the cluster (or admin) token."""
    local = is_loopback(address.host)
    if not local:
        component_logger("Profiling").warning(
            "the profiling listener %s is not on loopback: every request must carry the cluster token "
            "(docs/security.md)", address)
    app = ProfilingApp(f"pbfast {config.mode.value} {config.node_id}", None if local else tokens,
                       _connect_address(address).url)
    parts.listeners.append(Listener("Profiling", address, app))
    parts.closers.append(app.close)


def _check_bindable(address: Address) -> None:
    """Fail fast when ``address`` is taken or unavailable.

    granian binds with SO_REUSEPORT, so a second pbfast on the same port would silently share it with the
    first; a probe bind without SO_REUSEPORT fails on a port someone already listens on.
    """
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            probe.bind((address.host, address.port))
        except OSError as err:
            raise StartupError(f"cannot listen on {address}: {err.strerror or err}") from err


def _embedded_server(listener: Listener) -> EmbeddedServer:
    server = EmbeddedServer(
        listener.app,
        address=listener.address.host,
        port=listener.address.port,
        uds=listener.uds,
        interface=Interfaces.RSGI,
        http=HTTPModes.http1 if listener.http1_only else HTTPModes.auto,
        websockets=False,
        backlog=LISTEN_BACKLOG,
        backpressure=MAX_CONCURRENT_REQUESTS,
        log_enabled=False,
    )
    component = component_logger(listener.component)
    if listener.uds is None:
        server.on_startup(lambda: component.info("listening on %s", listener.address.url))
    else:
        server.on_startup(lambda: component.debug("handed-over requests on %s", listener.uds))
    return server


async def _close(parts: Components) -> None:
    for close in reversed(parts.closers):
        try:
            outcome = close()
            if asyncio.iscoroutine(outcome):
                await outcome
        except Exception:  # noqa: BLE001 - close everything else anyway
            log.exception("error while closing")


def _claim_identity(config: ServeConfig) -> tuple[ServeConfig, IO[str] | None]:
    """Lock the data dir (one process per data dir) and resolve the node id (``--node-id``, else the one kept in
    the data dir) and instance id (pbfast.node_identity); the lock is held while the returned file is open."""
    if config.mode is Mode.GATEWAY:
        return config, None
    try:
        lock = lock_data_dir(config.data_dir)
    except (NodeIdError, OSError) as err:
        raise StartupError(str(err)) from err
    try:
        node_id = config.node_id or load_or_create_node_id(config.data_dir)
        instance_id = load_or_create_instance_id(config.data_dir)
    except (NodeIdError, OSError) as err:
        lock.close()
        raise StartupError(f"node id: {err}") from err
    if config.node_id is None:
        log.info("node id %s (kept in %s)", node_id, config.data_dir / NODE_ID_FILE)
    return dataclasses.replace(config, node_id=node_id, instance_id=instance_id), lock


async def _run(config: ServeConfig, spawner: WorkerSpawner | None) -> int:
    config, lock = _claim_identity(config)
    try:
        return await _run_claimed(config, spawner)
    finally:
        if lock is not None:
            lock.close()


async def _run_claimed(config: ServeConfig, spawner: WorkerSpawner | None) -> int:
    parts = build_components(config, spawner)
    try:
        for listener in parts.listeners:
            _check_bindable(listener.address)
    except StartupError:
        await _close(parts)
        raise
    try:
        for startup in parts.startups:
            await startup()
    except (OSError, ReplicationError) as err:
        await _close(parts)
        raise StartupError(str(err)) from err
    servers = [_embedded_server(listener) for listener in parts.listeners]
    configure_logging(config.log_level, config.log_format)  # granian's constructor reconfigures logging; take it back
    log.info("starting %s (data dir %s)", config.mode.value, config.data_dir.resolve())

    tune_for_serving()

    loop = asyncio.get_running_loop()
    for attach in parts.on_loop:
        attach(loop)
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    serving = [asyncio.create_task(server.serve(), name=listener.component)
               for server, listener in zip(servers, parts.listeners)]
    background = [asyncio.create_task(task(), name=task.__qualname__) for task in parts.tasks]
    background.append(asyncio.create_task(collect_when_idle(), name="gc-when-idle"))
    background += [asyncio.create_task(_start_native(frontend), name="Gateway") for frontend in parts.native]
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([*serving, *background, stop_wait], return_when=asyncio.FIRST_COMPLETED)

    exit_code = 0
    for task in done:
        if task is stop_wait:
            log.info("shutting down")
            continue
        error = task.exception()
        log.error("%s failed: %s", task.get_name(), error or "stopped unexpectedly")
        exit_code = EXIT_STARTUP_FAILED
    stop_wait.cancel()
    clock = parts.stop
    clock.start(SHUTDOWN_TIMEOUT_SECONDS, exit_code)

    for task in background:
        task.cancel()
    for prepare in parts.before_stop:
        prepare()
    for frontend in parts.native:  # first, while the Python side still answers what it was handed
        try:
            await frontend.stop(min(NATIVE_GRACE_SECONDS, clock.left(AFTER_TENANTS_SECONDS)))
        except Exception:  # noqa: BLE001 - stop everything else anyway
            log.exception("stopping the gateway's native data path failed")
    for server in servers:
        server.stop()  # type: ignore[no-untyped-call]  # granian's embedded server is untyped
    pending = [task for task in [*serving, *background] if not task.done()]
    if pending:
        _, still_running = await asyncio.wait(
            pending, timeout=min(REQUEST_GRACE_SECONDS, clock.left(AFTER_TENANTS_SECONDS)))
        for task in still_running:
            task.cancel()
        if still_running:
            log.warning("forced shutdown of %s", ", ".join(task.get_name() for task in still_running))
    try:
        await asyncio.wait_for(_close(parts), clock.left(EXIT_SECONDS))
    except TimeoutError:
        log.warning("closing took too long; stopped anyway")
    log.info("stopped")
    return exit_code


async def _start_native(frontend: NativeFrontend) -> None:
    """Start the native listener once the Python side serves, then keep the task alive until cancelled
    (its ending early means the start failed)."""
    try:
        await frontend.start()
    except (OSError, TimeoutError) as err:
        raise StartupError(f"gateway: {err}") from err
    await asyncio.Event().wait()


def serve(config: ServeConfig) -> int:
    """Run the servers of ``config.mode`` until SIGINT/SIGTERM; returns the process exit status."""
    configure_logging(config.log_level, config.log_format)
    open_files = raise_open_file_limit()  # before the workers and Litestream start: they inherit it
    if config.mode in (Mode.TENANT_NODE, Mode.ALL_IN_ONE) and tenants_within(open_files) < config.max_tenants:
        log.warning("the open-file limit (%d) holds about %d open tenants, fewer than --max-tenants=%d: raise the "
                    "hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-tenants", open_files,
                    tenants_within(open_files), config.max_tenants)
    # Forked before any thread or event loop runs here: it forks the node's workers (worker_spawner).
    spawner = WorkerSpawner.start() if config.engine.workers > 1 and config.mode in (
        Mode.TENANT_NODE, Mode.ALL_IN_ONE) else None
    try:
        return uvloop.run(_run(config, spawner))
    except StartupError as err:
        log.error("cannot start: %s", err)
        return EXIT_STARTUP_FAILED
    finally:
        if spawner is not None:
            spawner.close()
