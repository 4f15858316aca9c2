"""The response half of the gateway's proxy: the node's HTTP/1.1 answer head, and its body relayed to the
client as it arrives.

Responses up to :data:`~pbfast.gateway.http1_request.SMALL_BODY_BYTES` are answered in one piece (by the
caller, with :func:`send_small`); larger, chunked and close-delimited ones are streamed chunk by chunk.
``text/event-stream`` has no read timeout and stays open until the node or the client closes it.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple, cast

from granian._granian import RSGIProtocolClosed as ProtocolClosed

from pbfast.gateway.metrics import GatewayMetrics
from pbfast.gateway.node_pool import Deadline, NodeConnection
from pbfast.http import HTTPProtocol
from pbfast.logs import component_logger

__all__ = ["ResponseHead", "read_response_head", "relay_body", "send_small"]

log = component_logger("Gateway")

_READ_CHUNK = 64 << 10
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})


class ResponseHead(NamedTuple):
    """The node's answer head. ``length`` is None for a chunked, close-delimited or bodiless answer
    (HEAD, 204, 304: then ``chunked`` is False and ``keep_alive`` tells which)."""

    status: int
    headers: list[tuple[str, str]]  # to relay: hop-by-hop ones dropped
    length: int | None
    chunked: bool
    keep_alive: bool


async def read_response_head(conn: NodeConnection, method: str) -> ResponseHead:
    """The node's answer head; 1xx answers are skipped. ValueError for what is not HTTP/1.x."""
    reader = conn.reader
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        lines = text.split("\r\n")
        status_line = lines[0]
        if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
            raise ValueError(f"bad status line {status_line[:40]!r}")
        status = int(status_line[9:12])
        if 100 <= status < 200:
            if status == 101:
                raise ValueError("unexpected protocol switch")
            continue
        break
    keep_alive = status_line[7] == "1"
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    listed: set[str] | None = None
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip()
        if name in _DROP_RESPONSE or name.startswith("proxy-"):
            if name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
                listed = (listed or set()) | tokens
            continue
        if name == "content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative content-length")
        headers.append((name, value))
    if listed:
        headers = [h for h in headers if h[0] not in listed]
    if method == "HEAD" or status in (204, 304):
        return ResponseHead(status, headers, None, False, keep_alive)
    if chunked:
        length = None
    elif length is None:
        keep_alive = False  # the body runs until the node closes the connection
    return ResponseHead(status, headers, length, chunked, keep_alive)


async def relay_body(proto: HTTPProtocol, conn: NodeConnection, deadline: Deadline, address: str,
                     head: ResponseHead, metrics: GatewayMetrics) -> bool:
    """Stream the response body to the client as it arrives; True when it was read completely."""
    reader = conn.reader
    status, headers, length, chunked = head.status, head.headers, head.length, head.chunked
    event_stream = any(name == "content-type" and value.startswith("text/event-stream")
                       for name, value in headers)
    if chunked:
        headers = [h for h in headers if h[0] != "content-length"]
    transport = cast(Any, proto).response_stream(status, headers)
    disconnect: asyncio.Future[None] | None = None
    if event_stream:
        deadline.cancel()  # events may be minutes apart; the stream lasts until either side closes
        disconnect = asyncio.ensure_future(proto.client_disconnect())  # type: ignore[attr-defined]
        disconnect.add_done_callback(lambda _: conn.abort())
    try:
        if chunked:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0].strip(), 16)
                deadline.extend()
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers are not relayed
                    return True
                while size:
                    data = await reader.read(min(size, _READ_CHUNK))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", size)
                    size -= len(data)
                    deadline.extend()
                    await transport.send_bytes(data)
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("bad chunk terminator")
        remaining = length
        while remaining is None or remaining > 0:
            data = await reader.read(_READ_CHUNK if remaining is None else min(remaining, _READ_CHUNK))
            if not data:
                if remaining is None:
                    return False  # close-delimited: complete, but the connection is done
                raise asyncio.IncompleteReadError(b"", remaining)
            deadline.extend()
            if remaining is not None:
                remaining -= len(data)
            await transport.send_bytes(data)
        return True
    except ProtocolClosed:
        return False  # the client went away; the node's connection is dropped
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, asyncio.LimitOverrunError) as err:
        if not (disconnect is not None and disconnect.done()):
            metrics.upstream_error("timeout" if deadline.expired else "reset")
            log.warning("a %d response from %s was cut short: %s", status, address,
                        "read timeout" if deadline.expired else type(err).__name__)
        return False
    finally:
        if disconnect is not None and not disconnect.done():
            disconnect.cancel()


def send_small(proto: HTTPProtocol, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
    """Answer a whole (small) body; granian sets the Content-Length itself."""
    proto.response_bytes(status, [h for h in headers if h[0] != "content-length"], payload)
