"""The tenant node: an RSGI app serving its tenants' PocketBase APIs, and the surface its membership, the
control plane, the gateway (in all-in-one, in-process) and the server use.

:class:`TenantNodeApp` only puts the node together; each concern has its module, and they depend on each
other one way (later ones on earlier ones):

- :mod:`~pbfast.tenant_node.slots`: a tenant on this node (:class:`TenantSlot`): its connection's state
  (closed, opening, serving, closing) and its transitions, its ownership, its local copy's state;
- :mod:`~pbfast.tenant_node.ownership`: which tenants the node may serve under which epoch, and its lease;
- :mod:`~pbfast.tenant_node.copies` (with :mod:`~pbfast.tenant_node.local_copy`): the local copies on disk;
- :mod:`~pbfast.tenant_node.restore` (with :mod:`~pbfast.tenant_node.damaged`): which state a tenant opens
  with, restores from the replica;
- :mod:`~pbfast.tenant_node.checkpoints`: only Litestream checkpoints a tenant it may be replicating;
- :mod:`~pbfast.tenant_node.pool`: opening, closing, evicting, idle tenants;
- :mod:`~pbfast.tenant_node.handover`: releases, and closed copies shipped after a failed final sync;
- :mod:`~pbfast.tenant_node.fencing`: what the node does when its lease runs out;
- :mod:`~pbfast.tenant_node.transfer`: import, export and superusers for the control plane;
- :mod:`~pbfast.tenant_node.serving`: one tenant request; :mod:`~pbfast.tenant_node.status`: health and
  gauges; :mod:`~pbfast.tenant_node.routes`: the HTTP routes.

With worker processes (``--workers`` > 1) the node is this app in the main process, deciding as above, plus
the workers that serve the tenant requests (:mod:`~pbfast.tenant_node.workers`,
:mod:`~pbfast.tenant_node.worker`): every decision is mirrored into shared memory for them
(:mod:`~pbfast.tenant_node.shared_state`), the quotas are counted there, and every close waits for them.

Beside them: :mod:`~pbfast.tenant_node.membership` (registration and heartbeats), the lease
(:mod:`~pbfast.tenant_node.lease`), Litestream (:mod:`~pbfast.tenant_node.replication`), the database
threads (:mod:`~pbfast.tenant_node.db_scheduler`) and the metrics (:mod:`~pbfast.tenant_node.metrics`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from pbfast.cluster.heartbeat import Assignments, FirstSuperuser
from pbfast.config import EngineSettings
from pbfast.http import HTTPProtocol, Scope
from pbfast.logs import current_request_id
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.apis.record_auth_otp import attempts as otp_attempts
from pbfast.pocketbase.realtime import RealtimeLimits
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import QuotaCounters, SharedQuotas, TenantCache
from pbfast.tenant_node.db_scheduler import TenantLoad
from pbfast.tenant_node.shared_state import SharedState, merge_loads
from pbfast.request_ids import WithRequestId, bind_request_id
from pbfast.tenant_node.checkpoints import Checkpoints
from pbfast.tenant_node.copies import LocalCopies
from pbfast.native_reads import attach_at_start
from pbfast.tenant_node.db_scheduler import DbScheduler
from pbfast.tenant_node.fencing import Fencing
from pbfast.tenant_node.handover import RELEASE_BUDGET_SECONDS, Handover
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.metrics import NodeGauges, NodeMetrics
from pbfast.tenant_node.ownership import Ownership
from pbfast.tenant_node.pool import CLOSE_ALL_SECONDS, TenantPool
from pbfast.tenant_node.replication import Replicator
from pbfast.tenant_node.restore import Restorer
from pbfast.tenant_node.routes import NodeRoutes
from pbfast.tenant_node.serving import Serving
from pbfast.tenant_node.slots import Assignment, Slots, TenantSlot
from pbfast.tenant_node.status import NodeStatus
from pbfast.tenant_node.tasks import BackgroundTasks
from pbfast.tenant_node.transfer import Transfer

__all__ = ["TenantNodeApp"]


class TenantNodeApp:
    """RSGI app of one tenant node. Thread-safety: event loop only (the native primitives it holds are
    themselves thread-safe)."""

    def __init__(self, node_id: str, max_tenants: int, cluster_token: str, data_dir: Path,
                 replicator: Replicator | None = None, engine: EngineSettings | None = None,
                 shared: SharedState | None = None) -> None:
        attach_at_start()  # record views read natively on apsw's SQLite (or one log line: Python serves them)
        self.node_id = node_id
        self.replicator = replicator
        self.shared = shared  # with worker processes: what they see of this node
        # Every piece of a tenant's database work runs here, off the event loop, fairly between tenants.
        engine = engine or EngineSettings()
        self.db = DbScheduler(engine.db_threads, engine.queue_limit)
        self.api = TenantApi(RealtimeLimits(engine.realtime_per_tenant, engine.realtime_per_node))
        self.api.on_time_limit = self.db.count_time_limited
        self.api.password_checks.share_with(self.db)
        self.quotas: QuotaCounters | SharedQuotas = QuotaCounters() if shared is None else shared.quotas
        self.metrics = NodeMetrics(shared)
        self.metrics.request_logs = lambda: (self.api.request_logs.dropped, self.api.request_logs.failed)
        self.open_tenants = TenantCache(max_tenants)
        self.superusers_applied: set[str] = set()  # first superusers applied, reported with the next heartbeat
        self.slots = Slots(None if shared is None else shared.mirror)
        if shared is not None:  # the workers hand this tenant's writes over while it has streams here
            self.api.realtime.on_presence = self._realtime_presence
            self.api.rate_limits.limiter = shared.rate_limiter  # one count per client with the workers'
            otp_attempts.shared = shared.rate_limiter  # so are OTP guesses
        self.background = BackgroundTasks()
        self.ownership = Ownership(self.slots, self.quotas, self.metrics)
        if shared is not None:
            self.ownership.on_lease_change = self._publish_lease
        self.copies = LocalCopies(data_dir / "tenants", node_id, self.slots)
        self.restorer = Restorer(node_id, self.slots, self.copies, replicator, self.metrics)
        self.checkpoints = Checkpoints(self.slots, self.db, replicator, self.background)
        self.pool = TenantPool(node_id, self.slots, self.open_tenants, self.ownership, self.copies, self.restorer,
                               self.db, replicator, self.metrics, self.quotas, self.background, self.checkpoints,
                               self.superusers_applied, shared)
        self.api.request_logs.follow_open_tenants(self.pool.serves_directory, max_tenants)
        self.handover = Handover(node_id, self.slots, self.ownership, self.pool, self.copies, replicator,
                                 self.background)
        self.fencing = Fencing(self.slots, self.ownership, self.pool, replicator, self.metrics, self.background)
        self.transfer = Transfer(node_id, self.slots, self.ownership, self.pool, self.copies, self.db, replicator,
                                 self.background, self.superusers_applied)
        self.serving = Serving(self.ownership, self.pool, self.api, self.db, replicator, self.quotas, self.metrics,
                               engine.request_time_limit)
        self.status = NodeStatus(self.slots, self.ownership, self.restorer, self.db, replicator, self.db_loads)
        self.status.realtime = self.api.realtime
        self.metrics_tokens = [cluster_token]  # all-in-one adds the admin token
        self.routes = NodeRoutes(cluster_token, self.metrics_tokens, self.serving, self.handover, self.transfer,
                                 self.restorer, self.status, self.metrics)
        self._consequences = _AdoptionConsequences(self)

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        request_id, bound = bind_request_id(scope)  # the gateway's; logged with every line of this request
        try:
            await self.routes.dispatch(scope, WithRequestId(proto, request_id))
        finally:
            current_request_id.reset(bound)

    # ---- membership: assignments and the lease ------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        """The node's lease (set by its membership; without one, as in benchmarks, the node serves freely)."""
        return self.ownership.lease

    @lease.setter
    def lease(self, lease: Lease | None) -> None:
        self.ownership.lease = lease
        if self.shared is not None:
            if lease is not None:
                lease.on_renew = self._publish_lease
            self._publish_lease()

    def _realtime_presence(self, tenant_id: str, present: bool) -> None:
        self.slots[tenant_id].realtime_clients = present

    def _publish_lease(self) -> None:
        """Tell the workers how long they may serve (the lease was set, renewed, lost or fenced)."""
        assert self.shared is not None
        self.shared.publish_lease(self.ownership.lease, self.ownership.fenced is not None)

    @property
    def refresh_assignments(self) -> Callable[[], Awaitable[None]] | None:
        """Set by the node's membership: fetch assignments from the control plane now."""
        return self.ownership.refresh_assignments

    @refresh_assignments.setter
    def refresh_assignments(self, refresh: Callable[[], Awaitable[None]] | None) -> None:
        self.ownership.refresh_assignments = refresh

    def apply_assignments(self, tenants: object, deleted: object) -> None:
        """:meth:`adopt` the tenants and deletions of a heartbeat answer as JSON (checked first: see
        :meth:`pbfast.cluster.heartbeat.Assignments.from_json`). Raises ValueError, before changing anything,
        when the answer is malformed."""
        self.adopt(Assignments.from_json(tenants, deleted))

    def adopt(self, answer: Assignments) -> None:
        """Adopt the control plane's view (:meth:`pbfast.tenant_node.ownership.Ownership.adopt`)."""
        self.ownership.adopt(answer, self._consequences)

    async def watch_lease(self) -> None:
        await self.fencing.watch_lease()

    def fence(self) -> None:
        self.fencing.fence()

    # ---- the control plane's calls ------------------------------------------------------------------

    async def release(self, tenant_id: str, epoch: int, budget: float = RELEASE_BUDGET_SECONDS) -> None:
        await self.handover.release(tenant_id, epoch, budget)

    async def upsert_tenant_superuser(self, tenant_id: str, email: str, password_hash: str) -> None:
        await self.transfer.upsert_tenant_superuser(tenant_id, email, password_hash)

    async def import_data(self, tenant_id: str, chunks: AsyncIterator[bytes]) -> None:
        await self.transfer.import_data(tenant_id, chunks)

    def export_chunks(self, tenant_id: str, with_files: bool = False) -> AsyncIterator[bytes]:
        return self.transfer.export_chunks(tenant_id, with_files)

    async def restore_check(self, tenant_id: str, incarnation: object, at: object) -> int:
        return await self.restorer.restore_check(tenant_id, incarnation, at)

    # ---- serving ------------------------------------------------------------------------------------

    def serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> Awaitable[int]:
        """One request of the tenant from a gateway in this process (an all-in-one's): its serving, to be awaited
        for the status answered."""
        return self.serving.serve_local(tenant_id, epoch, path, scope, proto)

    async def serve_metrics(self, scope: Scope, proto: HTTPProtocol) -> None:
        await self.routes.serve_metrics(scope, proto)

    async def open_tenant(self, tenant_id: str) -> Tenant:
        return await self.pool.open_tenant(tenant_id)

    async def gauges(self) -> NodeGauges:
        return await self.status.gauges()

    # ---- housekeeping -------------------------------------------------------------------------------

    def clean_leftovers(self) -> int:
        """Remove what an interrupted run left behind (blocking; call before serving)."""
        return self.copies.clean_leftovers()

    async def close_all(self, budget: float = CLOSE_ALL_SECONDS, finish_by: float | None = None) -> None:
        self.api.realtime.end_all()  # the SDKs reconnect (to this node once restarted, or to the next one)
        await self.pool.close_all(budget, finish_by)

    def close_idle(self, idle_seconds: float) -> None:
        """The idle check: close idle tenants, ship closed copies whose final sync failed, bound the WAL of
        open tenants Litestream does not replicate."""
        if self.shared is not None:  # what the workers served counts as used
            self.pool.close_evicted(self.shared.sync_recency(self.open_tenants, force=True))
        self.pool.close_idle(idle_seconds)
        self.handover.reship_closed()
        self.checkpoints.checkpoint_unwatched_soon()

    # ---- what the node knows, as snapshots (for status pages and tests) ------------------------------

    def db_loads(self) -> dict[str, TenantLoad]:
        """Each tenant's database load on this node: this process's, plus its workers'."""
        loads, _ = self.db.snapshot()
        return loads if self.shared is None else merge_loads(loads, self.shared.loads())

    @property
    def tenants(self) -> dict[str, Tenant]:
        """The tenants being served now."""
        return self.slots.open_tenants()

    @property
    def assignments(self) -> dict[str, Assignment]:
        return self.slots.where(lambda slot: slot.assignment)

    @property
    def confirmed(self) -> dict[str, int]:
        """Tenant -> epoch, as of the last heartbeat answer."""
        return self.slots.where(lambda slot: slot.confirmed)

    @property
    def released(self) -> dict[str, int]:
        """Tenant -> highest epoch given up."""
        return self.slots.where(lambda slot: slot.released)

    @property
    def incarnations(self) -> dict[str, str]:
        return self.slots.where(lambda slot: slot.incarnation)

    @property
    def fenced(self) -> dict[str, int] | None:
        """While fenced: tenant -> epoch it had when the lease ran out."""
        return self.ownership.fenced


class _AdoptionConsequences:
    """What follows from a heartbeat answer (:class:`pbfast.tenant_node.ownership.AdoptionActions`): closing,
    retiring and removing run in the background; a first superuser is applied or kept for later."""

    def __init__(self, node: TenantNodeApp) -> None:
        self._node = node

    def resume_replication(self) -> None:
        if self._node.replicator is not None:
            self._node.replicator.resume()

    def retire_copy(self, slot: TenantSlot) -> None:
        self._node.background.spawn(self._node.pool.retire_local_copy(slot))

    def drop(self, slot: TenantSlot, epoch: int) -> None:
        self._node.background.spawn(self._node.pool.drop(slot, epoch, "no longer assigned here"))

    def remove_data(self, slot: TenantSlot) -> None:
        self._node.background.spawn(self._node.pool.remove_data(slot))

    def close_superseded(self, slot: TenantSlot) -> None:
        self._node.background.spawn(self._node.pool.close_superseded(slot))

    def first_superuser(self, slot: TenantSlot, superuser: FirstSuperuser) -> None:
        self._node.transfer.first_superuser(slot, superuser)
