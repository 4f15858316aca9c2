"""A realtime stream read on a raw socket through a gateway (asyncio): opened with ``GET /t/{tenant}/api/realtime``,
its events read line by line, and its clean end (the chunked body's last chunk) told from a broken connection."""

from __future__ import annotations

import asyncio

import httpx
import orjson

TIMEOUT = 20.0  # seconds for each read: generous for a loaded CI machine


async def open_stream(gw: str, tenant_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """The stream's reader and writer, and its client id (from ``PB_CONNECT``)."""
    url = httpx.URL(gw)
    assert url.host and url.port
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"GET /t/{tenant_id}/api/realtime HTTP/1.1\r\nHost: {url.host}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
    assert b"x-pbfast" not in head.lower()  # the node's held-stream headers never reach the client
    client_id = ""
    while not client_id:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line, "closed before PB_CONNECT"
        if b"id:" in line:
            client_id = line.split(b"id:", 1)[1].strip().decode()
    return reader, writer, client_id


async def next_record_n(reader: asyncio.StreamReader) -> object:
    """The field ``n`` of the next event's record."""
    while True:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line, "the stream ended"
        if line.startswith(b"data:{\"record\""):
            return orjson.loads(line[5:])["record"]["n"]


async def clean_end(reader: asyncio.StreamReader) -> None:
    """Read to the chunked body's last chunk: the stream's clean end (a broken one closes the connection)."""
    rest = b""
    while not rest.endswith(b"0\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert chunk, f"the connection broke instead of ending the stream: {rest[-200:]!r}"
        rest += chunk
