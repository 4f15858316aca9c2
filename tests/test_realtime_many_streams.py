"""A node holds more open realtime streams than its HTTP server's default cap on concurrent requests (granian's
backlog, 2048) and still answers every other request: an event stream is a request that lasts."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import create_tenant, start_all_in_one  # noqa: E402

pytestmark = pytest.mark.exclusive  # 2,100 open streams and a latency bound

STREAMS = 2_100  # past 2048


async def _open_stream(host: str, port: int, path: str) -> asyncio.StreamWriter:
    """An SSE stream that got its ``PB_CONNECT`` (within 20 s)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()

    async def connected() -> None:
        while not (line := await reader.readline()).startswith(b"event:PB_CONNECT"):
            assert line, "stream closed before PB_CONNECT"

    await asyncio.wait_for(connected(), timeout=20)
    return writer


async def _streams_then_requests(gw: str) -> float:
    url = httpx.URL(gw)
    assert url.host and url.port
    writers: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, STREAMS, 300):
            writers += await asyncio.gather(*(_open_stream(url.host, url.port, "/t/crowd/api/realtime")
                                              for _ in range(min(300, STREAMS - start))))
        async with httpx.AsyncClient(timeout=10) as client:
            started = time.perf_counter()
            answer = await client.get(f"{gw}/t/quiet/api/collections/_superusers/records")
            assert answer.status_code == 403, answer.text  # answered (a guest may not list superusers)
            return time.perf_counter() - started
    finally:
        for writer in writers:
            writer.close()


def test_a_node_holds_thousands_of_streams_and_answers_other_requests(pbfast_process: object,
                                                                       tmp_path: Path) -> None:
    _, cp, gw = start_all_in_one(pbfast_process, tmp_path / "pbfast")
    create_tenant(cp, gw, "crowd")
    create_tenant(cp, gw, "quiet")
    took = asyncio.run(_streams_then_requests(gw))
    assert took < 5, f"another tenant's request took {took:.1f} s with {STREAMS} streams open"
