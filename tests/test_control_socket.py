"""The node's HTTP client for litestream's control socket (pbfast.tenant_node.control_socket) against small
servers on a real unix socket: kept connections, both body framings, a kept connection the server closed, and
the two kinds of failure the replicator tells apart (not sent / sent without an answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pbfast.tenant_node.control_socket import NoAnswer, NotSent, UnixHttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head.split(b"\r\n", 1)[0], await reader.readexactly(length)


def _run(path: Path, handler: Handler, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await asyncio.start_unix_server(handler, path)
        try:
            await scenario()
        finally:
            server.close()

    asyncio.run(main())


def test_answers_on_kept_connections_with_either_framing(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                line, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if line.startswith(b"GET /chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\n{\"a\":\r\n3;x=y\r\n 1}\r\n0\r\n\r\n")
            else:
                answer = b'{"echo":' + (body or b"null") + b"}"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(answer), answer))
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        client = UnixHttpClient(path)
        for n in range(3):
            answer = await client.request("POST", "/sync", b'{"n":%d}' % n, 5)
            assert (answer.status, answer.body) == (200, b'{"echo":{"n":%d}}' % n)
        chunked = await client.request("GET", "/chunked", None, 5)
        assert chunked.body == b'{"a": 1}'
        assert len(connections) == 1  # one kept connection for all four
        client.close()
        with pytest.raises(NotSent):
            await client.request("GET", "/list", None, 5)

    _run(path, handler, scenario)


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_sent_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _ = await _read_request(reader)
        requests.append(line)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()  # an idle connection closed by the server, without "Connection: close"

    async def scenario() -> None:
        client = UnixHttpClient(path)
        assert (await client.request("POST", "/register", b"{}", 5)).status == 204
        await asyncio.sleep(0.05)
        assert (await client.request("POST", "/unregister", b"{}", 5)).status == 204
        assert requests == [b"POST /register HTTP/1.1", b"POST /unregister HTTP/1.1"]
        client.close()

    _run(path, handler, scenario)


def test_no_server_is_not_sent_and_a_silent_server_is_no_answer(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    async def nobody() -> None:
        with pytest.raises(NotSent):
            await UnixHttpClient(path).request("POST", "/sync", b"{}", 1)

    asyncio.run(nobody())

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    async def times_out() -> None:
        with pytest.raises(NoAnswer, match="no answer within"):
            await UnixHttpClient(path).request("POST", "/sync", b"{}", 0.3)

    async def cut_short() -> None:
        with pytest.raises(NoAnswer):
            await UnixHttpClient(path).request("POST", "/sync", b"{}", 5)

    _run(path, silent, times_out)
    path.unlink()
    _run(path, half_answer, cut_short)
