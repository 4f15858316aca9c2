"""A tenant node's membership in the cluster: registration and one heartbeat per second.

Each heartbeat carries the per-tenant usage counted since the last one (API requests, stored bytes, and the
database counters an operator needs to see who is noisy: requests stopped by their time limit, refused
because the tenant's queue was full, time waited for a database thread) and
returns the node's assignments, which the node adopts (:meth:`TenantNodeApp.apply_assignments`), and the
control plane's node timeout. Usage of a heartbeat that failed is kept and sent with the next one, so no
request goes uncounted.

Every acknowledged heartbeat renews the node's lease (:mod:`pbfast.tenant_node.lease`) from the moment it
was sent; :meth:`TenantNodeApp.watch_lease` fences the node when the lease runs out. Heartbeats go every
``min(1 s, node timeout / 5)`` and one attempt waits at most ``node timeout / 4`` for a member, so a hung
control plane member costs one attempt, not the lease. A busy event loop does not either: when the loop's
heartbeats are late, a thread beside it (:mod:`pbfast.tenant_node.lease_keeper`, given ``beside_loop``) sends
bare ones and keeps a valid lease renewed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pbfast.cluster.heartbeat import Heartbeat, HeartbeatAnswer, LastRead, TenantUsage
from pbfast.cp_client import ControlPlaneClient, ControlPlaneError, ControlPlaneUnavailable
from pbfast.logs import component_logger
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.lease import (
    HEARTBEAT_SECONDS,
    SERVE_FRACTION,
    Lease,
    heartbeat_interval,
    heartbeat_timeout,
)
from pbfast.tenant_node.lease_keeper import BareBeat, LeaseKeeper

__all__ = ["NodeMembership"]

log = component_logger("TenantNode")

# Until the first answer says otherwise (and for a control plane that does not send it): the default.
DEFAULT_NODE_TIMEOUT_SECONDS = 5.0
# A heartbeat acknowledged after this fraction of the serving window is logged (see _note_round_trip).
SLOW_ROUND_TRIP_FRACTION = 0.2
# Bare heartbeats sent beside a full one still waiting for its answer (bounded: a dead control plane must
# not collect a pile of requests; each waits at most heartbeat_timeout per member).
MAX_BARE_IN_FLIGHT = 2


class NodeMembership:
    """Runs :meth:`run` as a task on the node's event loop. ``beside_loop``: how the lease keeper's thread sends
    its bare heartbeats (None: no keeper, the loop alone keeps the lease)."""

    def __init__(self, client: ControlPlaneClient, node: TenantNodeApp, address: str, max_tenants: int,
                 interval: float = HEARTBEAT_SECONDS, lease: Lease | None = None, instance_id: str | None = None,
                 beside_loop: BareBeat | None = None) -> None:
        self.client = client
        self.node = node
        self.address = address
        self.max_tenants = max_tenants
        self.interval = interval
        self._last_read = LastRead()  # the last answer's assignments, each read once while it stays the same
        self.lease = lease or Lease()
        self._pending: dict[str, TenantUsage] = {}
        # tenant -> (storage bytes, window start) as last acknowledged: an idle tenant is not reported again
        self._reported: dict[str, tuple[int, int]] = {}
        # tenant -> (time limited, queue rejected, wait ms), cumulative, as of the last acknowledged heartbeat
        self._db_reported: dict[str, tuple[int, int, int]] = {}
        self._db_sending: dict[str, tuple[int, int, int]] = {}
        self._registered = False
        self._reported_unreachable = False
        self._reported_conflict = False
        # tells this node apart from another process claiming the same node id (see pbfast.node_identity)
        self.instance_id = instance_id or secrets.token_hex(8)
        self._beating = asyncio.Lock()
        self.slowest_round_trip = 0.0  # seconds, of the acknowledged heartbeats
        self._adopted_sent_at = float("-inf")  # when the heartbeat whose answer was adopted last was sent
        node.refresh_assignments = self.beat_once
        node.lease = self.lease
        self.keeper: LeaseKeeper | None = None
        if beside_loop is not None:
            self.keep_lease_beside_loop(beside_loop)

    def keep_lease_beside_loop(self, send: BareBeat) -> None:
        """Have a lease keeper thread send bare heartbeats with ``send`` while the loop's are late (before
        :meth:`run`)."""
        self.keeper = LeaseKeeper(self.lease, send, self._keeper_heartbeat, self.beat_interval)

    def beat_interval(self) -> float:
        """Seconds between heartbeats now."""
        return min(self.interval, heartbeat_interval(self.node_timeout))

    def _keeper_heartbeat(self) -> Heartbeat | None:
        """The lease keeper's bare heartbeat (its thread: reads only plain attributes and a dict's length)."""
        if not self._registered:
            return None
        return Heartbeat(self.node.slots.serving_count(), {}, [], self.instance_id)

    @property
    def node_timeout(self) -> float:
        return self.lease.node_timeout or DEFAULT_NODE_TIMEOUT_SECONDS

    async def register(self) -> None:
        """Register this process as the node. While another live process holds the node id the control plane
        answers 409: this one then serves nothing (its lease is never renewed) and tries again every beat, so
        it takes over once the other has been silent for the node timeout (a restart after a crash)."""
        try:
            await self.client.request("PUT", f"/api/cp/nodes/{self.node.node_id}",
                                      {"address": self.address, "maxTenants": self.max_tenants,
                                       "instanceId": self.instance_id},
                                      timeout=heartbeat_timeout(self.node_timeout))
        except ControlPlaneError as err:
            if err.status == 409 and not self._reported_conflict:
                log.error("not serving: %s", err.body.get("message", err))
                self._reported_conflict = True
            raise
        if self._reported_conflict:
            log.info("node id %s is this process's now", self.node.node_id)
            self._reported_conflict = False
        self._registered = True
        log.info("registered with the control plane as %s at %s", self.node.node_id, self.address)

    def _collect_usage(self) -> dict[str, TenantUsage]:
        """Usage to report: tenants with requests since the last acknowledged heartbeat, or whose stored
        bytes or counting window changed; an idle tenant adds nothing to the heartbeat (or its Raft entry)."""
        for tenant_id, (requests, storage, window) in self.node.quotas.snapshot_and_reset().items():
            pending = self._pending.get(tenant_id)
            if pending is None and requests == 0 and self._reported.get(tenant_id) == (storage, window):
                continue
            if pending is None or window > pending.period_start:
                self._pending[tenant_id] = TenantUsage(requests, storage, window)
            else:
                pending.api_requests += requests
                pending.storage_bytes = storage
        usage = {tid: TenantUsage(p.api_requests, p.storage_bytes, p.period_start) for tid, p in self._pending.items()}
        loads = self.node.db_loads()
        self._db_sending = {}
        for tenant_id, entry in usage.items():  # a tenant's database work comes with its requests
            load = loads.get(tenant_id)
            if load is None:
                continue
            now = (load.time_limited, load.rejected, int(load.wait_seconds * 1000))
            before = self._db_reported.get(tenant_id, (0, 0, 0))
            entry.db_time_limited, entry.db_queue_rejected, entry.db_wait_ms = (
                max(0, a - b) for a, b in zip(now, before))
            self._db_sending[tenant_id] = now
        return usage

    async def beat_once(self) -> None:
        """One heartbeat: report usage, adopt the assignments returned. Serialised."""
        async with self._beating:
            await self._beat()

    async def _beat(self) -> None:
        if not self._registered:
            await self.register()
        usage = self._collect_usage()
        applied = sorted(self.node.superusers_applied)
        sent_at = self.lease.clock()  # the control plane stamps its arrival, later: the lease errs early
        raw = await self._send(Heartbeat(len(self.node.open_tenants), usage, applied, self.instance_id))
        for tenant_id, entry in usage.items():
            self._reported[tenant_id] = (entry.storage_bytes, entry.period_start)
        self._db_reported.update(self._db_sending)
        self._pending.clear()
        self.node.superusers_applied.difference_update(applied)
        answer = self._accept(raw, sent_at)
        if answer is not None and len(self._reported) > len(self.node.assignments) + len(usage):
            assigned = answer.assignments.tenants.keys() | answer.assignments.unusable.keys()
            for tenant_id in [t for t in self._reported if t not in assigned]:
                del self._reported[tenant_id]
                self._db_reported.pop(tenant_id, None)

    async def bare_beat(self) -> None:
        """A heartbeat without usage, sent beside one still waiting for its answer (see :meth:`run`): it renews
        the lease like any other, and the usage stays with the heartbeat that carries it."""
        if not self._registered:
            return
        sent_at = self.lease.clock()
        self._accept(await self._send(Heartbeat(len(self.node.open_tenants), {}, [], self.instance_id)), sent_at)

    async def _send(self, heartbeat: Heartbeat) -> Any:
        try:
            return await self.client.request("POST", f"/api/cp/nodes/{self.node.node_id}/heartbeat",
                                             heartbeat.to_json(), timeout=heartbeat_timeout(self.node_timeout))
        except ControlPlaneError as err:
            if err.status in (404, 409):  # unknown, or another process took the node id over: register again
                self._registered = False
            raise

    def _accept(self, raw: Any, sent_at: float) -> HeartbeatAnswer | None:
        """Adopt the assignments of an acknowledged heartbeat sent at ``sent_at`` and renew the lease from then;
        None (nothing adopted) when a heartbeat sent later was answered first: its answer is the newer one."""
        answer = HeartbeatAnswer.from_json(raw, self._last_read)  # malformed: ValueError, nothing applied or renewed
        self._note_round_trip(self.lease.clock() - sent_at)
        if sent_at <= self._adopted_sent_at:
            return None
        self._adopted_sent_at = sent_at
        # Applied, then renewed, without an await in between: no request sees the lease valid before the
        # fenced tenants are sorted out.
        self.node.adopt(answer.assignments)
        self.lease.renew(sent_at, answer.node_timeout_seconds or DEFAULT_NODE_TIMEOUT_SECONDS)
        return answer

    def _note_round_trip(self, seconds: float) -> None:
        """Log a heartbeat that took a fifth of the serving window or more: the lease's margin is being eaten
        (a starved or blocked event loop, a slow control plane), and this says by how much before a fence."""
        self.slowest_round_trip = max(self.slowest_round_trip, seconds)
        if seconds >= SLOW_ROUND_TRIP_FRACTION * SERVE_FRACTION * self.node_timeout:
            log.warning("heartbeat took %.2f s to be acknowledged (node timeout %.1f s: fenced after %.1f s)",
                        seconds, self.node_timeout, SERVE_FRACTION * self.node_timeout)

    async def run(self) -> None:
        """A heartbeat every interval. One still waiting for its answer when the next is due (a starved machine,
        a slow control plane member) is not waited for: a bare heartbeat goes beside it (at most
        :data:`MAX_BARE_IN_FLIGHT`), so a round trip longer than the interval costs no lease while any answer
        arrives within the serving window of its own sending."""
        watcher = asyncio.create_task(self.node.watch_lease(), name="lease-watch")
        if self.keeper is not None:
            self.keeper.start()
        full: asyncio.Task[None] | None = None
        bare: set[asyncio.Task[None]] = set()
        try:
            while True:
                started = time.monotonic()
                if full is None or full.done():
                    full = asyncio.create_task(self._logged(self.beat_once), name="heartbeat")
                    if self.lease.node_timeout is None:  # the first answer brings the node timeout the interval
                        await asyncio.wait({full})      # below depends on: no lease to lose before it
                elif len(bare) < MAX_BARE_IN_FLIGHT:
                    task = asyncio.create_task(self._logged(self.bare_beat), name="heartbeat-bare")
                    bare.add(task)
                    task.add_done_callback(bare.discard)
                await asyncio.sleep(max(0.0, self.beat_interval() - (time.monotonic() - started)))
        finally:
            if self.keeper is not None:
                self.keeper.stop()
            watcher.cancel()
            for pending in ([full] if full is not None else []) + list(bare):
                pending.cancel()

    async def _logged(self, beat: Callable[[], Awaitable[None]]) -> None:
        try:
            await beat()
            if self._reported_unreachable:
                log.info("control plane reachable again")
                self._reported_unreachable = False
        except (ControlPlaneUnavailable, ControlPlaneError) as err:
            if not self._reported_unreachable:
                log.warning("heartbeat failed: %s", err)
                self._reported_unreachable = True
        except Exception:  # noqa: BLE001 - membership must keep running
            log.exception("heartbeat failed unexpectedly")
