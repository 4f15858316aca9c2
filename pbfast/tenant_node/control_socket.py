"""HTTP/1.1 requests over a unix socket, for litestream's control socket: a few keep-alive connections and
nothing else.

Why not httpx: a node with many written tenants asks litestream for a ``/sync`` of each of them every 0.2 s
(:mod:`~pbfast.tenant_node.shipper`), ~90 requests a second with 100 busy tenants, and httpx's layers
(its client, transport, connection pool, request and response models) were 6.4 % of the event loop
thread's samples there. A request here is one write and a few reads on a kept connection.

The caller must know whether a request that failed may still be carried out, so failures come in two kinds:
:class:`NotSent` (no connection, or none free in time: surely not carried out) and :class:`NoAnswer` (sent,
and no complete answer came: it may have been). A kept connection that the server closed while it was idle
shows as an end of stream before any byte of the answer: the request is sent once more on a new connection
(litestream's control requests can be repeated).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Answer", "NoAnswer", "NotSent", "UnixHttpClient"]

MAX_HEAD_BYTES = 64 << 10  # asyncio's default stream limit: an answer head longer than this is refused


class NotSent(Exception):  # noqa: N818 - names what happened to the request
    """The request surely was not carried out (no connection could be made or had)."""


class NoAnswer(Exception):  # noqa: N818 - names what happened to the request
    """The request was sent (or may have been) and no complete answer came."""


class _Stale(Exception):  # noqa: N818
    """A kept connection ended before any byte of the answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class UnixHttpClient:
    """Requests to the HTTP server listening on the unix socket ``path``, at most ``max_connections`` at once."""

    def __init__(self, path: Path, max_connections: int = 8) -> None:
        self.path = path
        self._idle: list[_Connection] = []
        self._free = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Answer:
        """One request with its answer within ``timeout`` seconds (:class:`NotSent`, :class:`NoAnswer`)."""
        if self._closed:
            raise NotSent("the client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._free.acquire()
        except TimeoutError as err:
            raise NotSent(f"no free connection within {timeout:g} s") from err
        try:
            head = _request_head(method, target, body)
            for attempt in range(2):
                connection, reused = await self._connection(deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        answer, keep = await _exchange(connection, head, body, stale_possible=reused)
                except _Stale as err:
                    _close(connection)
                    if attempt == 0:
                        continue  # the server had closed the kept connection: once more on a new one
                    raise NoAnswer("the connection ended before the answer") from err
                except TimeoutError as err:
                    _close(connection)
                    raise NoAnswer(f"no answer within {timeout:g} s") from err
                except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
                    _close(connection)
                    raise NoAnswer(f"{type(err).__name__}: {err}") from err
                if keep and not self._closed:
                    self._idle.append(connection)
                else:
                    _close(connection)
                return answer
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._free.release()

    async def _connection(self, deadline: float) -> tuple[_Connection, bool]:
        """A kept connection that has not seen its end (reused: True), else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if not connection[0].at_eof() and not connection[1].is_closing():
                return connection, True
            _close(connection)
        try:
            async with asyncio.timeout_at(deadline):
                connection = await asyncio.open_unix_connection(self.path, limit=MAX_HEAD_BYTES)
        except (OSError, TimeoutError) as err:
            raise NotSent(f"cannot connect to {self.path}: {type(err).__name__}: {err}") from err
        return connection, False

    def close(self) -> None:
        """Close the kept connections; requests under way finish, and their connections are closed then."""
        self._closed = True
        while self._idle:
            _close(self._idle.pop())


def _request_head(method: str, target: str, body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def _exchange(connection: _Connection, head: bytes, body: bytes | None,
                    stale_possible: bool) -> tuple[Answer, bool]:
    """Send the request and read its answer: the answer and whether the connection may be kept."""
    reader, writer = connection
    try:
        writer.write(head + body if body else head)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as err:
        nothing_read = not isinstance(err, asyncio.IncompleteReadError) or not err.partial
        if stale_possible and nothing_read:
            raise _Stale from err
        raise
    version, _, rest = status_line.partition(b" ")
    status = int(rest[:3])
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        content = await _chunked(reader)
    elif b"content-length" in headers:
        content = await reader.readexactly(int(headers[b"content-length"]))
    elif status in (204, 304) or status < 200:
        content = b""
    else:  # delimited by the end of the connection
        content, keep = await reader.read(), False
    return Answer(status, content), keep


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


def _close(connection: _Connection) -> None:
    with contextlib.suppress(Exception):
        connection[1].close()
