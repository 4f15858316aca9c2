"""Realtime streams held by the node's native stream holder (:class:`pbfast.primitives.StreamHolder`) instead
of the HTTP server: the client, its subscriptions and its rules stay here, its connection is the holder's.

Inside granian an idle stream cost the node ~25 KB (its HTTP/1 connection's buffers, the request head held
for the request's life, the request's coroutines); held, it is this client object and a table entry with a
small task in Rust (benchmarks/RESULTS.md). An event's frames for all its held recipients are queued in one
call from the writer's database thread, with no hop through the event loop. A gateway asks for it
(``x-pbfast-stream-holder``, with the cluster token); without it the stream is served by the HTTP server as
before (a direct client, the gateway's Python data path to a remote node).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from pbfast.pocketbase.realtime.subscriptions import Client
from pbfast.primitives import StreamHolder

__all__ = ["END_REASONS", "HeldClient"]

# StreamHolder.take_ended's reasons, as Client.closed_reason.
END_REASONS: Final = {1: "ended", 2: "gone", 3: "overflow", 4: "unattached"}


class HeldClient(Client):
    """A client whose frames go to its stream in the holder (``handle``); nothing queued here."""

    __slots__ = ("_holder", "_idle_seconds", "handle")

    def __init__(self, client_id: str, still_served: Callable[[], bool], now: float, idle_seconds: float,
                 served_key: object, holder: StreamHolder, handle: int) -> None:
        super().__init__(client_id, still_served, now, idle_seconds, served_key)
        self._holder = holder
        self._idle_seconds = idle_seconds
        self.handle = handle

    def push(self, frame: bytes) -> None:
        if self.closed_reason is None and self._holder.send(self.handle, frame):
            self.written(time.monotonic(), event=True)

    def ping(self, frame: bytes) -> None:
        if self.closed_reason is None and self._holder.send(self.handle, frame):
            self.written(time.monotonic(), event=False)

    def written(self, now: float, event: bool) -> None:
        """Frames were queued at ``now`` (monotonic, as the loop's clock): the keep-alive and idle timers."""
        self.last_write = now
        if event:
            self.idle_until = now + self._idle_seconds

    def discard(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._holder.end(self.handle)
