"""Keep-alive HTTP/1.1 connections from the gateway to tenant nodes: one pool per node address, bounded
(open and idle connections per node), idle connections retired before the node's own keep-alive ends.

Thread-safety: event loop only (the pools and their counters are not locked).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from pbfast.gateway.proxy_types import ProxyLimits, Unreachable
from pbfast.logs import component_logger

__all__ = ["Deadline", "NodeConnection", "NodePool", "NodePools"]

log = component_logger("Gateway")


class NodeConnection:
    """One keep-alive connection to a node."""

    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False  # taken from the pool: it may have been closed by the node meanwhile

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class NodePool:
    """Keep-alive connections to one node: idle ones (most recently used last) and a count of all open."""

    __slots__ = ("host", "idle", "open", "port", "server_hostname", "ssl", "waiters")

    def __init__(self, address: str) -> None:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) node address: {address!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.server_hostname = self.host if self.ssl else None
        self.idle: list[NodeConnection] = []
        self.open = 0
        self.waiters: list[asyncio.Future[None]] = []


class NodePools:
    """The pools of every node the gateway talks to, under one set of :class:`ProxyLimits`."""

    def __init__(self, limits: ProxyLimits) -> None:
        self.limits = limits
        self._pools: dict[str, NodePool] = {}
        self._closed = False

    def pool(self, address: str) -> NodePool:
        """The pool of ``address``; ValueError when it is not an http(s) address."""
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = NodePool(address)
        return pool

    async def acquire(self, pool: NodePool, address: str, on_failure: Callable[[], None]) -> NodeConnection:
        """A usable connection: the most recently pooled one, else a new one (waiting up to the connect
        timeout when the node already has its maximum open). A failed connect calls ``on_failure`` (the
        node's breaker) and raises :class:`Unreachable`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self.limits.pool_idle_seconds:
                conn.reused = True
                return conn
            self.discard(pool, conn)
        if pool.open >= self.limits.max_connections_per_node:
            waiter = loop.create_future()
            pool.waiters.append(waiter)
            try:
                async with asyncio.timeout(self.limits.connect_timeout_seconds):
                    await waiter
            except TimeoutError:
                raise Unreachable("pool_exhausted", 503, "The tenant's node is busy; retry shortly.") from None
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
            return await self.acquire(pool, address, on_failure)
        pool.open += 1
        try:
            async with asyncio.timeout(self.limits.connect_timeout_seconds):
                reader, writer = await asyncio.open_connection(
                    pool.host, pool.port, ssl=pool.ssl, server_hostname=pool.server_hostname,
                    limit=self.limits.max_response_header_bytes)
        except TimeoutError:
            self._closed_one(pool)
            on_failure()
            raise Unreachable("connect_timeout", 504, "The tenant's node did not accept a connection in time.") \
                from None
        except BaseException as err:
            self._closed_one(pool)
            if not isinstance(err, OSError):
                raise
            on_failure()
            log.debug("connecting to %s failed: %s", address, err)
            raise Unreachable("connect", 502, "The tenant's node is unreachable.") from None
        return NodeConnection(reader, writer)

    def release(self, pool: NodePool, conn: NodeConnection) -> None:
        """Give back a connection whose last exchange completed; it is kept idle if there is room."""
        if self._closed or len(pool.idle) >= self.limits.max_idle_per_node or not conn.usable():
            self.discard(pool, conn)
            return
        conn.idle_since = asyncio.get_running_loop().time()
        pool.idle.append(conn)
        self._wake(pool)

    def discard(self, pool: NodePool, conn: NodeConnection) -> None:
        """Close a connection that cannot be reused (an exchange broke off, or the pool is full)."""
        conn.abort()
        self._closed_one(pool)

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when given back."""
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.writer.close()
            pool.open -= len(pool.idle)
            pool.idle.clear()

    def _closed_one(self, pool: NodePool) -> None:
        pool.open -= 1
        self._wake(pool)

    @staticmethod
    def _wake(pool: NodePool) -> None:
        while pool.waiters:
            waiter = pool.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class Deadline:
    """A lazily re-armed timer that aborts a connection when no progress was made for ``seconds``;
    :meth:`extend` is cheap (no timer churn), so it can run on every read."""

    __slots__ = ("_at", "_conn", "_handle", "_loop", "_seconds", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, conn: NodeConnection) -> None:
        self._loop = loop
        self._seconds = seconds
        self._conn = conn
        self._at = loop.time() + seconds
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._at, self._check)
        self.expired = False

    def extend(self) -> None:
        self._at = self._loop.time() + self._seconds

    def _check(self) -> None:
        if self._loop.time() < self._at:
            self._handle = self._loop.call_at(self._at, self._check)
            return
        self._handle = None
        self.expired = True
        self._conn.abort()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
