"""A health endpoint served by embedded granian through one interface (for test_interface_bench.py).

Usage: python benchmarks/interface_server.py {rsgi,asgi} PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

from pbfast.http import HEALTH_BODY

HEADERS_RSGI = [("content-type", "application/json")]
HEADERS_ASGI = [(b"content-type", b"application/json")]


async def rsgi_app(scope, proto):  # type: ignore[no-untyped-def]
    proto.response_bytes(200, HEADERS_RSGI, HEALTH_BODY)


async def asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS_ASGI})
    await send({"type": "http.response.body", "body": HEALTH_BODY})


class _Rsgi:
    __rsgi__ = staticmethod(rsgi_app)


async def main(kind: str, port: int) -> None:
    app, interface = (_Rsgi(), Interfaces.RSGI) if kind == "rsgi" else (asgi_app, Interfaces.ASGINL)
    server = Server(app, address="127.0.0.1", port=port, interface=interface, log_enabled=False, websockets=False)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
    await server.serve()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
