"""A raw SSE client speaking what PocketBase's JS SDK speaks: ``GET /api/realtime``, the client id from
``PB_CONNECT``, ``POST /api/realtime`` with the topics, then the events as they come (on a thread)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class SseEvent:
    id: str
    name: str
    data: Any


@dataclass
class RawRealtimeClient:
    base_url: str  # the tenant's base URL (``.../t/<id>``)
    token: str = ""
    events: list[SseEvent] = field(default_factory=list)
    comments: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    client_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    _connected: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _client: httpx.Client | None = None
    _socket: socket.socket | None = None
    status: int = 0

    def connect(self, timeout: float = 10.0) -> RawRealtimeClient:
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            raise AssertionError(f"no PB_CONNECT within {timeout}s (status {self.status})")
        return self

    def _read(self) -> None:
        assert self._client is not None
        try:
            with self._client.stream("GET", f"{self.base_url}/api/realtime") as response:
                self.status = response.status_code
                self.headers = dict(response.headers)
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                if response.status_code != 200:
                    response.read()
                    return
                pending: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments += 1
                    elif line == "":
                        if "event" in pending:
                            data = orjson.loads(pending.get("data", "null"))
                            event = SseEvent(pending.get("id", ""), pending["event"], data)
                            if event.name == "PB_CONNECT":
                                self.client_id = event.id
                                self._connected.set()
                            else:
                                self.events.append(event)
                        pending = {}
                    else:
                        key, _, value = line.partition(":")
                        pending[key] = value
        except (httpx.HTTPError, OSError):
            pass
        finally:
            self.ended.set()
            self._connected.set()

    def subscribe(self, topics: list[str], token: str | None = None) -> httpx.Response:
        headers = {"Authorization": self.token if token is None else token}
        return httpx.post(f"{self.base_url}/api/realtime", json={"clientId": self.client_id, "subscriptions": topics},
                          headers={k: v for k, v in headers.items() if v}, timeout=30)

    def wait_events(self, count: int, timeout: float = 10.0) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline and not self.ended.is_set():
            time.sleep(0.01)
        return list(self.events)

    def close(self) -> None:
        """End the stream from this side: the reader thread, blocked in a read, sees the end at once (closing the
        httpx client alone would leave it waiting for the server)."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.close()
