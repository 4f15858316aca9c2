"""Validated configuration of ``pbfast serve``: which mode, which addresses, where the data lives."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Address", "ConfigError", "EngineSettings", "GatewaySettings", "Mode", "ServeConfig", "parse_address",
           "parse_address_list"]

DEFAULT_CONTROL_PLANE_ADDR = "127.0.0.1:8090"
DEFAULT_GATEWAY_ADDR = "127.0.0.1:8080"
DEFAULT_TENANT_NODE_ADDR = "127.0.0.1:8070"
DEFAULT_RAFT_BIND_ADDR = "127.0.0.1:8091"
DEFAULT_DATA_DIR = "./pb_data"
LISTEN_BACKLOG = 2048  # connections the kernel queues per listener before the server accepts them
# Requests one server process handles at once. granian's default is its backlog (2048), and an open event
# stream is a request that lasts: a node would hold only 2048 realtime clients and then stop accepting every
# other request too. What bounds the work instead: the per-tenant database queues (429) and realtime stream
# limits (--realtime-max-per-node), and the open-file limit.
MAX_CONCURRENT_REQUESTS = 262_144
DEFAULT_S3_BUCKET = "pbfast"
MIN_ADMIN_TOKEN_LENGTH = 16
DEFAULT_NODE_TIMEOUT_SECONDS = 5.0
DEFAULT_DELETE_RETENTION_HOURS = 168.0
DEFAULT_TENANT_IDLE_SECONDS = 300.0
DEFAULT_EXACT_RESTORE_HOURS = 1.0  # point-in-time restores exact to the write within this many hours
DEFAULT_RESTORE_WINDOW_HOURS = 168.0  # point-in-time restores reach back at least this far (5-minute steps)
MAX_GATEWAY_THREADS = 64
DEFAULT_DB_THREADS = 8
DEFAULT_REQUEST_TIME_LIMIT_SECONDS = 10.0
DEFAULT_TENANT_QUEUE_LIMIT = 256
DEFAULT_WORKERS = 1
MAX_WORKERS = 64
DEFAULT_REALTIME_PER_TENANT = 5_000  # open realtime (SSE) streams of one tenant on a node
DEFAULT_REALTIME_PER_NODE = 50_000


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the gateway forwards requests to remote tenant nodes.

    ``native``: the public listener is the Rust extension's, on ``threads`` worker threads; it forwards to
    remote nodes itself and hands everything else (in ``all-in-one``: every tenant request, the node being
    in-process) to the Python side. Otherwise the Python proxy on the event loop listens. The limits apply
    to both. The ``held_*`` settings bound the realtime streams the native path reads from nodes' stream
    holders (docs/realtime.md): bytes queued per stream for a client that does not read, bytes queued for all
    of them, and seconds a node may take no commands before its connection (and its streams) is dropped.
    """

    native: bool = True
    threads: int = 1
    max_body_bytes: int = 128 << 20  # PocketBase's batch limit; the node enforces each route's own
    connect_timeout: float = 1.0
    read_timeout: float = 30.0
    client_idle_timeout: float = 60.0
    access_log: bool = False
    held_stream_limit_kb: int = 4096
    held_streams_budget_mb: int = 256
    held_stream_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How a tenant node runs its tenants' SQLite work (see :mod:`pbfast.tenant_node.db_scheduler` and
    :mod:`pbfast.pocketbase.sqlite_guard`).

    ``db_threads``: worker threads shared fairly by all tenants (one tenant uses one at a time; as many
    background threads at a lower OS priority run heavy tenants' jobs while others are served);
    ``request_time_limit``: seconds of database work one request may take (0: none), unless the tenant's own
    ``requestTimeLimitMs`` says otherwise; ``queue_limit``: requests of one tenant waiting for a worker before
    more get 429; ``sqlite_memory_limit_mb``: SQLite's process-wide hard heap limit (0: none; its soft limit,
    where caches shrink, is three quarters of it); ``realtime_per_tenant``/``realtime_per_node``: open realtime
    streams allowed (more get 429, see docs/realtime.md); ``realtime_gateway_timeout``: seconds a gateway's
    multiplexed connection to the node's stream holder may take nothing before it is dropped;
    ``realtime_mux``: whether the holder offers gateways the multiplexed connection (``PBFAST_STREAM_MUX=off``:
    a connection per stream, as before the mux); ``workers``: worker processes serving tenant requests
    beside the main process (1: none, the main process serves them; see :mod:`pbfast.tenant_node.workers`),
    each with ``db_threads`` threads and its share of the memory limit.
    """

    db_threads: int = DEFAULT_DB_THREADS
    request_time_limit: float = DEFAULT_REQUEST_TIME_LIMIT_SECONDS
    queue_limit: int = DEFAULT_TENANT_QUEUE_LIMIT
    sqlite_memory_limit_mb: int = 0
    workers: int = DEFAULT_WORKERS
    realtime_per_tenant: int = DEFAULT_REALTIME_PER_TENANT
    realtime_per_node: int = DEFAULT_REALTIME_PER_NODE
    realtime_gateway_timeout: float = 30.0
    realtime_mux: bool = True


class ConfigError(ValueError):
    """A flag or combination of flags that cannot work; its message is one line for the operator."""


class Mode(enum.StrEnum):
    ALL_IN_ONE = "all-in-one"
    CONTROL_PLANE = "control-plane"
    TENANT_NODE = "tenant-node"
    GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP listen or connect address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self}"


def parse_address(value: str, flag: str) -> Address:
    """Parse ``host:port`` (``[v6]:port``; an empty host means all interfaces)."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"{flag}: expected host:port, got {value!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{flag}: port must be 1-65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as err:
            raise ConfigError(f"{flag}: invalid IPv6 address in {value!r}") from err
    elif not host:
        host = "0.0.0.0"
    elif ":" in host or any(ch.isspace() or ch in "/?#@" for ch in host):
        raise ConfigError(f"{flag}: invalid host in {value!r}")
    return Address(host, port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or host name as given to a listen flag) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address_list(value: str, flag: str) -> tuple[Address, ...]:
    """Parse a comma-separated list of ``host:port`` (at least one)."""
    items = [item for item in (part.strip() for part in value.split(",")) if item]
    if not items:
        raise ConfigError(f"{flag}: expected a comma-separated list of host:port")
    return tuple(parse_address(item, flag) for item in items)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``pbfast serve`` needs, already validated.

    ``http_addr`` is the mode's own listener: the control plane's API in ``control-plane`` and
    ``all-in-one``, the node's in ``tenant-node``, the gateway's in ``gateway``. In ``all-in-one`` the
    gateway listens on ``gateway_addr`` and the tenant node is reached in-process.
    """

    mode: Mode
    data_dir: Path
    http_addr: Address
    gateway_addr: Address | None
    node_id: str | None  # None: the id kept in the data dir (resolved when the server starts)
    node_address: str | None
    raft_bind_addr: Address | None
    raft_peers: tuple[Address, ...]
    control_plane_addrs: tuple[Address, ...]
    max_tenants: int
    s3_endpoint: str | None
    s3_bucket: str
    base_domain: str
    admin_token: str | None
    cluster_token: str | None
    node_timeout: float
    delete_retention: float
    tenant_idle_seconds: float
    log_level: int
    log_format: str = "text"  # or "json" (PB_LOG_FORMAT)
    exact_restore_hours: float = DEFAULT_EXACT_RESTORE_HOURS
    restore_window_hours: float = DEFAULT_RESTORE_WINDOW_HOURS
    gateway: GatewaySettings = GatewaySettings()
    engine: EngineSettings = EngineSettings()
    instance_id: str | None = None  # resolved with the node id (pbfast.node_identity)
    pprof_addr: Address | None = None  # the profiling listener (pbfast.profiling), off when None
