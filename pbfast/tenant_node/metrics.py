"""The tenant node's Prometheus metrics, rendered in the plain text exposition format 0.0.4
(:mod:`pbfast.prometheus`).

Served at ``GET /metrics`` with ``Authorization: Bearer <cluster token>`` (or the admin token where the node
knows it): on the node's own listener in ``tenant-node`` mode, on the control plane listener
(``--http-addr``) in ``all-in-one``, where the node has no listener of its own (see
:class:`WithNodeMetrics`).

- ``pbfast_node_requests_total{class="2xx"}``: tenant requests answered by this node, by status class,
- ``pbfast_node_open_tenants``, ``pbfast_node_assigned_tenants``: tenants open now / assigned to this node,
- ``pbfast_node_tenant_opens_total{source=...}``: tenants opened, from ``disk``, ``replica`` (a restore)
  or ``new`` (created empty); ``pbfast_node_tenant_restore_failures_total``,
- ``pbfast_node_damaged_restores_total``: restores whose newest state failed its integrity check (kept aside
  under ``<data-dir>/damaged/``), ``pbfast_node_damaged_tenants``: tenants not served for that reason (see
  :mod:`pbfast.tenant_node.damaged`),
- ``pbfast_node_latest_restores_total{by="node"|"litestream"}``: latest states restored from replicas by the
  node itself or left to ``litestream restore`` (see :mod:`pbfast.tenant_node.replica_reader`),
- ``pbfast_node_tenant_closes_total{reason=...}``: tenants closed: ``evicted`` (LRU beyond
  ``--max-tenants``), ``idle``, ``released`` (moved), ``unassigned``, ``reassigned`` (placed again while
  open: closed to be vetted again), ``deleted``, ``fenced`` (lease ran out), ``shutdown``,
- ``pbfast_node_quota_rejections_total{kind="requests"|"storage"}``: 429 (daily requests) and 403
  (storage) answers,
- database work (:mod:`pbfast.tenant_node.db_scheduler`): ``pbfast_node_db_threads``,
  ``pbfast_node_db_queued`` (jobs waiting for a thread now), ``pbfast_node_db_queue_rejections_total`` (429:
  a tenant's queue was full), and per tenant that used the database since the node started, so an operator
  sees who is noisy: ``pbfast_node_tenant_db_jobs_total``, ``pbfast_node_tenant_db_busy_seconds_total``,
  ``pbfast_node_tenant_db_wait_seconds_total`` (time waiting for a thread),
  ``pbfast_node_tenant_db_time_limited_total`` (requests stopped by their time limit) and
  ``pbfast_node_tenant_db_rejected_total``, each with ``{tenant="<id>"}``,
- ``pbfast_node_replication_lag_seconds``: the figure ``/api/health`` reports as
  ``data.replication.lagSeconds``: the age of the oldest write not known to be in the replica (0 when
  everything written is shipped). While Litestream is down or does not answer, it is the time since the
  replica was last known to be current, if a replicated database was written since then (so it keeps
  growing through an outage instead of disappearing),
- ``pbfast_node_litestream_up`` (1/0), ``pbfast_node_litestream_restarts_total``,
  ``pbfast_node_replicating_tenants``,
- with worker processes (``--workers`` > 1; every count above includes theirs): ``pbfast_node_workers`` (worker
  processes running), ``pbfast_node_worker_restarts_total``, ``pbfast_node_worker_handed_over_total`` (realtime, and writes of tenants with streams
  open, answered by the main process), ``pbfast_node_worker_asked_main_total`` (requests a
  worker could not decide from the shared table alone: their tenant was opened, or their epoch adopted, by the
  main process), ``pbfast_node_worker_requests_total{worker}`` (tenant requests each worker answered),
- ``pbfast_node_lease_valid`` (1/0), ``pbfast_node_lease_remaining_seconds``,
  ``pbfast_node_heartbeat_age_seconds`` (since the last acknowledged heartbeat was sent),
  ``pbfast_node_timeout_seconds`` (the control plane's ``--node-timeout``), ``pbfast_node_fences_total``
  (times the lease ran out), ``pbfast_node_lease_keeper_renewals_total`` (times the thread beside the event
  loop renewed the lease because the loop's heartbeats were late: the loop is that busy),
  ``pbfast_node_replication_halts_total`` (times Litestream had to be killed to keep the single-writer promise).

Thread-safety: event loop only (plain counters, no locks; the workers' are in shared memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pbfast.http import HTTPProtocol, Scope
from pbfast.prometheus import TextWriter
from pbfast.tenant_node.db_scheduler import TenantLoad

if TYPE_CHECKING:
    from pbfast.tenant_node.shared_state import SharedState

__all__ = ["NodeGauges", "NodeMetrics", "WithNodeMetrics"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
OPEN_SOURCES = ("disk", "replica", "new")
CLOSE_REASONS = ("evicted", "idle", "released", "unassigned", "reassigned", "deleted", "fenced", "shutdown")
QUOTA_KINDS = ("requests", "storage")


@dataclass(slots=True)
class NodeGauges:
    """The node's state at the time of a scrape."""

    open_tenants: int
    assigned_tenants: int
    replicating_tenants: int
    litestream_up: bool
    litestream_restarts: int
    lag_seconds: float
    damaged_tenants: int
    lease_valid: bool
    lease_remaining: float
    heartbeat_age: float | None
    node_timeout: float | None
    lease_extensions: int = 0  # renewals by the lease keeper's thread (the loop's heartbeats were late)
    db_threads: int = 0
    db_queued: int = 0
    db_load: dict[str, TenantLoad] = field(default_factory=dict)
    realtime_streams: int = 0
    realtime_dropped: int = 0
    restores_in_node: int = 0  # latest states restored by the node itself (replica_reader)
    restores_by_litestream: int = 0  # those it left to litestream restore (see the log for why)


class NodeMetrics:
    """Counters of one tenant node."""

    def __init__(self, shared: SharedState | None = None) -> None:
        self.shared = shared  # with worker processes: their counters are added to these
        self.workers: Callable[[], tuple[int, int]] | None = None  # (running, restarts), set by the supervisor
        self.requests = [0] * len(_CLASSES)
        self.opens = dict.fromkeys(OPEN_SOURCES, 0)
        self.closes = dict.fromkeys(CLOSE_REASONS, 0)
        self.quota_rejections = dict.fromkeys(QUOTA_KINDS, 0)
        self.restore_failures = 0
        self.damaged_restores = 0
        self.fences = 0
        self.replication_halts = 0
        self.db_queue_rejections = 0
        self.request_logs: Callable[[], tuple[int, int]] | None = None  # (dropped, failed), set by the node

    def observe(self, status: int) -> None:
        index = status // 100 - 1
        if 0 <= index < len(_CLASSES):
            self.requests[index] += 1

    def opened(self, source: str) -> None:
        self.opens[source] = self.opens.get(source, 0) + 1

    def closed(self, reason: str) -> None:
        self.closes[reason] = self.closes.get(reason, 0) + 1

    def quota_rejected(self, kind: str) -> None:
        self.quota_rejections[kind] = self.quota_rejections.get(kind, 0) + 1

    def queue_rejected(self) -> None:
        self.db_queue_rejections += 1

    def render(self, gauges: NodeGauges) -> bytes:
        """The exposition text (``text/plain; version=0.0.4``)."""
        out = TextWriter()
        requests, quota_rejections = list(self.requests), dict(self.quota_rejections)
        queue_rejections, db_threads, db_queued = self.db_queue_rejections, gauges.db_threads, gauges.db_queued
        if self.shared is not None:
            workers = self.shared.totals()
            requests = [mine + theirs for mine, theirs in zip(requests, workers.requests)]
            quota_rejections["requests"] += workers.quota_requests
            quota_rejections["storage"] += workers.quota_storage
            queue_rejections += workers.queue_rejected
            db_queued += workers.db_queued
            db_threads *= 1 + self.shared.counters.workers
        out.family("pbfast_node_requests_total", "counter", "Tenant requests answered by this node, by status class.",
                   [({"class": name}, count) for name, count in zip(_CLASSES, requests)])
        out.single("pbfast_node_open_tenants", "gauge", "Tenants open on this node.", gauges.open_tenants)
        out.single("pbfast_node_assigned_tenants", "gauge", "Tenants this node knows as assigned to it.",
                   gauges.assigned_tenants)
        out.family("pbfast_node_tenant_opens_total", "counter",
                   "Tenants opened, by where their database came from (replica = restored).",
                   [({"source": k}, v) for k, v in sorted(self.opens.items())])
        out.single("pbfast_node_tenant_restore_failures_total", "counter",
                   "Tenant opens that failed because the replica could not be restored.", self.restore_failures)
        out.single("pbfast_node_damaged_restores_total", "counter",
                   "Restores whose newest replicated state failed its integrity check (kept aside, not served).",
                   self.damaged_restores)
        out.family("pbfast_node_latest_restores_total", "counter",
                   "Latest states restored from replicas, by who restored them: the node, or litestream restore for "
                   "what the node's reader leaves to it (a file it does not know or finds damaged; logged).",
                   [({"by": "node"}, gauges.restores_in_node), ({"by": "litestream"}, gauges.restores_by_litestream)])
        if self.request_logs is not None:
            dropped, failed = self.request_logs()
            out.single("pbfast_node_request_logs_dropped_total", "counter",
                       "Request logs not kept: their queue was full, or writing them failed (main process).",
                       dropped + failed)
        out.single("pbfast_node_damaged_tenants", "gauge",
                   "Tenants not served because their newest replicated state is damaged (an operator must restore "
                   "an earlier point in time).", gauges.damaged_tenants)
        out.family("pbfast_node_tenant_closes_total", "counter", "Tenants closed, by reason (evicted = LRU).",
                   [({"reason": k}, v) for k, v in sorted(self.closes.items())])
        out.family("pbfast_node_quota_rejections_total", "counter", "Requests refused by a tenant quota, by kind.",
                   [({"kind": k}, v) for k, v in sorted(quota_rejections.items())])
        out.single("pbfast_node_replication_lag_seconds", "gauge",
                   "Age of the oldest write not known to be in the replica (grows while Litestream is down).",
                   gauges.lag_seconds)
        out.single("pbfast_node_litestream_up", "gauge", "1 while the Litestream child process runs.",
                   int(gauges.litestream_up))
        out.single("pbfast_node_litestream_restarts_total", "counter", "Times Litestream was restarted after it died.",
                   gauges.litestream_restarts)
        out.single("pbfast_node_replicating_tenants", "gauge", "Tenants registered with Litestream.",
                   gauges.replicating_tenants)
        out.single("pbfast_node_lease_valid", "gauge",
                   "1 while the node's lease from the control plane lets it serve its tenants.", int(gauges.lease_valid))
        out.single("pbfast_node_lease_remaining_seconds", "gauge", "Seconds of serving left on the lease.",
                   gauges.lease_remaining)
        if gauges.heartbeat_age is not None:
            out.single("pbfast_node_heartbeat_age_seconds", "gauge",
                       "Seconds since the last acknowledged heartbeat was sent.", gauges.heartbeat_age)
        if gauges.node_timeout is not None:
            out.single("pbfast_node_timeout_seconds", "gauge", "The control plane's node timeout.", gauges.node_timeout)
        out.single("pbfast_node_fences_total", "counter",
                   "Times the lease ran out and the node stopped serving and replicating its tenants.", self.fences)
        out.single("pbfast_node_lease_keeper_renewals_total", "counter",
                   "Times the lease was renewed beside the event loop because the loop's heartbeats were late.",
                   gauges.lease_extensions)
        out.single("pbfast_node_replication_halts_total", "counter",
                   "Times Litestream was killed because replication did not stop before the lease's halt time.",
                   self.replication_halts)
        out.single("pbfast_node_db_threads", "gauge", "Threads running tenants' database work.", db_threads)
        out.single("pbfast_node_db_queued", "gauge", "Database jobs waiting for a thread now.", db_queued)
        out.single("pbfast_node_db_queue_rejections_total", "counter",
                   "Requests refused with 429 because their tenant's database queue was full.", queue_rejections)
        out.single("pbfast_node_realtime_streams", "gauge", "Open realtime (SSE) streams.", gauges.realtime_streams)
        out.single("pbfast_node_realtime_dropped_total", "counter",
                   "Realtime clients dropped because their queue overflowed (they did not keep up).",
                   gauges.realtime_dropped)
        if self.shared is not None:
            running, restarts = self.workers() if self.workers is not None else (0, 0)
            out.single("pbfast_node_workers", "gauge", "Worker processes serving tenant requests.", running)
            out.single("pbfast_node_worker_restarts_total", "counter", "Worker processes started again after they died.",
                       restarts)
            out.single("pbfast_node_worker_asked_main_total", "counter",
                       "Tenant requests a worker handed to the main process to admit and open their tenant.",
                       self.shared.totals().asked_main)
            out.single("pbfast_node_worker_handed_over_total", "counter",
                       "Tenant requests the workers handed over whole to the main process (realtime streams and "
                       "subscriptions, and writes of tenants with streams open).", self.shared.totals().handed_over)
            out.family("pbfast_node_worker_requests_total", "counter",
                       "Tenant requests answered by each worker process (how evenly the kernel spreads them).",
                       [({"worker": str(index + 1)}, count) for index, count in enumerate(self.shared.worker_requests())])
        loads = sorted(gauges.db_load.items())
        for name, text, attribute in (
                ("jobs_total", "Database jobs run for the tenant.", "jobs"),
                ("busy_seconds_total", "Seconds the tenant's database jobs ran.", "busy_seconds"),
                ("wait_seconds_total", "Seconds the tenant's database jobs waited for a thread.", "wait_seconds"),
                ("time_limited_total", "The tenant's requests stopped by their time limit.", "time_limited"),
                ("rejected_total", "The tenant's requests refused because its queue was full.", "rejected")):
            out.family(f"pbfast_node_tenant_db_{name}", "counter", text,
                       [({"tenant": tenant}, getattr(load, attribute)) for tenant, load in loads])
        return out.render()


class _RsgiApp(Protocol):
    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None: ...


class _MetricsSource(Protocol):
    async def serve_metrics(self, scope: Scope, proto: HTTPProtocol) -> None: ...


class WithNodeMetrics:
    """An RSGI app answering ``GET /metrics`` with a tenant node's metrics and everything else with
    ``inner``: all-in-one puts it in front of the control plane listener, since its node has no listener."""

    def __init__(self, inner: _RsgiApp, node: _MetricsSource) -> None:
        self.inner = inner
        self.node = node

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto == "http" and scope.path == "/metrics":
            await self.node.serve_metrics(scope, proto)
            return
        await self.inner.__rsgi__(scope, proto)
