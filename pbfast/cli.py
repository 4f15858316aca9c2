"""The ``pbfast`` command line: ``pbfast --version``, ``pbfast serve --mode=...``, ``pbfast doctor`` and the
operator commands (``pbfast tenant ...``).

A wrong flag or combination prints one line (``pbfast: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pbfast import __version__
from pbfast.config import (
    DEFAULT_CONTROL_PLANE_ADDR,
    DEFAULT_DATA_DIR,
    DEFAULT_DELETE_RETENTION_HOURS,
    DEFAULT_EXACT_RESTORE_HOURS,
    DEFAULT_RESTORE_WINDOW_HOURS,
    DEFAULT_TENANT_IDLE_SECONDS,
    DEFAULT_GATEWAY_ADDR,
    DEFAULT_REALTIME_PER_NODE,
    DEFAULT_REALTIME_PER_TENANT,
    DEFAULT_NODE_TIMEOUT_SECONDS,
    DEFAULT_RAFT_BIND_ADDR,
    DEFAULT_S3_BUCKET,
    DEFAULT_TENANT_NODE_ADDR,
    MAX_GATEWAY_THREADS,
    MIN_ADMIN_TOKEN_LENGTH,
    DEFAULT_DB_THREADS,
    DEFAULT_REQUEST_TIME_LIMIT_SECONDS,
    DEFAULT_TENANT_QUEUE_LIMIT,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    Address,
    ConfigError,
    EngineSettings,
    GatewaySettings,
    Mode,
    ServeConfig,
    parse_address,
    parse_address_list,
)
from pbfast.logs import parse_log_format, parse_log_level
from pbfast.node_capacity import MAX_DEFAULT, MIN_DEFAULT, default_max_tenants
from pbfast.operator_cli import add_operator_commands, run_operator_command
from pbfast.primitives import is_valid_tenant_id

__all__ = ["build_serve_config", "main"]

EXIT_USAGE = 2

# Flags (argparse dest names) that only make sense in some modes; giving one elsewhere is an error.
_MODE_FLAGS: dict[str, frozenset[Mode]] = {
    "gateway_addr": frozenset({Mode.ALL_IN_ONE}),
    "raft_bind_addr": frozenset({Mode.ALL_IN_ONE, Mode.CONTROL_PLANE}),
    "raft_peers": frozenset({Mode.CONTROL_PLANE}),
    "node_timeout": frozenset({Mode.ALL_IN_ONE, Mode.CONTROL_PLANE}),
    "delete_retention_hours": frozenset({Mode.ALL_IN_ONE, Mode.CONTROL_PLANE}),
    "tenant_idle_seconds": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "exact_restore_hours": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "restore_window_hours": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "admin_token": frozenset({Mode.ALL_IN_ONE, Mode.CONTROL_PLANE}),
    "control_plane_addrs": frozenset({Mode.TENANT_NODE, Mode.GATEWAY}),
    "node_address": frozenset({Mode.TENANT_NODE}),
    "max_tenants": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "s3_endpoint": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE, Mode.CONTROL_PLANE}),
    "s3_bucket": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE, Mode.CONTROL_PLANE}),
    "base_domain": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "data_dir": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE, Mode.CONTROL_PLANE}),
    "node_id": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE, Mode.CONTROL_PLANE}),
    "gateway_data_path": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_threads": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_max_body_bytes": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_connect_timeout": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_read_timeout": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_client_idle_timeout": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_access_log": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_held_stream_limit_kb": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_held_streams_budget_mb": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "gateway_held_stream_timeout": frozenset({Mode.ALL_IN_ONE, Mode.GATEWAY}),
    "db_threads": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "workers": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "request_time_limit": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "tenant_queue_limit": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "sqlite_memory_limit_mb": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "realtime_max_per_tenant": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "realtime_max_per_node": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
    "realtime_gateway_timeout": frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE}),
}

_DEFAULT_HTTP_ADDR = {
    Mode.ALL_IN_ONE: DEFAULT_CONTROL_PLANE_ADDR,
    Mode.CONTROL_PLANE: DEFAULT_CONTROL_PLANE_ADDR,
    Mode.TENANT_NODE: DEFAULT_TENANT_NODE_ADDR,
    Mode.GATEWAY: DEFAULT_GATEWAY_ADDR,
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"pbfast: error: {message} (see 'pbfast {self._subcommand()}--help')\n")

    def _subcommand(self) -> str:
        words = self.prog.split()[1:]
        return " ".join(words) + " " if words else ""


def _build_parser() -> _Parser:
    parser = _Parser(prog="pbfast", description="Many PocketBase-compatible backends as one service.")
    parser.add_argument("--version", action="version", version=f"pbfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = commands.add_parser("serve", help="run a server (all-in-one by default)")
    serve.add_argument(
        "--mode", choices=[mode.value for mode in Mode], default=Mode.ALL_IN_ONE.value,
        help="what this process runs (default: all-in-one)",
    )
    serve.add_argument("--data-dir", help=f"where state lives (default: {DEFAULT_DATA_DIR})")
    serve.add_argument("--http-addr", help="this mode's HTTP listen address (control plane in all-in-one)")
    serve.add_argument("--gateway-addr", help=f"all-in-one: the gateway's address (default {DEFAULT_GATEWAY_ADDR})")
    serve.add_argument("--s3-endpoint", help="S3 endpoint URL (default: embedded local object store)")
    serve.add_argument("--s3-bucket", help=f"S3 bucket (default: {DEFAULT_S3_BUCKET})")
    serve.add_argument("--node-id", help="this member's id, a DNS label (default: the one kept in <data-dir>/node.id, "
                                         "made from the host name on first start)")
    serve.add_argument("--raft-bind-addr", help=f"control plane's Raft address (default {DEFAULT_RAFT_BIND_ADDR})")
    serve.add_argument("--raft-peers", help="control-plane: the other members' Raft host:port, comma-separated")
    serve.add_argument("--cluster-token", help="shared secret of one cluster's processes (or PBFAST_CLUSTER_TOKEN)")
    serve.add_argument("--node-timeout", type=float,
                       help=f"seconds without heartbeat before a node is down (default {DEFAULT_NODE_TIMEOUT_SECONDS:g})")
    serve.add_argument("--delete-retention-hours", type=float,
                       help=f"keep a deleted tenant's replica (and reserve its id) this long "
                            f"(default {DEFAULT_DELETE_RETENTION_HOURS:g})")
    serve.add_argument("--tenant-idle-seconds", type=float,
                       help=f"close a tenant unused this long (default {DEFAULT_TENANT_IDLE_SECONDS:g})")
    serve.add_argument("--exact-restore-hours", type=float,
                       help=f"point-in-time restores are exact to the write within this many hours "
                            f"(default {DEFAULT_EXACT_RESTORE_HOURS:g}; costs ~70 MB of local disk and ~450 S3 "
                            f"LISTs an hour per continuously written tenant per hour kept)")
    serve.add_argument("--restore-window-hours", type=float,
                       help=f"point-in-time restores reach back at least this far, in 5-minute steps beyond the "
                            f"exact hours (default {DEFAULT_RESTORE_WINDOW_HOURS:g})")
    serve.add_argument("--control-plane-addrs", help="comma-separated control plane host:port list")
    serve.add_argument("--node-address", help="tenant-node: address gateways use to reach this node")
    serve.add_argument("--max-tenants", type=int, help="open tenants per node (default: what a quarter of the "
                       f"memory at 2 MiB each and the open-file limit hold, {MIN_DEFAULT}-{MAX_DEFAULT})")
    serve.add_argument("--base-domain", help="resolve tenants from Host {id}.<base-domain> too")
    serve.add_argument("--workers",
                       help=f"tenant node: worker processes serving tenant requests beside the main process, or "
                            f"'auto' (usable CPUs); 1: one process does everything (or PBFAST_WORKERS; default {DEFAULT_WORKERS})")
    serve.add_argument("--db-threads", type=int,
                       help=f"threads running tenants' SQLite work, shared fairly (default {DEFAULT_DB_THREADS})")
    serve.add_argument("--request-time-limit", type=float,
                       help=f"seconds of database work one request may take before it is stopped with a 400; 0: no "
                            f"limit (default {DEFAULT_REQUEST_TIME_LIMIT_SECONDS:g}; a tenant's requestTimeLimitMs "
                            f"overrides it)")
    serve.add_argument("--tenant-queue-limit", type=int,
                       help=f"requests of one tenant waiting for a database thread before more get 429 "
                            f"(default {DEFAULT_TENANT_QUEUE_LIMIT})")
    serve.add_argument("--sqlite-memory-limit-mb", type=int,
                       help="SQLite's process-wide heap limit in MiB; 0: none (default: half the machine's memory)")
    serve.add_argument("--realtime-max-per-tenant", type=int,
                       help=f"open realtime (SSE) streams of one tenant on a node before more get 429 "
                            f"(default {DEFAULT_REALTIME_PER_TENANT})")
    serve.add_argument("--realtime-max-per-node", type=int,
                       help=f"open realtime (SSE) streams on a node before more get 429 "
                            f"(default {DEFAULT_REALTIME_PER_NODE})")
    serve.add_argument("--realtime-gateway-timeout", type=float,
                       help="seconds a gateway's multiplexed connection to the node's realtime streams may take "
                            "nothing before it is dropped and its streams end (default 30)")
    serve.add_argument("--gateway-data-path", choices=("native", "python"),
                       help="gateway: forward in the Rust extension (native, the default) or in Python")
    serve.add_argument("--gateway-threads", type=int,
                       help="gateway: worker threads of the native data path (default: usable CPUs, at most 8)")
    serve.add_argument("--gateway-max-body-bytes", type=int,
                       help="largest request body forwarded (default 128 MiB, PocketBase's batch limit)")
    serve.add_argument("--gateway-connect-timeout", type=float,
                       help="seconds to connect to a tenant node (default 1)")
    serve.add_argument("--gateway-read-timeout", type=float,
                       help="seconds to wait for a tenant node's answer and each piece of it (default 30; "
                            "event streams have none)")
    serve.add_argument("--gateway-client-idle-timeout", type=float,
                       help="seconds a client may stay silent mid-request or idle between requests (default 60)")
    serve.add_argument("--gateway-access-log", action="store_const", const=True,
                       help="log one line per gateway request (off by default)")
    serve.add_argument("--gateway-held-stream-limit-kb", type=int,
                       help="KiB a realtime stream read from a node may have queued for a client that does not "
                            "read before it is dropped (default 4096)")
    serve.add_argument("--gateway-held-streams-budget-mb", type=int,
                       help="MiB queued for all such streams; past it the largest are dropped (default 256)")
    serve.add_argument("--gateway-held-stream-timeout", type=float,
                       help="seconds a node's multiplexed realtime connection may take nothing before it is "
                            "dropped and its streams end (default 30)")
    serve.add_argument("--admin-token", help="control plane admin token (or PBFAST_ADMIN_TOKEN)")
    serve.add_argument("--pprof-addr",
                       help="serve pprof profiles (/debug/pprof/) on this host:port (off by default; loopback "
                            "unless you must: elsewhere every request needs the cluster token)")
    serve.add_argument("--debug", action="store_true", help="log at DEBUG level")
    doctor = commands.add_parser("doctor", help="check that this installation has what a mode needs")
    doctor.add_argument("--mode", choices=[mode.value for mode in Mode],
                        help="check only what this mode needs (default: every mode's needs)")
    add_operator_commands(commands)
    return parser


def _check_token(token: str, what: str) -> None:
    if len(token) < MIN_ADMIN_TOKEN_LENGTH or not token.isprintable() or any(ch.isspace() for ch in token):
        raise ConfigError(f"{what} must be at least {MIN_ADMIN_TOKEN_LENGTH} printable characters without spaces")


def build_serve_config(args: argparse.Namespace, environ: dict[str, str]) -> ServeConfig:
    """Validate parsed ``serve`` flags plus the environment into a :class:`ServeConfig`."""
    mode = Mode(args.mode)
    for dest, modes in _MODE_FLAGS.items():
        if getattr(args, dest) is not None and mode not in modes:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to --mode={mode.value}")

    if args.debug:
        log_level = parse_log_level("DEBUG")
    else:
        try:
            log_level = parse_log_level(environ.get("PB_LOG_LEVEL", "INFO"))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    try:
        log_format = parse_log_format(environ.get("PB_LOG_FORMAT", "text"))
    except ValueError as err:
        raise ConfigError(str(err)) from err

    node_id = args.node_id  # None: the id kept in the data dir (pbfast.node_identity)
    if node_id is not None and not is_valid_tenant_id(node_id):
        raise ConfigError(f"--node-id must be a DNS label (lowercase letters, digits, '-'), got {node_id!r}")

    max_tenants = default_max_tenants() if args.max_tenants is None else args.max_tenants
    if max_tenants < 1:
        raise ConfigError(f"--max-tenants must be at least 1, got {max_tenants}")

    control_plane_addrs: tuple[Address, ...] = ()
    if mode in (Mode.TENANT_NODE, Mode.GATEWAY):
        if not args.control_plane_addrs:
            raise ConfigError(f"--mode={mode.value} needs --control-plane-addrs")
        control_plane_addrs = parse_address_list(args.control_plane_addrs, "--control-plane-addrs")

    s3_endpoint = args.s3_endpoint
    if s3_endpoint is not None and not s3_endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--s3-endpoint must be an http:// or https:// URL, got {s3_endpoint!r}")
    s3_bucket = args.s3_bucket or DEFAULT_S3_BUCKET
    if not 3 <= len(s3_bucket) <= 63:
        raise ConfigError(f"--s3-bucket must be 3-63 characters, got {s3_bucket!r}")

    base_domain = (args.base_domain or "").strip().lower().strip(".")
    if base_domain and not all(is_valid_tenant_id(label) for label in base_domain.split(".")):
        raise ConfigError(f"--base-domain must be a domain name, got {args.base_domain!r}")

    admin_token = None
    if mode in (Mode.ALL_IN_ONE, Mode.CONTROL_PLANE):
        admin_token = args.admin_token or environ.get("PBFAST_ADMIN_TOKEN") or None
        if admin_token is not None:
            _check_token(admin_token, "the admin token")

    raft_peers: tuple[Address, ...] = ()
    if args.raft_peers:
        raft_peers = parse_address_list(args.raft_peers, "--raft-peers")
        if admin_token is None:
            raise ConfigError("a multi-member control plane needs --admin-token (the same on every member)")

    cluster_token = args.cluster_token or environ.get("PBFAST_CLUSTER_TOKEN") or None
    if cluster_token is not None:
        _check_token(cluster_token, "the cluster token")
    elif mode is not Mode.ALL_IN_ONE:
        raise ConfigError(f"--mode={mode.value} needs --cluster-token (or PBFAST_CLUSTER_TOKEN), "
                          "the same on every process of the cluster")

    node_timeout = DEFAULT_NODE_TIMEOUT_SECONDS if args.node_timeout is None else args.node_timeout
    if not 0.5 <= node_timeout <= 3600:
        raise ConfigError(f"--node-timeout must be between 0.5 and 3600 seconds, got {node_timeout:g}")

    retention_hours = (DEFAULT_DELETE_RETENTION_HOURS if args.delete_retention_hours is None
                       else args.delete_retention_hours)
    if not 0 <= retention_hours <= 24 * 3650:
        raise ConfigError(f"--delete-retention-hours must be between 0 and 87600, got {retention_hours:g}")

    idle = DEFAULT_TENANT_IDLE_SECONDS if args.tenant_idle_seconds is None else args.tenant_idle_seconds
    if not 1 <= idle <= 86400:
        raise ConfigError(f"--tenant-idle-seconds must be between 1 and 86400, got {idle:g}")

    exact_hours = DEFAULT_EXACT_RESTORE_HOURS if args.exact_restore_hours is None else args.exact_restore_hours
    if not 0 <= exact_hours <= 168:
        raise ConfigError(f"--exact-restore-hours must be between 0 and 168, got {exact_hours:g}")
    window_hours = (DEFAULT_RESTORE_WINDOW_HOURS if args.restore_window_hours is None
                    else args.restore_window_hours)
    if not max(24.0, exact_hours) <= window_hours <= 24 * 3650:
        raise ConfigError(f"--restore-window-hours must be between max(24, --exact-restore-hours) and 87600, "
                          f"got {window_hours:g}")

    gateway = _gateway_settings(args)
    engine = _engine_settings(args, environ)
    http_addr = parse_address(args.http_addr or _DEFAULT_HTTP_ADDR[mode], "--http-addr")
    gateway_addr = None
    raft_bind_addr = None
    if mode is Mode.ALL_IN_ONE:
        gateway_addr = parse_address(args.gateway_addr or DEFAULT_GATEWAY_ADDR, "--gateway-addr")
        same_host = gateway_addr.host == http_addr.host or {gateway_addr.host, http_addr.host} & {"0.0.0.0", "::"}
        if gateway_addr.port == http_addr.port and same_host:
            raise ConfigError(f"--gateway-addr {gateway_addr} and --http-addr {http_addr} must differ")
    if mode in (Mode.ALL_IN_ONE, Mode.CONTROL_PLANE):
        raft_bind_addr = parse_address(args.raft_bind_addr or DEFAULT_RAFT_BIND_ADDR, "--raft-bind-addr")

    pprof_addr = _pprof_addr(args.pprof_addr, [http_addr, gateway_addr, raft_bind_addr])

    node_address = None
    if mode is Mode.TENANT_NODE:
        node_address = args.node_address or http_addr.url
        if not node_address.startswith(("http://", "https://")):
            node_address = "http://" + node_address
        parse_address(node_address.split("://", 1)[1].rstrip("/"), "--node-address")

    return ServeConfig(
        mode=mode,
        data_dir=Path(args.data_dir or DEFAULT_DATA_DIR).absolute(),  # child processes and file URLs need it whole
        http_addr=http_addr,
        gateway_addr=gateway_addr,
        node_id=node_id,
        node_address=node_address,
        raft_bind_addr=raft_bind_addr,
        raft_peers=raft_peers,
        control_plane_addrs=control_plane_addrs,
        max_tenants=max_tenants,
        s3_endpoint=s3_endpoint,
        s3_bucket=s3_bucket,
        base_domain=base_domain,
        admin_token=admin_token,
        cluster_token=cluster_token,
        node_timeout=node_timeout,
        delete_retention=retention_hours * 3600,
        tenant_idle_seconds=idle,
        exact_restore_hours=exact_hours,
        restore_window_hours=window_hours,
        log_level=log_level,
        log_format=log_format,
        gateway=gateway,
        engine=engine,
        pprof_addr=pprof_addr,
    )


def _pprof_addr(value: str | None, others: list[Address | None]) -> Address | None:
    if value is None:
        return None
    address = parse_address(value, "--pprof-addr")
    if address.host == "localhost":
        address = Address("127.0.0.1", address.port)
    try:
        ipaddress.ip_address(address.host)
    except ValueError as err:
        raise ConfigError(f"--pprof-addr: the host must be an IP address or localhost, got {address.host!r}") from err
    for other in others:
        if other is not None and other.port == address.port and (
                other.host == address.host or {other.host, address.host} & {"0.0.0.0", "::"}):
            raise ConfigError(f"--pprof-addr {address} must differ from this process's other listeners ({other})")
    return address


def _default_sqlite_memory_limit_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 >> 20)
    except (ValueError, OSError, AttributeError):
        return 0


def _engine_settings(args: argparse.Namespace, environ: dict[str, str]) -> EngineSettings:
    threads = DEFAULT_DB_THREADS if args.db_threads is None else args.db_threads
    if not 1 <= threads <= 256:
        raise ConfigError(f"--db-threads must be between 1 and 256, got {threads}")
    limit = DEFAULT_REQUEST_TIME_LIMIT_SECONDS if args.request_time_limit is None else args.request_time_limit
    if not 0 <= limit <= 3600:
        raise ConfigError(f"--request-time-limit must be between 0 and 3600 seconds, got {limit:g}")
    queue = DEFAULT_TENANT_QUEUE_LIMIT if args.tenant_queue_limit is None else args.tenant_queue_limit
    if not 1 <= queue <= 100_000:
        raise ConfigError(f"--tenant-queue-limit must be between 1 and 100000, got {queue}")
    memory = _default_sqlite_memory_limit_mb() if args.sqlite_memory_limit_mb is None else args.sqlite_memory_limit_mb
    if not (memory == 0 or 64 <= memory <= 1 << 24):
        raise ConfigError(f"--sqlite-memory-limit-mb must be 0 (no limit) or at least 64, got {memory}")
    per_tenant = DEFAULT_REALTIME_PER_TENANT if args.realtime_max_per_tenant is None else args.realtime_max_per_tenant
    per_node = DEFAULT_REALTIME_PER_NODE if args.realtime_max_per_node is None else args.realtime_max_per_node
    for flag, value in (("--realtime-max-per-tenant", per_tenant), ("--realtime-max-per-node", per_node)):
        if not 1 <= value <= 10_000_000:
            raise ConfigError(f"{flag} must be between 1 and 10000000, got {value}")
    gateway_timeout = 30.0 if args.realtime_gateway_timeout is None else args.realtime_gateway_timeout
    if not 1 <= gateway_timeout <= 3600:
        raise ConfigError(f"--realtime-gateway-timeout must be between 1 and 3600 seconds, got {gateway_timeout:g}")
    mux = environ.get("PBFAST_STREAM_MUX", "on").strip().lower()
    if mux not in ("on", "off"):
        raise ConfigError(f"PBFAST_STREAM_MUX must be on or off, got {mux!r}")
    return EngineSettings(db_threads=threads, request_time_limit=limit, queue_limit=queue,
                          sqlite_memory_limit_mb=memory, realtime_per_tenant=per_tenant, realtime_per_node=per_node,
                          realtime_gateway_timeout=gateway_timeout, realtime_mux=mux == "on",
                          workers=_workers(args.workers if args.workers is not None else environ.get("PBFAST_WORKERS")))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _workers(value: str | None) -> int:
    if value is None:
        return DEFAULT_WORKERS
    if value.strip().lower() == "auto":
        return min(MAX_WORKERS, _usable_cpus())
    try:
        workers = int(value)
    except ValueError:
        raise ConfigError(f"--workers must be a number or 'auto', got {value!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    return workers


def _default_gateway_threads() -> int:
    return max(1, min(_usable_cpus(), 8))


def _gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    defaults = GatewaySettings()
    threads = _default_gateway_threads() if args.gateway_threads is None else args.gateway_threads
    if not 1 <= threads <= MAX_GATEWAY_THREADS:
        raise ConfigError(f"--gateway-threads must be between 1 and {MAX_GATEWAY_THREADS}, got {threads}")
    body = defaults.max_body_bytes if args.gateway_max_body_bytes is None else args.gateway_max_body_bytes
    if not 0 <= body <= 1 << 40:
        raise ConfigError(f"--gateway-max-body-bytes must be between 0 and {1 << 40}, got {body}")
    timeouts = {}
    for flag, dest, default in (("--gateway-connect-timeout", "gateway_connect_timeout", defaults.connect_timeout),
                                ("--gateway-read-timeout", "gateway_read_timeout", defaults.read_timeout),
                                ("--gateway-client-idle-timeout", "gateway_client_idle_timeout",
                                 defaults.client_idle_timeout)):
        value = getattr(args, dest)
        value = default if value is None else value
        if not 0.01 <= value <= 86400:
            raise ConfigError(f"{flag} must be between 0.01 and 86400 seconds, got {value:g}")
        timeouts[dest] = value
    held_limit = defaults.held_stream_limit_kb if args.gateway_held_stream_limit_kb is None \
        else args.gateway_held_stream_limit_kb
    if not 64 <= held_limit <= 1 << 20:
        raise ConfigError(f"--gateway-held-stream-limit-kb must be between 64 and {1 << 20}, got {held_limit}")
    budget = defaults.held_streams_budget_mb if args.gateway_held_streams_budget_mb is None \
        else args.gateway_held_streams_budget_mb
    if not held_limit <= budget << 10 <= 1 << 40:
        raise ConfigError(f"--gateway-held-streams-budget-mb must hold one stream's limit and be at most "
                          f"{1 << 30}, got {budget}")
    held_timeout = defaults.held_stream_timeout if args.gateway_held_stream_timeout is None \
        else args.gateway_held_stream_timeout
    if not 1 <= held_timeout <= 3600:
        raise ConfigError(f"--gateway-held-stream-timeout must be between 1 and 3600 seconds, got {held_timeout:g}")
    return GatewaySettings(native=(args.gateway_data_path or "native") == "native", threads=threads,
                           max_body_bytes=body, connect_timeout=timeouts["gateway_connect_timeout"],
                           read_timeout=timeouts["gateway_read_timeout"],
                           client_idle_timeout=timeouts["gateway_client_idle_timeout"],
                           access_log=bool(args.gateway_access_log), held_stream_limit_kb=held_limit,
                           held_streams_budget_mb=budget, held_stream_timeout=held_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        try:
            config = build_serve_config(args, dict(os.environ))
        except ConfigError as err:
            print(f"pbfast: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        from pbfast.server import serve  # imported late: keeps `--version` and `--help` fast

        return serve(config)
    if args.command == "doctor":
        from pbfast.doctor import run_doctor  # noqa: PLC0415 - only this command needs it

        return run_doctor(Mode(args.mode) if args.mode else None)
    return run_operator_command(args, dict(os.environ))
