"""``pbfast serve``: builds each mode's components and runs their HTTP listeners on one uvloop loop.

Every listener is a granian server embedded in this process's event loop (RSGI interface), so all-in-one
runs control plane, tenant node and gateway in one process and the gateway reaches the node in-process.
SIGINT/SIGTERM stop every listener; shutdown is bounded by :data:`SHUTDOWN_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass
from typing import Any

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server as EmbeddedServer

from pbfast.config import Address, Mode, ServeConfig
from pbfast.control_plane import ControlPlaneApp
from pbfast.gateway import GatewayApp
from pbfast.logs import component_logger, configure_logging
from pbfast.primitives import RoutingTable
from pbfast.tenant_node import TenantNodeApp
from pbfast.tokens import TokenFileError, load_or_create_admin_token

__all__ = ["SHUTDOWN_TIMEOUT_SECONDS", "StartupError", "serve"]

SHUTDOWN_TIMEOUT_SECONDS = 4.0
EXIT_STARTUP_FAILED = 1

log = component_logger("Server")

# In all-in-one the gateway's routes name the local node by this in-process address.
LOCAL_NODE_ADDRESS = "local"


class StartupError(RuntimeError):
    """The server cannot start; the message is one line for the operator."""


@dataclass(slots=True)
class Listener:
    component: str
    address: Address
    app: Any


def _admin_token(config: ServeConfig) -> str:
    if config.admin_token is not None:
        return config.admin_token
    try:
        token, path, created = load_or_create_admin_token(config.data_dir)
    except (TokenFileError, OSError) as err:
        raise StartupError(f"admin token: {err}") from err
    component_logger("ControlPlane").info(
        "admin token %s %s (send it as 'Authorization: Bearer <token>')",
        "generated and stored in" if created else "read from",
        path.resolve(),
    )
    return token


def build_listeners(config: ServeConfig) -> list[Listener]:
    """The HTTP listeners (component, address, RSGI app) of ``config.mode``."""
    if config.mode is Mode.CONTROL_PLANE:
        return [Listener("ControlPlane", config.http_addr, ControlPlaneApp(_admin_token(config)))]
    if config.mode is Mode.TENANT_NODE:
        return [Listener("TenantNode", config.http_addr, TenantNodeApp(config.node_id, config.max_tenants))]
    if config.mode is Mode.GATEWAY:
        return [Listener("Gateway", config.http_addr, GatewayApp(RoutingTable(config.base_domain)))]
    assert config.gateway_addr is not None
    node = TenantNodeApp(config.node_id, config.max_tenants)
    gateway = GatewayApp(RoutingTable(config.base_domain), {LOCAL_NODE_ADDRESS: node.serve_tenant})
    return [
        Listener("ControlPlane", config.http_addr, ControlPlaneApp(_admin_token(config))),
        Listener("Gateway", config.gateway_addr, gateway),
    ]


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
        interface=Interfaces.RSGI,
        http=HTTPModes.auto,
        websockets=False,
        backlog=2048,
        log_enabled=False,
    )
    component = component_logger(listener.component)
    server.on_startup(lambda: component.info("listening on %s", listener.address.url))
    return server


async def _run(config: ServeConfig) -> int:
    listeners = build_listeners(config)
    for listener in listeners:
        _check_bindable(listener.address)
    servers = [_embedded_server(listener) for listener in listeners]
    configure_logging(config.log_level)  # granian's constructor reconfigures logging; take it back
    log.info("starting %s (data dir %s)", config.mode.value, config.data_dir.resolve())

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    tasks = [asyncio.create_task(server.serve(), name=listener.component)
             for server, listener in zip(servers, listeners)]
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)

    exit_code = 0
    for task in tasks:
        if task in done:
            error = task.exception()
            listener = listeners[tasks.index(task)]
            reason = str(error) if error else "stopped unexpectedly"
            log.error("%s listener on %s failed: %s", listener.component, listener.address, reason)
            exit_code = EXIT_STARTUP_FAILED
    if stop_wait in done:
        log.info("shutting down")
    stop_wait.cancel()

    for server in servers:
        server.stop()
    pending = [task for task in tasks if not task.done()]
    if pending:
        _, still_running = await asyncio.wait(pending, timeout=SHUTDOWN_TIMEOUT_SECONDS)
        for task in still_running:
            task.cancel()
        if still_running:
            log.warning("forced shutdown after %.0f s", SHUTDOWN_TIMEOUT_SECONDS)
    log.info("stopped")
    return exit_code


def serve(config: ServeConfig) -> int:
    """Run the servers of ``config.mode`` until SIGINT/SIGTERM; returns the process exit status."""
    configure_logging(config.log_level)
    try:
        return uvloop.run(_run(config))
    except StartupError as err:
        log.error("cannot start: %s", err)
        return EXIT_STARTUP_FAILED
