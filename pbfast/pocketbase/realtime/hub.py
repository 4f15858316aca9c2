"""The node's realtime hub: every tenant's :class:`Broker`, the SSE streams (``GET /api/realtime``), the
connection limits, and the one door record changes come in through (:meth:`RealtimeHub.publish`).

Threads: streams, brokers and deliveries live on the event loop; :meth:`publish` is called on a database
thread (the writer's, right after its commit) and hands the frames it made to the loop with
``call_soon_threadsafe``, whose callbacks run in the order they were scheduled: a tenant's events reach each
client in commit order. A client's queue is bounded and one that overflows is dropped; nothing ever waits for
a client, so a slow one slows nobody. What a client has not read yet beyond that sits in granian's buffers,
which have no limit (its sends never wait): a client that stopped reading is cut by the gateway after its
client idle timeout, which frees them (docs/realtime.md).

A stream lives as PocketBase's does: ``PB_CONNECT`` first, then the events; it ends after
:data:`IDLE_TIMEOUT_SECONDS` without an event (the SDKs reconnect and resubscribe), when the client goes
away, when it is dropped, and when this node stops serving the tenant under the epoch the stream was opened
with (a move, a delete, a lost lease: checked every :data:`SWEEP_SECONDS`; the SDKs then reconnect through the
gateway to wherever the tenant is). Unlike PocketBase, a comment line (``:``) goes out every
:data:`KEEPALIVE_SECONDS` so proxies that cut idle connections leave the stream alone; SSE clients ignore it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from pbfast.http import HTTPProtocol, send_error
from pbfast.logs import component_logger
from pbfast.cluster.wire import STREAM_HELD_HEADER, STREAM_MUX_HEADER
from pbfast.pocketbase.realtime.fanout import Delivery, RecordChange, evaluate
from pbfast.pocketbase.realtime.held import END_REASONS, HeldClient
from pbfast.pocketbase.realtime.subscriptions import (Broker, Client, ConnectAddress, new_client_id, record_frame,
                                                      sse_frame)
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import StreamHolder

__all__ = ["DEFAULT_LIMITS", "IDLE_TIMEOUT_SECONDS", "KEEPALIVE_SECONDS", "RealtimeBus", "RealtimeHub", "RealtimeLimits"]

log = component_logger("Realtime")

IDLE_TIMEOUT_SECONDS: Final = 300.0  # PocketBase's idle timeout: no event for 5 minutes ends the stream
KEEPALIVE_SECONDS: Final = 20.0
SWEEP_SECONDS: Final = 1.0
SSE_HEADERS: Final = [("content-type", "text/event-stream"), ("cache-control", "no-store"),
                      ("x-accel-buffering", "no")]
KEEPALIVE_FRAME: Final = b":\n\n"
TOO_MANY_FOR_TENANT: Final = "Too many realtime connections for this tenant; retry later."
TOO_MANY_FOR_NODE: Final = "Too many realtime connections on this server; retry later."


class _FutureLike(Protocol):
    def add_done_callback(self, callback: Callable[[Any], object], /) -> None: ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


class RealtimeBus(Protocol):
    """Where committed record changes go: :func:`pbfast.pocketbase.realtime.record_changed` calls
    ``publish`` on the database thread holding ``tenant``, right after the commit, in commit order.

    The seam for a node of several processes: a bus that calls the local hub's ``publish`` and also sends
    ``(tenant.id, change)`` (plain data) to its sibling processes, each of which evaluates it for its own
    clients with ``RealtimeHub.publish`` in a database turn of that tenant there."""

    def publish(self, tenant: Tenant, change: RecordChange) -> None: ...


@dataclass(frozen=True, slots=True)
class RealtimeLimits:
    """Open streams allowed per tenant and per node (more get 429, PocketBase-shaped, with Retry-After)."""

    per_tenant: int = 5_000
    per_node: int = 50_000


DEFAULT_LIMITS: Final = RealtimeLimits()


class RealtimeHub:
    """Every realtime client of this node, by tenant. Implements :class:`RealtimeBus`."""

    def __init__(self, limits: RealtimeLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._brokers: dict[str, Broker] = {}
        self._open = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.dropped = 0  # clients dropped for a full queue
        # Told when a tenant's first stream opens (True) and its last one ends (False), on the event loop.
        self.on_presence: Callable[[str, bool], None] | None = None
        self.holder: StreamHolder | None = None  # streams held natively (see pbfast.pocketbase.realtime.held)
        self._held: dict[int, tuple[str, HeldClient]] = {}  # by the holder's handle

    def attach_holder(self, holder: StreamHolder, loop: asyncio.AbstractEventLoop) -> None:
        """Hold the streams gateways ask for in ``holder`` (call on ``loop``, before serving)."""
        self.holder = holder
        self._loop = loop
        loop.add_reader(holder.wake_fd, self._held_ended)

    def detach_holder(self) -> None:
        if self.holder is not None and self._loop is not None:
            self._loop.remove_reader(self.holder.wake_fd)

    def holds(self, asked: str | None) -> bool:
        """Whether a stream whose request carried ``asked`` (``x-pbfast-stream-holder``) is held natively."""
        return asked is not None and self.holder is not None and self.holder.token_matches(asked)

    # ---- counts ---------------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return self._open

    def tenant_streams(self, tenant_id: str) -> int:
        broker = self._brokers.get(tenant_id)
        return 0 if broker is None else len(broker)

    def broker(self, tenant_id: str) -> Broker | None:
        """The tenant's clients (event loop; database threads read only ``snapshot``)."""
        return self._brokers.get(tenant_id)

    # ---- record changes (database threads) ----------------------------------------------------------

    def publish(self, tenant: Tenant, change: RecordChange) -> None:
        """Evaluate ``change`` for the tenant's clients and queue what each may see (see
        :mod:`pbfast.pocketbase.realtime.fanout`). Call on the thread holding the tenant's connection."""
        broker = self._brokers.get(tenant.id)
        loop = self._loop
        if broker is None or loop is None:
            return
        clients = broker.snapshot
        if not clients:
            return
        deliveries = evaluate(tenant, clients, change)
        if not deliveries:
            return
        if self.holder is not None:
            # Held streams' frames are queued from this thread in one call, in commit order (no hop through the
            # event loop); the holder joins each frame's parts.
            held = [(client.handle, client.id_line, subscription.event_line, data)
                    for client, subscription, data in deliveries if type(client) is HeldClient]
            if held:
                self.holder.send_frames(held)
                now = time.monotonic()
                idle_until = now + IDLE_TIMEOUT_SECONDS
                for client, _, _ in deliveries:
                    if type(client) is HeldClient:  # HeldClient.written, inline: a thousand calls were ~0.3 ms
                        client.last_write = now
                        client.idle_until = idle_until
                if len(held) == len(deliveries):
                    return
                deliveries = [delivery for delivery in deliveries if type(delivery[0]) is not HeldClient]
        loop.call_soon_threadsafe(_deliver, deliveries)

    # ---- streams (event loop) -----------------------------------------------------------------------

    async def connect(self, tenant_id: str, proto: HTTPProtocol, still_served: Callable[[], bool],
                      served_key: object = None, held: bool = False, address: ConnectAddress | None = None) -> None:
        """``GET /api/realtime`` of ``tenant_id``: the SSE stream, until it ends (see the module docs).
        ``still_served``: whether the node still serves the tenant as when the stream was admitted; streams of
        a tenant with the same ``served_key`` (the epoch they were admitted under) share one check per sweep.
        ``held`` (see :meth:`holds`): the stream goes to the native holder and this returns at once. ``address``:
        where the stream was opened from, kept with the client for its subscription requests."""
        broker = self._brokers.get(tenant_id)
        if self._open >= self.limits.per_node:
            send_error(proto, 429, TOO_MANY_FOR_NODE, headers=[("retry-after", "5")])
            return
        if broker is not None and len(broker) >= self.limits.per_tenant:
            send_error(proto, 429, TOO_MANY_FOR_TENANT, headers=[("retry-after", "5")])
            return
        self._loop = asyncio.get_running_loop()
        if broker is None:
            broker = self._brokers[tenant_id] = Broker()
            if self.on_presence is not None:
                self.on_presence(tenant_id, True)
        if held and self.holder is not None:
            self._hold(tenant_id, broker, proto, still_served, served_key, self.holder, address)
            return
        client = Client(new_client_id(), still_served, self._loop.time(), IDLE_TIMEOUT_SECONDS, served_key)
        client.address = address
        broker.register(client)
        self._open += 1
        self._start_sweeper()
        disconnect: _FutureLike | None = None
        try:
            transport = proto.response_stream(200, SSE_HEADERS)  # type: ignore[attr-defined]
            client_disconnect = getattr(proto, "client_disconnect", None)
            if client_disconnect is not None:
                watch = client_disconnect()
                # granian's is a future of its own: a callback on it costs no task per stream.
                disconnect = cast(_FutureLike, watch) if hasattr(watch, "add_done_callback") else asyncio.ensure_future(watch)
                disconnect.add_done_callback(lambda _: client.discard("gone"))
            await self._pump(client, transport)
        finally:
            if disconnect is not None and not disconnect.done():
                disconnect.cancel()
            client.discard(client.closed_reason or "ended")
            self._remove(tenant_id, broker, client)

    def _hold(self, tenant_id: str, broker: Broker, proto: HTTPProtocol, still_served: Callable[[], bool],
              served_key: object, holder: StreamHolder, address: ConnectAddress | None) -> None:
        """Admit the stream into the holder with its ``PB_CONNECT`` queued, and answer its head with where the
        gateway reads it; the client lives until the holder reports its stream ended (:meth:`_held_ended`)."""
        client_id = new_client_id()
        handle, ticket = holder.admit(sse_frame(client_id, "PB_CONNECT", b'{"clientId":"%b"}' % client_id.encode()))
        assert self._loop is not None
        client = HeldClient(client_id, still_served, self._loop.time(), IDLE_TIMEOUT_SECONDS, served_key, holder,
                            handle)
        client.address = address
        broker.register(client)
        self._open += 1
        self._held[handle] = (tenant_id, client)
        self._start_sweeper()
        held = [(STREAM_HELD_HEADER, f"{holder.port} {ticket}")]
        if holder.mux:  # the multiplexed connection's versions the holder speaks (older gateways drop it)
            held.append((STREAM_MUX_HEADER, "1"))
        proto.response_empty(200, [*SSE_HEADERS, *held])

    def _held_ended(self) -> None:
        """The holder's streams that ended (the gateway went away, overflow, ended here, never attached)."""
        assert self.holder is not None
        for handle, reason in self.holder.take_ended():
            entry = self._held.pop(handle, None)
            if entry is None:
                continue
            tenant_id, client = entry
            if client.closed_reason is None:
                client.closed_reason = END_REASONS.get(reason, "gone")
            broker = self._brokers.get(tenant_id)
            if broker is not None:
                self._remove(tenant_id, broker, client)

    def _remove(self, tenant_id: str, broker: Broker, client: Client) -> None:
        broker.unregister(client.id)
        self._open -= 1
        if not len(broker) and self._brokers.get(tenant_id) is broker:
            del self._brokers[tenant_id]
            if self.on_presence is not None:
                self.on_presence(tenant_id, False)
        if client.closed_reason == "overflow":
            self.dropped += 1
            log.info("tenant %s: realtime client %s dropped (%s)", tenant_id, client.id, client.closed_reason)

    async def _pump(self, client: Client, transport: Any) -> None:
        """Write ``PB_CONNECT``, then the client's frames as they come. No timer per stream: the sweep queues
        keep-alives and ends idle streams (see :meth:`_sweep`)."""
        loop = asyncio.get_running_loop()
        if not await _send(client, transport,
                           sse_frame(client.id, "PB_CONNECT", b'{"clientId":"%b"}' % client.id.encode())):
            return
        while True:
            await client.wait()
            if client.discarded:
                return
            now = loop.time()
            if client.got_events:
                client.got_events = False
                client.idle_until = now + IDLE_TIMEOUT_SECONDS
            client.last_write = now
            if not await _send(client, transport, client.take()):
                return

    def end_tenant(self, tenant_id: str, reason: str = "moved") -> int:
        """End every stream of ``tenant_id`` (the SDKs reconnect); how many there were."""
        broker = self._brokers.get(tenant_id)
        if broker is None:
            return 0
        for client in broker.snapshot:
            client.discard(reason)
        return len(broker.snapshot)

    def end_all(self, reason: str = "shutdown") -> None:
        for tenant_id in list(self._brokers):
            self.end_tenant(tenant_id, reason)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        """Every :data:`SWEEP_SECONDS` while streams are open: end the streams of tenants this node no longer
        serves as when they were opened, and idle ones; queue a keep-alive where nothing was written for
        :data:`KEEPALIVE_SECONDS`."""
        loop = asyncio.get_running_loop()
        while self._brokers:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for tenant_id, broker in list(self._brokers.items()):
                verdicts: dict[object, bool] = {}
                for client in broker.snapshot:
                    if client.discarded:
                        continue
                    served = verdicts.get(client.served_key) if client.served_key is not None else None
                    if served is None:
                        try:
                            served = client.still_served()
                        except Exception:  # noqa: BLE001 - a failing check ends the stream, not the sweep
                            log.exception("tenant %s: realtime check failed", tenant_id)
                            served = False
                        if client.served_key is not None:
                            verdicts[client.served_key] = served
                    if not served:
                        client.discard("moved")
                    elif now >= client.idle_until:
                        client.discard("idle")
                    elif now - client.last_write >= KEEPALIVE_SECONDS:
                        client.ping(KEEPALIVE_FRAME)


async def _send(client: Client, transport: Any, data: bytes) -> bool:
    """Hand ``data`` to the connection. granian buffers what the client has not read yet without a limit (its
    send never waits), so a client that stopped reading is cut by the gateway's client idle timeout."""
    try:
        await transport.send_bytes(data)
    except Exception:  # noqa: BLE001 - the connection is gone (granian: RSGIProtocolClosed)
        client.discard("gone")
        return False
    return True


def _deliver(deliveries: list[Delivery]) -> None:
    for client, subscription, data in deliveries:
        client.push(record_frame(client, subscription, data))

