"""The gateway's public listener on the native data path (:class:`pbfast._native.GatewayServer`).

The Rust server answers the hot path (a request for an active tenant on a remote ``http://`` node) on its
own threads without the GIL. What it does not handle itself, it hands to the Python
:class:`~pbfast.gateway.app.GatewayApp`, which listens on a Unix socket in a private directory (mode
0700) and trusts the ``x-pbfast-client`` header there: the gateway's own routes, unknown and inactive
tenants (waiting for the first routing table or for a move), ``https://`` nodes, in-process nodes (in
``all-in-one``: every tenant request). Both share the routing
table and the circuit breakers; ``/metrics`` adds the native counters to the Python ones. In an all-in-one
plain requests skip the socket: they reach the same app through an in-process queue
(:mod:`pbfast.gateway.in_process`).

Thread-safety: :meth:`NativeFrontend.start` and :meth:`NativeFrontend.stop` are called from the event
loop's thread (stop through an executor, since it blocks while connections drain).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbfast._native import GatewayServer, InProcessQueue
from pbfast.config import Address
from pbfast.gateway.in_process import InProcessDispatcher, RSGIApp
from pbfast.gateway.metrics import LATENCY_BUCKETS
from pbfast.gateway.proxy import ProxyLimits
from pbfast.logs import component_logger, current_request_id
from pbfast.primitives import CircuitBreakers, RoutingTable

__all__ = ["FALLBACK_READY_SECONDS", "IN_PROCESS_CAPACITY", "HeldStreamLimits", "NativeFrontend"]

log = component_logger("Gateway")
access_log = component_logger("GatewayAccess")

FALLBACK_READY_SECONDS = 10.0
LOG_INTERVAL = 0.2
SOCKET_NAME = "python.sock"
# Requests queued for, or being answered by, the event loop in process at once; one more is answered 503.
IN_PROCESS_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class HeldStreamLimits:
    """Bounds on the realtime streams the native path reads from nodes' stream holders (process-wide in the
    extension): bytes queued per stream and for all of them, seconds a node may take nothing."""

    stream_limit_bytes: int = 4 << 20
    budget_bytes: int = 256 << 20
    timeout_seconds: float = 30.0


class NativeFrontend:
    """Owns the native server and the private directory of the Python side's Unix socket."""

    def __init__(self, address: Address, routes: RoutingTable, breakers: CircuitBreakers, cluster_token: str,
                 limits: ProxyLimits, threads: int, move_wait_seconds: float, access_log: bool = False,
                 held: HeldStreamLimits | None = None, in_process_capacity: int | None = None) -> None:
        """``in_process_capacity``: hand plain requests to this process's event loop through a queue of that
        bound (an all-in-one, whose every tenant request is handed over) instead of the Unix socket."""
        self.address = address
        self.threads = threads
        self.access_log = access_log
        self._dropped_reported = 0
        self._warnings_dropped_reported = 0
        # A short path (Unix socket paths are limited to ~107 bytes), private to this user.
        self._dir = Path(tempfile.mkdtemp(prefix="pbfast-gw-"))
        self.socket_path = self._dir / SOCKET_NAME
        held_limits = held or HeldStreamLimits()
        self.in_process = InProcessQueue(in_process_capacity) if in_process_capacity is not None else None
        self._dispatcher: InProcessDispatcher | None = None
        self.server = GatewayServer(
            routes, breakers, cluster_token, self.socket_path,
            latency_buckets=list(LATENCY_BUCKETS),
            max_body_bytes=limits.max_body_bytes,
            max_header_bytes=limits.max_header_bytes,
            connect_timeout_seconds=limits.connect_timeout_seconds,
            read_timeout_seconds=limits.read_timeout_seconds,
            client_idle_seconds=limits.client_idle_seconds,
            pool_idle_seconds=limits.pool_idle_seconds,
            max_idle_per_node=limits.max_idle_per_node,
            move_wait_seconds=move_wait_seconds,
            threads=threads,
            access_log=access_log,
            held_stream_limit_bytes=held_limits.stream_limit_bytes,
            held_streams_budget_bytes=held_limits.budget_bytes,
            held_stream_timeout_seconds=held_limits.timeout_seconds,
            in_process=self.in_process,
        )

    def dispatch_to(self, app: RSGIApp) -> None:
        """The app that answers the in-process queue's requests (the one on the Unix socket)."""
        if self.in_process is not None:
            self._dispatcher = InProcessDispatcher(self.in_process, app)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the in-process queue on ``loop`` (the loop the app runs on)."""
        if self._dispatcher is not None:
            self._dispatcher.attach(loop)

    async def start(self) -> None:
        """Wait until the Python side listens on its socket, then start the native listener.

        Raises OSError when the address cannot be bound, TimeoutError when the Python side never came up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FALLBACK_READY_SECONDS
        while True:
            try:
                _, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError(f"the gateway's Python side did not listen on {self.socket_path}") from None
                await asyncio.sleep(0.01)
                continue
            writer.close()
            break
        self.server.start(self.address.host, self.address.port)
        log.info("listening on %s (native data path, %d thread%s)", self.address.url, self.threads,
                 "" if self.threads == 1 else "s")

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting and drain open connections, and the requests handed over in process, for at most
        ``grace_seconds`` in all (the event loop keeps running meanwhile, so handed-over requests can finish):
        the in-process handlers get what the native drain left of it, not a grace period of their own."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        await loop.run_in_executor(None, self.server.stop, grace_seconds)
        if self._dispatcher is not None:
            await self._dispatcher.close(max(0.0, deadline - loop.time()))

    def close(self) -> None:
        """Write what is left of the logs; remove the socket's directory (after both servers stopped)."""
        self.write_logs()
        shutil.rmtree(self._dir, ignore_errors=True)

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def write_access_log(self) -> None:
        """Log the requests finished since the last call (one line each, like the Python data path's)."""
        entries, dropped = self.server.drain_access_log()
        for client, method, target, status, seconds, request_id in entries:
            bound = current_request_id.set(request_id)  # the line ends with it, as the request's other lines
            try:
                access_log.info("%s %s %s %d %.2fms", client, method, target, status, seconds * 1000)
            finally:
                current_request_id.reset(bound)
        if dropped > self._dropped_reported:
            log.warning("access log: %d lines dropped (the log could not keep up)", dropped - self._dropped_reported)
            self._dropped_reported = dropped

    def write_warnings(self) -> None:
        """Log the native side's warnings since the last call at WARN, each with its request's id."""
        warnings, dropped = self.server.drain_warnings()
        for message, request_id in warnings:
            bound = current_request_id.set(request_id)
            try:
                log.warning("%s", message)
            finally:
                current_request_id.reset(bound)
        if dropped > self._warnings_dropped_reported:
            log.warning("%d warnings dropped (the log could not keep up)", dropped - self._warnings_dropped_reported)
            self._warnings_dropped_reported = dropped

    def write_logs(self) -> None:
        self.write_warnings()
        if self.access_log:
            self.write_access_log()

    async def run_logs(self) -> None:
        """Write the native side's warnings (and access log, when on) every :data:`LOG_INTERVAL` seconds until
        cancelled."""
        while True:
            await asyncio.sleep(LOG_INTERVAL)
            self.write_logs()
