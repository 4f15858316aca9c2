"""Litestream's control socket (issue 14, many tenants): the node's CPU per control request, its own client
(``pbfast.tenant_node.control_socket``) against httpx over the same unix socket, 200 sequential ``POST /sync``
requests a round to a small server in the same event loop (the server's share is the same for both).

Run: ``python -m pytest benchmarks/test_control_socket_bench.py --benchmark-enable --benchmark-group-by=group``
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.tenant_node.control_socket import UnixHttpClient

REQUESTS = 200
ANSWER = b'{"txid":"0000000000000042"}'


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                         % (len(ANSWER), ANSWER))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.mark.parametrize("client", ["pbfast", "httpx"])
def test_control_request(benchmark: BenchmarkFixture, tmp_path: Path, client: str) -> None:
    benchmark.group = f"litestream control socket: {REQUESTS} POST /sync"
    path = tmp_path / "control.sock"
    body = b'{"path":"/data/tenants/t1/data.db","wait":true,"timeout":30}'
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_unix_server(_serve, path))
    send: Callable[[], Awaitable[object]]
    if client == "pbfast":
        ours = UnixHttpClient(path)

        async def send() -> object:
            return await ours.request("POST", "/sync", body, 5)
    else:
        theirs = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://litestream")

        async def send() -> object:
            return await theirs.post("/sync", content=body, headers={"content-type": "application/json"}, timeout=5)

    async def round_() -> None:
        for _ in range(REQUESTS):
            await send()

    try:
        loop.run_until_complete(round_())  # connected and warm
        benchmark.pedantic(lambda: loop.run_until_complete(round_()), rounds=15, iterations=1)  # type: ignore[no-untyped-call]
    finally:
        if client == "httpx":
            loop.run_until_complete(theirs.aclose())
        server.close()
        loop.close()
