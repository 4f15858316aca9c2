"""Realtime clients and their subscriptions (PocketBase's ``tools/subscriptions``), and the SSE frames they
are sent.

A topic is what a client sent in ``POST /api/realtime``: ``posts/*``, ``posts/<id>`` or ``posts`` (by name or
id), optionally followed by ``?options={"query":{...},"headers":{...}}``; the whole string is the event's name.
Query values and header values are kept as strings; header names are snake_cased (``X-Token`` reads as
``@request.headers.x_token``), as PocketBase does.

A client's state (its auth and subscriptions) is one immutable :class:`ClientState`, replaced whole, so the
database threads that evaluate events read a consistent one without a lock (under the GIL an attribute read
is atomic). Everything else of a :class:`Client` (its queue, its wake-up) is used on the event loop only.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import orjson

from pbfast.http import parse_query

__all__ = [
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_MESSAGES",
    "Broker",
    "Client",
    "ClientAuth",
    "ConnectAddress",
    "ClientState",
    "Subscription",
    "SubscriptionOptions",
    "parse_subscription",
    "record_frame",
    "sse_frame",
]

CLIENT_ID_LENGTH: Final = 40
_CLIENT_ID_ALPHABET: Final = string.ascii_letters + string.digits
# What one client may have waiting for its connection; past either, it is dropped (a stalled reader must
# not hold the node's memory). PocketBase waits on an unbuffered channel instead, one goroutine per event.
MAX_QUEUED_MESSAGES: Final = 1000
MAX_QUEUED_BYTES: Final = 4 << 20


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """A topic's ``options``: the query and headers its events' rule checks see as ``@request.*``."""

    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def key(self) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """A hashable form: topics with equal options share their rule checks."""
        return tuple(sorted(self.query.items())), tuple(sorted(self.headers.items()))


@dataclass(frozen=True, slots=True)
class Subscription:
    topic: str  # as the client sent it: the event's name
    base: str  # the topic before its ``?``: ``posts/*``, ``posts/<id>``, ``posts``
    options: SubscriptionOptions
    options_key: tuple[object, ...]
    event_line: bytes = b""  # the frame's part after the client id (``\nevent:<topic>\ndata:``), made once

    def __post_init__(self) -> None:
        if not self.event_line:
            object.__setattr__(self, "event_line", b"\nevent:%b\ndata:" % self.topic.encode())


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Who a client subscribed as: an auth record, read again at every event. An update shows; a deleted
    record, or a new ``tokenKey`` (a password or email change, which also ends the record's tokens), makes the
    client a guest, as in PocketBase."""

    collection_id: str
    record_id: str
    token_key: str

    def same_record(self, other: ClientAuth | None) -> bool:
        return other is not None and (other.collection_id, other.record_id) == (self.collection_id, self.record_id)


@dataclass(frozen=True, slots=True)
class ClientState:
    auth: ClientAuth | None = None
    subscriptions: tuple[Subscription, ...] = ()


def _go_string(value: object) -> str:
    """A JSON value as Go's ``cast.ToString`` writes it (objects and arrays: empty)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    return ""


def _snake_case(name: str) -> str:
    """PocketBase's ``inflector.Snakecase``: words split at anything not a letter or digit, an underscore
    before each word and each capital, all lower case (``X-Token`` -> ``x_token``)."""
    out: list[str] = []
    word: list[str] = []
    words: list[str] = []
    for char in name:
        if char.isalnum():
            word.append(char)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    for item in words:
        for index, char in enumerate(item):
            if (char.isupper() or index == 0) and out:
                out.append("_")
            out.append(char.lower())
    return "".join(out)


def parse_subscription(topic: str) -> Subscription:
    """A topic as the client sent it, with its options read as PocketBase reads them (options that are not
    valid JSON objects are ignored)."""
    base, _, rest = topic.partition("?")
    raw = parse_query(rest.partition("#")[0]).get("options", [""])[0] if rest else ""
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    if raw:
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict):
            if isinstance(decoded.get("query"), dict):
                query = {str(k): _go_string(v) for k, v in decoded["query"].items()}
            if isinstance(decoded.get("headers"), dict):
                headers = {_snake_case(str(k)): _go_string(v) for k, v in decoded["headers"].items()}
    options = SubscriptionOptions(query, headers)
    return Subscription(topic, base, options, options.key())


def new_client_id() -> str:
    return "".join(secrets.choice(_CLIENT_ID_ALPHABET) for _ in range(CLIENT_ID_LENGTH))


def sse_frame(client_id: str, name: str, data: bytes) -> bytes:
    """One event as PocketBase writes it: ``id:``, ``event:``, ``data:`` lines and a blank line."""
    return b"id:%b\nevent:%b\ndata:%b\n\n" % (client_id.encode(), name.encode(), data)


def record_frame(client: Client, subscription: Subscription, data: bytes) -> bytes:
    """:func:`sse_frame` of a record event, from the parts made once (the stream holder joins them itself)."""
    return b"%b%b%b\n\n" % (client.id_line, subscription.event_line, data)


class ConnectAddress(NamedTuple):
    """The address a realtime stream was opened from, which its subscription requests must come from
    (PocketBase's ``RealtimeClientIPKey``). ``exact``: ``ip`` is PocketBase's ``RealIP`` under the tenant's
    ``trustedProxy`` settings as they were then; else only the peer (or the gateway's ``x-forwarded-for``)
    was known, the tenant's settings not being at hand when the stream opened."""

    ip: str
    exact: bool


class Client:
    """One realtime connection: its state, and the frames waiting to be written to it."""

    __slots__ = ("address", "closed_reason", "got_events", "id", "id_line", "idle_until", "last_write", "served_key",
                 "state", "still_served", "_queue", "_queued_bytes", "_waiter")

    def __init__(self, client_id: str, still_served: Callable[[], bool], now: float, idle_seconds: float,
                 served_key: object = None) -> None:
        self.id = client_id
        self.id_line = b"id:%b" % client_id.encode()  # its frames' first line, made once
        self.state = ClientState()
        self.still_served = still_served  # False once the node no longer serves the tenant it connected to
        self.served_key = served_key  # clients of a tenant with equal keys share one still_served verdict
        self.address: ConnectAddress | None = None  # where the stream was opened from (None: not known)
        self.closed_reason: str | None = None  # set once: the stream ends
        self.last_write = now  # loop time of the last write to the stream (events or keep-alive)
        self.idle_until = now + idle_seconds  # loop time the stream ends unless an event is written before
        self.got_events = False  # events queued since the last write
        # A list and a bare future: a deque and an asyncio.Event (with its own deque of waiters) held ~1.3 KB
        # more per idle client.
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None  # set while the stream waits for something to write

    @property
    def discarded(self) -> bool:
        return self.closed_reason is not None

    def push(self, frame: bytes) -> None:
        """Queue a frame (event loop). A client whose queue is full is dropped, never waited for."""
        if self.closed_reason is not None:
            return
        if len(self._queue) >= MAX_QUEUED_MESSAGES or self._queued_bytes + len(frame) > MAX_QUEUED_BYTES:
            self.discard("overflow")
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self.got_events = True
        self._wake()

    def ping(self, frame: bytes) -> None:
        """Queue a keep-alive frame (event loop): it does not count as an event for the idle timeout."""
        if self.closed_reason is None and not self._queue:
            self._queue.append(frame)
            self._wake()

    def take(self) -> bytes:
        """Every queued frame, joined (event loop)."""
        frames = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return frames

    def wait(self) -> asyncio.Future[None]:
        """Done once there is something to write or the client is discarded (event loop)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._queue or self.closed_reason is not None:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def discard(self, reason: str) -> None:
        """End the client's stream (once; its queue is dropped)."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self._queue.clear()
            self._queued_bytes = 0
            self._wake()


class Broker:
    """One tenant's clients by id. Changed on the event loop only; :attr:`snapshot` (a tuple replaced on
    every change) is what the database threads iterate."""

    __slots__ = ("_clients", "snapshot")

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        self.snapshot: tuple[Client, ...] = ()

    def __len__(self) -> int:
        return len(self._clients)

    def register(self, client: Client) -> None:
        self._clients[client.id] = client
        self.snapshot = tuple(self._clients.values())

    def unregister(self, client_id: str) -> None:
        if self._clients.pop(client_id, None) is not None:
            self.snapshot = tuple(self._clients.values())

    def client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)
