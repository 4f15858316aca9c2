"""A bare granian RSGI app holding N idle SSE streams: RSS per stream of its process, the tenant node's floor
(issue 16). The clients run in this process, the server in a child.

usage: python benchmarks/granian_stream_floor.py N [max_buffer_size|0] [auto|1] [watch|-]
(``watch``: each stream also waits for ``client_disconnect`` in a task, as the node does).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import uvloop

from helpers import free_port  # type: ignore[import-not-found]


def serve(port: int, buffer_size: int, mode: str, watch: bool) -> None:
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.http import HTTP1Settings  # noqa: PLC0415
    from granian.server.embed import Server  # noqa: PLC0415

    class App:
        async def __rsgi__(self, scope: Any, proto: Any) -> None:
            transport = proto.response_stream(200, [("content-type", "text/event-stream")])
            await transport.send_bytes(b"id:x\nevent:PB_CONNECT\ndata:{}\n\n")
            if watch:
                asyncio.ensure_future(proto.client_disconnect())  # noqa: RUF006 - held by the loop, like the node's
            await asyncio.get_running_loop().create_future()

    async def main() -> None:
        options: dict[str, Any] = {"address": "127.0.0.1", "port": port, "interface": Interfaces.RSGI,
                                   "http": HTTPModes(mode), "websockets": False, "backpressure": 20_000,
                                   "log_enabled": False}
        if buffer_size:
            options["http1_settings"] = HTTP1Settings(max_buffer_size=buffer_size)
        await Server(App(), **options).serve()

    uvloop.run(main())


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def open_stream(port: int, held: list[asyncio.StreamWriter]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/realtime HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    while b"PB_CONNECT" not in await reader.readline():
        pass
    held.append(writer)


async def measure(count: int, port: int, pid: int) -> float:
    held: list[asyncio.StreamWriter] = []
    await asyncio.gather(*(open_stream(port, held) for _ in range(50)))  # warm-up
    await asyncio.sleep(0.5)
    before = rss_kb(pid)
    for _ in range(0, count, 100):
        await asyncio.gather(*(open_stream(port, held) for _ in range(100)))
    await asyncio.sleep(1.0)
    return (rss_kb(pid) - before) / count


def main(argv: list[str]) -> None:
    if argv[1] == "serve":
        serve(int(argv[2]), int(argv[3]), argv[4], argv[5] == "watch")
        return
    count = int(argv[1])
    buffer_size, mode, watch = (argv[2:] + ["0", "auto", "-"][len(argv) - 2:])[:3]
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "serve", str(port), buffer_size, mode, watch])
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        per_stream = uvloop.run(measure(count, port, server.pid))
        print(f"bare granian, {count} streams, max_buffer_size={buffer_size}, http={mode}, {watch}: "
              f"{per_stream:.1f} KB per stream")
    finally:
        server.kill()


if __name__ == "__main__":
    main(sys.argv)
