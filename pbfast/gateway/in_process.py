"""The all-in-one's hand-over without a second HTTP exchange (rust/src/gateway/in_process.rs).

The native data path queues a plain tenant request (body read whole, not a realtime stream, not a file
download, not an ``Upgrade``) on a bounded :class:`~pbfast._native.InProcessQueue` and writes its eventfd;
the event loop watches that fd, takes what is queued and runs the gateway's one RSGI handler on each
request: the :class:`~pbfast._native.HandedRequest` is the scope (the values granian's scope has for a request
handed over the Unix socket), :class:`InProcessProtocol` the protocol. The answer goes back in one piece.
Everything else still takes the Unix socket to granian (docs/architecture.md, "The all-in-one's hand-over").

Thread-safety: event loop only (the queue itself is filled from the gateway's threads).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from pbfast._native import HandedRequest, InProcessQueue
from pbfast.http import HTTPProtocol, Scope
from pbfast.logs import component_logger

__all__ = ["InProcessDispatcher", "InProcessProtocol"]

log = component_logger("Gateway")

RSGIApp = Callable[[Scope, HTTPProtocol], Awaitable[None]]

JSON = [("content-type", "application/json")]
_FAILED = orjson.dumps({"status": 500, "message": "Something went wrong while processing your request.",
                        "data": {}})
# Requests started per wake-up of the loop: the rest wait in the queue (the eventfd stays readable) until the loop
# has run what it had ready, so a burst does not push its other work (a heartbeat's answer, say) far back.
TAKE_PER_WAKE = 16
# What a handler may buffer through ``response_stream`` on this path (only realtime streams, which do not
# take it, stream for long; anything longer is cut with a 500 instead of growing without bound).
STREAM_BUFFER_LIMIT = 16 << 20
# How often ``client_disconnect`` looks whether the client went away, while something waits on it.
DISCONNECT_POLL_SECONDS = 0.1


class _BufferedStream:
    """``response_stream``'s transport on this path: the chunks are kept and answered when the handler ends."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    async def send_bytes(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > STREAM_BUFFER_LIMIT:
            raise RuntimeError("a streamed answer too long for the in-process hand-over")
        self.chunks.append(data)

    async def send_str(self, data: str) -> None:
        await self.send_bytes(data.encode())


class InProcessProtocol:
    """The RSGI protocol methods pbfast's handlers use, answering through ``request.respond``."""

    __slots__ = ("_dispatcher", "_file", "_read", "_request", "_stream")

    def __init__(self, request: HandedRequest, dispatcher: InProcessDispatcher) -> None:
        self._request = request
        self._dispatcher = dispatcher
        self._read = False
        self._stream: tuple[int, list[tuple[str, str]], _BufferedStream] | None = None
        self._file: tuple[int, list[tuple[str, str]], str] | None = None

    async def __call__(self) -> bytes:
        self._read = True
        return self._request.body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        # As granian's: the body's chunk, then the empty chunk that ends every body.
        if not self._read:
            self._read = True
            body = self._request.body
            if body:
                yield body
            yield b""

    def client_disconnect(self) -> asyncio.Future[None]:
        """Done once the client went away (or was answered), as granian's: a bcrypt check waiting in line for a gone
        client is skipped (:mod:`pbfast.pocketbase.password_checks`). The native side drops the answer's receiver,
        which nothing signals here: looked at every :data:`DISCONNECT_POLL_SECONDS` until done or cancelled."""
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        request = self._request

        def look() -> None:
            if gone.done():
                return
            if request.cancelled:
                gone.set_result(None)
            else:
                loop.call_later(DISCONNECT_POLL_SECONDS, look)

        look()
        return gone

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        dispatcher = self._dispatcher
        if dispatcher.in_service() <= 1 or threading.get_ident() != dispatcher.loop_thread:
            # Alone: nothing to batch with, and sent now the gateway's thread writes it while the loop finishes up
            # (held for the next iteration, a single client's request took ~1.5x as long). Not on the loop's thread
            # (a heavy tenant's answer leaves from its database thread, pbfast.pocketbase.api): only the loop may
            # schedule a flush, and it may be asleep.
            self._request.respond(status, headers, body)
        elif self._request.respond_later(status, headers, body):  # the first answer since the last flush
            self._dispatcher.flush_soon()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._respond(status, headers, body)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self._respond(status, headers, body.encode())

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._respond(status, headers, b"")

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        """Files are read by granian on the Unix socket's path (downloads do not take this one); a handler that
        answers a file here anyway has it read whole in a thread when it returns."""
        self._file = (status, headers, file)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _BufferedStream:
        stream = _BufferedStream()
        self._stream = (status, headers, stream)
        return stream

    async def finish(self) -> None:
        """After the handler: send a file or a buffered stream, or a 500 when nothing was answered."""
        if self._file is not None and not self._request.answered:
            status, headers, file = self._file
            try:
                body = await asyncio.get_running_loop().run_in_executor(None, Path(file).read_bytes)
            except OSError:
                self._respond(404, [], b"")  # as granian answers a file it cannot open
                return
            self._respond(status, headers, body)
        elif self._stream is not None and not self._request.answered:
            status, headers, stream = self._stream
            self._respond(status, headers, b"".join(stream.chunks))
        elif not self._request.answered:
            self._respond(500, JSON, _FAILED)

    def fail(self) -> None:
        if not self._request.answered:
            self._respond(500, JSON, _FAILED)


class InProcessDispatcher:
    """Runs ``app`` on the requests of ``queue`` as tasks of the loop it is attached to."""

    def __init__(self, queue: InProcessQueue, app: RSGIApp) -> None:
        self.queue = queue
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0  # the loop's thread (threading.get_ident), learnt when it first takes requests
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.queue.fd, self._take)

    def in_service(self) -> int:
        """Requests being answered (their handlers started, not finished)."""
        return len(self._tasks)

    def flush_soon(self) -> None:
        """Send the answers queued in this iteration of the loop at the start of its next one."""
        assert self._loop is not None
        self._loop.call_soon(self.queue.flush_answers)

    def _take(self) -> int:
        """Start the handler on the next queued requests; returns how many were taken."""
        assert self._loop is not None
        self.loop_thread = threading.get_ident()  # a reader callback: on the loop's thread
        taken = self.queue.take(TAKE_PER_WAKE)
        for request in taken:
            if request.cancelled:  # the client went away while it waited
                self.dropped += 1
                continue
            task = self._loop.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(taken)

    async def _serve(self, request: HandedRequest) -> None:
        proto = InProcessProtocol(request, self)
        try:
            await self.app(request, proto)
        except Exception:  # noqa: BLE001 - as granian: a failed handler is a 500, the loop goes on
            log.exception("the gateway's handler failed on an in-process request")
            proto.fail()
            return
        if not request.answered:
            await proto.finish()

    async def close(self, seconds: float = 3.0) -> None:
        """Stop watching the queue, drop what is still queued (their clients get a 502) and give the requests
        being answered ``seconds`` to finish. Call it after the native listener stopped (it drained)."""
        if self._loop is not None:
            self._loop.remove_reader(self.queue.fd)
            while self._take():  # what was queued before the listener stopped
                pass
        dropped = self.queue.close()
        if dropped:
            log.warning("in-process hand-over: %d queued requests dropped at shutdown", dropped)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
            for task in pending:
                task.cancel()
        self.queue.flush_answers()  # what the last ones answered

    def stats(self) -> dict[str, Any]:
        return {"outstanding": self.queue.outstanding, "in_service": len(self._tasks), "dropped": self.dropped}
