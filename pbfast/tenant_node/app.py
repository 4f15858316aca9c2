"""The tenant node's HTTP application (RSGI) and its view of which tenants it serves.

Fencing: every tenant assignment carries an epoch from the control plane. The node serves a tenant only for
requests whose epoch (sent by the gateway) is at least the epoch it knows, and never for an epoch it has
released. A gateway with a newer epoch than the node's last heartbeat is believed (the epoch came from the
control plane), so a fresh assignment is served at once; a gateway with an older epoch is refused, so two
nodes never both accept writes for one tenant. On top of that the node holds a lease
(:mod:`pbfast.tenant_node.lease`): when its heartbeats have not been acknowledged for half the control
plane's node timeout it stops serving and replicating every tenant, before the control plane could
re-place them (:meth:`TenantNodeApp.fence`).

A local copy that another node may have written after this one let go of the tenant (released for a
move, or re-placed while this node was fenced or down) is never served again: it is deleted when its last
state was confirmed in the replica, else moved to ``<data-dir>/retired/`` for the operator, and the tenant is
restored from its replica if it comes back. Which assignment a copy belongs to is kept on disk next to it
(:mod:`pbfast.tenant_node.local_copy`), so this holds across restarts of the node: a tenant is opened only
under the epoch the control plane confirmed, and its local copy is served only if it was last served here
under that epoch.

Routes: ``GET /api/health`` (public); ``GET /metrics`` (cluster token, see :mod:`pbfast.tenant_node.metrics`);
``/api/node/...`` for the control plane (cluster token); tenants' PocketBase APIs are reached through the
gateway: over HTTP at ``/t/{id}/...`` with the cluster token in ``X-Pbfast-Cluster-Token`` and
``X-Pbfast-Epoch``, or in-process through :meth:`TenantNodeApp.serve_tenant` in all-in-one. Anything else,
including another spelling of a route (``//api/node/...``), needs the cluster token too and then is a 404:
the node authenticates and routes on one parse of the path (:class:`pbfast.http.Router`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import apsw

from pbfast.http import (
    PUBLIC,
    ApiError,
    Guard,
    Handler,
    HeldResponse,
    HTTPProtocol,
    Request,
    Router,
    Scope,
    StatusRecorder,
    bearer_token_matches,
    discard_unread_body,
    send_error,
)
from pbfast.cluster.heartbeat import (
    DEFAULT_INCARNATION,
    Assignments,
    FirstSuperuser,
    Seed,
    is_incarnation,
    is_restore_time,
)
from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER, MOVED_ANSWER_HEADERS
from pbfast.config import EngineSettings
from pbfast.durable import fsync_directory, fsync_file
from pbfast.logs import component_logger
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.auth import new_token_key
from pbfast.pocketbase.sqlite_guard import DEFAULT_LIMITS
from pbfast.pocketbase.tenant import (
    DATA_DB,
    Tenant,
    backup_database,
    check_pocketbase_database,
    new_record_id,
)
from pbfast.tenant_node.damaged import DamagedState, keep_aside, newest_restorable
from pbfast.tenant_node.db_scheduler import DbScheduler, TenantBusy
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.local_copy import (
    MARKER_FILE,
    CopyMarker,
    MarkerError,
    Verdict,
    judge,
    read_marker,
    write_marker,
)
from pbfast.tenant_node.metrics import NodeGauges, NodeMetrics
from pbfast.tenant_node.replication import (
    NO_AUTOCHECKPOINT,
    RECONCILE_TIMEOUT_SECONDS,
    SYNC_TIMEOUT_SECONDS,
    NoStateAt,
    ReplicationError,
    Replicator,
)
from pbfast.primitives import QuotaCounters, TenantCache, is_valid_tenant_id
from pbfast.prometheus import METRICS_HEADERS
from pbfast.timefmt import format_datetime

__all__ = ["Assignment", "TenantNodeApp", "upsert_superuser"]

log = component_logger("TenantNode")

STORAGE_MEASURE_SECONDS = 1.0
CLOSE_ALL_SECONDS = 2.0
REFRESH_SECONDS = 3.0
LEASE_CHECK_SECONDS = 0.05
RELEASE_BUDGET_SECONDS = 35.0  # below the control plane's wait for a release (45 s)
UNREGISTER_RESERVE_SECONDS = 5.0  # of a bounded close, kept for the unregister after the final sync
OPEN_WAIT_SECONDS = 20.0  # a request waits this long for its tenant to open, below the gateway's 30 s
REQUEST_CLOSE_SECONDS = 10.0  # a close a request waits for (final sync and unregister)
RESHIP_BATCH = 4  # closed copies shipped at once after an outage
RESHIP_SECONDS = 8.0  # one background shipping of a closed copy (a request for it waits meanwhile)
RESHIP_BACKOFF_SECONDS = 30.0  # after a failed one, doubling up to RESHIP_BACKOFF_MAX_SECONDS
RESHIP_BACKOFF_MAX_SECONDS = 600.0
RETIRED_DIR = "retired"  # under the data dir: local copies that must not be served again
UNWATCHED_WAL_BYTES = 4 << 20  # an open tenant litestream does not replicate: checkpointed past this (~SQLite's
# own 1000 pages), since its connection does not checkpoint (NO_AUTOCHECKPOINT)
_MOVED = MOVED_ANSWER_HEADERS  # on a stale-epoch 503: the gateway re-resolves and retries
_DAMAGED = [("retry-after", "30")]  # an operator has to act (see pbfast.tenant_node.damaged)


@dataclass(slots=True)
class Assignment:
    epoch: int
    status: str = "active"
    moving: str | None = None
    durability: str = "async"
    time_limit_ms: int | None = None  # the tenant's own request time limit (None: the node's)
    storage_quota_bytes: int = -1  # -1: unlimited


def _log_open_failure(opening: asyncio.Future[Tenant]) -> None:
    """Done callback of an open no request waits for any more: its failure is logged, not lost."""
    if not opening.cancelled() and (err := opening.exception()) is not None and not isinstance(err, ApiError):
        log.error("opening a tenant failed: %r", err, exc_info=err)


def _checkpoint(db_path: Path) -> None:
    """A PASSIVE checkpoint of the database on a connection of its own (the tenant's may be busy)."""
    connection = apsw.Connection(str(db_path))
    try:
        connection.setbusytimeout(1000)
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        connection.close()


def _discard(temporary: Path) -> None:
    """Remove a temporary file and what SQLite or Litestream put beside it."""
    for leftover in temporary.parent.glob(glob_escape(temporary.name) + "*"):
        leftover.unlink(missing_ok=True)


def upsert_superuser(tenant: Tenant, email: str, password_hash: str, overwrite: bool = True) -> None:
    """Create (or, with ``overwrite``, update) the superuser ``email`` with an already bcrypt-hashed password."""
    now = format_datetime(time.time())
    with tenant.conn:
        row = tenant.conn.execute("SELECT id FROM _superusers WHERE email = ? COLLATE NOCASE", (email,)).fetchone()
        if row is None:
            tenant.conn.execute(
                "INSERT INTO _superusers (id, email, password, tokenKey, verified, emailVisibility, created, updated)"
                " VALUES (?, ?, ?, ?, 1, 0, ?, ?)", (new_record_id(), email, password_hash, new_token_key(), now, now))
        elif overwrite:
            tenant.conn.execute("UPDATE _superusers SET password = ?, tokenKey = ?, updated = ? WHERE id = ?",
                                (password_hash, new_token_key(), now, row[0]))


class TenantNodeApp:
    """RSGI app of one tenant node. Thread-safety: event loop only (the native primitives it holds are
    themselves thread-safe)."""

    def __init__(self, node_id: str, max_tenants: int, cluster_token: str, data_dir: Path,
                 replicator: Replicator | None = None, engine: EngineSettings = EngineSettings()) -> None:
        self.node_id = node_id
        # Every piece of a tenant's database work runs here, off the event loop, fairly between tenants.
        self.db = DbScheduler(engine.db_threads, engine.queue_limit)
        self.request_time_limit = engine.request_time_limit
        self.replicator = replicator
        self.incarnations: dict[str, str] = {}
        # tenant -> (incarnation, RFC 3339 time or None): where a new incarnation without a replica of its own
        # starts from (an in-place point-in-time restore, see _fetch_replica)
        self.seeds: dict[str, Seed] = {}
        self.placed_since: dict[str, int] = {}  # tenant -> first epoch of its uninterrupted stay here
        # Set by the node's membership: fetch assignments from the control plane now.
        self.refresh_assignments: Callable[[], Awaitable[None]] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tenants_dir = data_dir / "tenants"
        self.open_tenants = TenantCache(max_tenants)
        self.tenants: dict[str, Tenant] = {}
        self.superusers: dict[str, FirstSuperuser] = {}  # first superuser of tenants not created yet
        self.superusers_applied: set[str] = set()  # reported with the next heartbeat
        self._storage_measured: dict[str, float] = {}
        self.api = TenantApi()
        self.api.on_time_limit = self.db.count_time_limited
        self.quotas = QuotaCounters()
        self.assignments: dict[str, Assignment] = {}
        self.released: dict[str, int] = {}  # tenant -> highest epoch given up
        self.confirmed: dict[str, int] = {}  # tenant -> epoch, as of the last heartbeat answer
        self._cluster_token = cluster_token
        self.importing: set[str] = set()
        self.metrics = NodeMetrics()
        self.metrics_tokens = [cluster_token]  # all-in-one adds the admin token
        # Deny by default: every route but the health check needs the cluster token, and so does any path
        # that is no route (whatever its spelling: see pbfast.http.path_segments).
        self.router: Router[Handler] = Router(Guard(self._bearer_is_cluster_token, "The request requires the cluster token."))
        self.router.add("GET", "/api/health", self._health, guard=PUBLIC)
        self.router.add("GET", "/metrics", self._metrics_handler,
                        guard=Guard(self._bearer_may_read_metrics, "The request requires the cluster token."))
        self.router.add("POST", "/api/node/tenants/{id}/release", self._release_handler)
        self.router.add("PUT", "/api/node/tenants/{id}/superuser", self._superuser_handler)
        self.router.add("PUT", "/api/node/tenants/{id}/data", self._import_handler)
        self.router.add("GET", "/api/node/tenants/{id}/data", self._export_handler)
        self.router.add("POST", "/api/node/tenants/{id}/restore-check", self._restore_check_handler)
        # The gateway's forwarded tenant requests: the client's own Authorization header goes through, so the
        # cluster token comes in X-Pbfast-Cluster-Token, which counts for these requests only.
        self.router.mount("/t/{id}", self._serve_forwarded,
                          guard=Guard(self._forwarded_by_gateway, "The request requires the cluster token."))
        # The lease (set by the node's membership; without one, as in benchmarks, the node serves freely).
        self.lease: Lease | None = None
        self.fenced: dict[str, int] | None = None  # while fenced: tenant -> epoch it had when the lease ran out
        self._fence_generation = 0
        self._stale_local: set[str] = set()  # local copies to retire before the tenant is opened again
        self._copies: dict[str, CopyMarker] = {}  # open tenants: the marker written when they were opened
        self._reassigning: set[str] = set()  # open tenants placed again, being closed in the background
        self._untracked: set[str] = set()  # open tenants outside the LRU at the last idle check
        self.open_wait_seconds = OPEN_WAIT_SECONDS
        self._unshipped: set[str] = set()  # closed copies whose final sync failed (shipped by _reship_closed)
        self._reshipping: set[str] = set()
        self._reship_after: dict[str, float] = {}  # tenant -> monotonic time of its next background try
        self._reship_failures: dict[str, int] = {}
        self._replica_current_at = time.time()  # when the replica was last known to hold every write
        self._checkpointing = False  # a pass of _checkpoint_unwatched runs
        self.damaged: dict[str, DamagedState] = {}  # tenants not served: their newest replicated state is damaged

    # ---- assignments (from heartbeats and the gateway) ----------------------------------------------

    def apply_assignments(self, tenants: object, deleted: object) -> None:
        """:meth:`adopt` the tenants and deletions of a heartbeat answer as JSON (checked first: see
        :meth:`pbfast.cluster.heartbeat.Assignments.from_json`). Raises ValueError, before changing anything,
        when the answer is malformed."""
        self.adopt(Assignments.from_json(tenants, deleted))

    def adopt(self, answer: Assignments) -> None:
        """Adopt the control plane's view: serve exactly ``answer.tenants``, drop the others.

        The first answer after the node was fenced also decides about the fenced tenants: one still
        assigned here with the epoch it had is served again from the local copy (nobody else can have
        written it); any other was re-placed meanwhile, so the epoch it had is released (stale gateways
        get 503 "moved") and its local copy is retired (:meth:`_retire_local_copy`)."""
        for why in answer.unusable.values():
            log.error("control plane sent an unusable assignment; not serving the tenant: %s", why)
        specs, tenants, deleted = answer.tenants, answer.tenants, answer.deleted
        if self.fenced is not None:
            fenced, self.fenced = self.fenced, None
            self._fence_generation += 1
            kept = 0
            for tenant_id, epoch in fenced.items():
                still = specs.get(tenant_id)
                if still is not None and still.epoch == epoch:
                    kept += 1
                    continue
                self.released[tenant_id] = max(self.released.get(tenant_id, 0), epoch)
                self._stale_local.add(tenant_id)
                self._background(self._retire_local_copy(tenant_id))
            if self.replicator is not None:
                self.replicator.resume()
            log.warning("lease renewed: serving again (%d of %d fenced tenant(s) still assigned here)",
                        kept, len(fenced))
        for tenant_id in list(self.assignments):
            if tenant_id not in tenants:
                self._background(self._drop(tenant_id, self.assignments[tenant_id].epoch, "no longer assigned here"))
        for tenant_id in deleted:
            self.quotas.remove(tenant_id)
            if tenant_id not in tenants:
                self._background(self._remove_data(tenant_id))
        self.confirmed = {}
        for tenant_id, spec in specs.items():
            epoch = spec.epoch
            if epoch <= self.released.get(tenant_id, 0):
                continue
            self.confirmed[tenant_id] = epoch
            self.incarnations[tenant_id] = spec.incarnation
            if spec.placed_since is not None:
                self.placed_since[tenant_id] = spec.placed_since
            else:
                self.placed_since.pop(tenant_id, None)
            if spec.seed is not None:
                self.seeds[tenant_id] = spec.seed
            else:
                self.seeds.pop(tenant_id, None)
            current = self.assignments.get(tenant_id)
            if current is None or current.epoch <= epoch:
                self.assignments[tenant_id] = Assignment(epoch, spec.status, spec.moving, spec.durability,
                                                         spec.request_time_limit_ms, spec.storage_quota_bytes)
            self.quotas.set_limits(tenant_id, spec.requests_quota, spec.storage_quota_bytes)
            if self._superseded(tenant_id) and tenant_id not in self._reassigning:
                # placed elsewhere and back since it was opened: closed, and vetted again when next opened
                self._reassigning.add(tenant_id)
                self._background(self._close_superseded(tenant_id))
            if spec.superuser:
                self._apply_pending_superuser(tenant_id, spec.superuser)
        for tenant_id in [t for t in self.seeds if t not in specs]:
            del self.seeds[tenant_id]  # a seed matters only while the tenant is assigned here
        for tenant_id in [t for t in self.incarnations if t not in specs and t not in self.tenants]:
            del self.incarnations[tenant_id]
        for tenant_id in [t for t in self.placed_since if t not in specs]:
            del self.placed_since[tenant_id]
        for tenant_id in [t for t, state in self.damaged.items()
                          if t not in specs or specs[t].incarnation != state.incarnation]:
            del self.damaged[tenant_id]  # restored in place (a new incarnation), or no longer served here

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run node housekeeping (closing, removing) as a task that shutdown waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_superseded(self, tenant_id: str) -> None:
        try:
            async with self._lock(tenant_id):
                if tenant_id in self.tenants and self._superseded(tenant_id):  # a request may have done it
                    self.open_tenants.remove(tenant_id)
                    await self._close_locked(tenant_id, "reassigned")
        finally:
            self._reassigning.discard(tenant_id)

    def _superseded(self, tenant_id: str) -> bool:
        """Whether the open tenant was opened under another epoch than the one it is assigned under now (the
        control plane placed it again since): its copy must be closed and vetted again before it is served."""
        marker = self._copies.get(tenant_id)
        assignment = self.assignments.get(tenant_id)
        return marker is not None and assignment is not None and assignment.epoch != marker.epoch

    def _apply_pending_superuser(self, tenant_id: str, superuser: FirstSuperuser) -> None:
        """The first superuser of a tenant, set at creation: applied once the database exists (never
        overwriting a superuser of that email created meanwhile), then reported to the control plane."""
        if tenant_id in self.tenants or ((self.tenants_dir / tenant_id / DATA_DB).exists()
                                         and tenant_id not in self.importing):
            async def apply() -> None:
                try:
                    async with self._using(tenant_id) as tenant:
                        await self.db.run(tenant_id, lambda: upsert_superuser(
                            tenant, superuser.email, superuser.password_hash, overwrite=False), bounded=False)
                except Exception:  # noqa: BLE001 - retried with the next heartbeat
                    log.exception("tenant %s: applying the first superuser failed", tenant_id)
                    return
                self.superusers.pop(tenant_id, None)
                self.superusers_applied.add(tenant_id)

            self._background(apply())
        else:
            self.superusers[tenant_id] = superuser

    async def release(self, tenant_id: str, epoch: int, budget: float = RELEASE_BUDGET_SECONDS) -> None:
        """Stop serving ``tenant_id`` for ``epoch`` and older (a move or a re-placement): no request is
        admitted from now on, and this returns once the final state is in the replica and Litestream has
        stopped replicating it. It takes at most about ``budget`` seconds, less than the control plane waits
        (``MOVE_RELEASE_TIMEOUT_SECONDS``), so the control plane hears the outcome.

        Raises ApiError 503 (and serves the tenant again, as before) when the final state could not be
        confirmed in the replica, or Litestream did not confirm it stopped: the control plane must not move
        it then, since the next node would restore a replica without this node's last acknowledged writes,
        or two nodes would write one replica path."""
        deadline = time.monotonic() + budget
        previous_release = self.released.get(tenant_id)
        previous_assignment = self.assignments.get(tenant_id)
        self.released[tenant_id] = max(previous_release or 0, epoch)
        try:
            await self._drop(tenant_id, epoch, "released", deadline)
            handed_over = await self._replication_stopped(tenant_id, epoch, deadline)
        except TimeoutError:
            handed_over = False
        if not handed_over:
            if previous_release is None:
                self.released.pop(tenant_id, None)
            else:
                self.released[tenant_id] = previous_release
            if previous_assignment is not None and tenant_id not in self.assignments:
                self.assignments[tenant_id] = previous_assignment
            log.warning("tenant %s: not released, its final state is not confirmed in the replica", tenant_id)
            raise ApiError(503, "The tenant's final state is not in the replica yet; it was not released.",
                           headers=[("retry-after", "5")])
        # The next node writes the replica from now on: this copy must not be served if the tenant
        # comes back here (it would hide, and then overwrite, the other node's writes). Unless the control
        # plane has meanwhile put it back here (the answer to this release got lost) and it is served again.
        if self.confirmed.get(tenant_id, 0) > epoch:
            log.info("tenant %s: released epoch %d, but it is assigned here again: copy kept", tenant_id, epoch)
            return
        self._stale_local.add(tenant_id)
        await self._retire_local_copy(tenant_id)

    async def _replication_stopped(self, tenant_id: str, epoch: int, deadline: float) -> bool:
        """After the tenant was closed: whether its local copy is whole in the replica and Litestream no
        longer replicates it (an unconfirmed unregister is retried until ``deadline``)."""
        if self.replicator is None:
            return True
        if not await asyncio.to_thread(self._copy_shipped, tenant_id) \
                and not await self._reship(tenant_id, epoch, deadline, releasing=True):
            return False
        db_path = self.tenants_dir / tenant_id / DATA_DB
        if self.replicator.stopped(db_path):
            return True
        seconds = math.floor(deadline - time.monotonic()) - 3  # the request's own timeout is seconds + 2
        if seconds >= 1:
            try:  # not cancelled from outside: an abandoned request gets litestream killed
                await self.replicator.settle(db_path, min(seconds, RECONCILE_TIMEOUT_SECONDS))
            except ReplicationError as err:
                log.warning("tenant %s: litestream did not confirm it stopped replicating it: %r", tenant_id, err)
        return self.replicator.stopped(db_path)

    async def _reship(self, tenant_id: str, epoch: int, deadline: float, releasing: bool = False) -> bool:
        """Ship a closed local copy whose final sync failed (storage was unreachable when it was closed):
        registered, synced, unregistered, then marked shipped under ``epoch``, all by ``deadline``. Only a
        copy that is current for this node under ``epoch`` (:func:`judge`: written here under it, or under an
        earlier epoch of the tenant's uninterrupted stay here), while the node still serves that epoch
        (``releasing``: the release of that epoch in progress). True once the copy is known whole in the
        replica."""
        assert self.replicator is not None
        lock = self._lock(tenant_id)
        await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
        try:
            directory = self.tenants_dir / tenant_id
            db_path = directory / DATA_DB
            if tenant_id in self.tenants:
                return False  # open: its close ships it
            try:
                marker = read_marker(directory)
            except MarkerError:
                return False
            if not db_path.exists() or marker is None or marker.shipped:
                self._unshipped.discard(tenant_id)
                return True
            incarnation = self.incarnations.get(tenant_id, DEFAULT_INCARNATION)
            verdict, _ = judge(marker, True, incarnation, epoch, self.placed_since.get(tenant_id), self.node_id)
            owned = self.confirmed.get(tenant_id) == epoch and tenant_id not in self._stale_local \
                and not self._lease_lost() and (releasing or epoch > self.released.get(tenant_id, 0))
            if verdict is not Verdict.CURRENT or not owned:
                return False  # not this node's to ship (any more)
            budget = max(1.0, deadline - time.monotonic())
            shipped = False
            try:
                await self.replicator.register(db_path, tenant_id, incarnation)
                await self.replicator.sync(db_path, wait=True, timeout=max(1.0, budget - UNREGISTER_RESERVE_SECONDS))
                shipped = True
            except ReplicationError as err:
                log.warning("tenant %s: shipping its closed copy failed: %s", tenant_id, err)
            finally:
                try:
                    await self.replicator.unregister(db_path, timeout=max(1.0, deadline - time.monotonic()))
                except ReplicationError as err:
                    log.warning("tenant %s: unregister after shipping its closed copy: %s", tenant_id, err)
            if shipped:
                await asyncio.to_thread(write_marker, directory, CopyMarker(incarnation, epoch, self.node_id, shipped=True))
                self._unshipped.discard(tenant_id)
                log.info("tenant %s: shipped its closed copy, whose final sync had failed", tenant_id)
            return shipped
        finally:
            lock.release()

    def _reship_closed(self) -> None:
        """Ship a few closed copies whose final sync failed, while this node still owns them (from the idle
        check): the replica catches up after an outage without waiting for the tenants' next request."""
        if self.replicator is None or self._lease_lost() or not self.replicator.status()["running"]:
            return
        now = time.monotonic()
        due = [t for t in self._unshipped if t not in self._reshipping and self._reship_after.get(t, 0.0) <= now]
        for tenant_id in due[:RESHIP_BATCH]:
            epoch = self.confirmed.get(tenant_id)
            assignment = self.assignments.get(tenant_id)
            if tenant_id in self.tenants or epoch is None or assignment is None or assignment.epoch != epoch:
                continue
            self._reshipping.add(tenant_id)

            async def ship(tenant_id: str = tenant_id, epoch: int = epoch) -> None:
                # Short, and backed off after a failure: a request for the tenant waits for this (the lock),
                # and storage that failed the final sync may well still be failing.
                shipped = False
                try:
                    shipped = await self._reship(tenant_id, epoch, time.monotonic() + RESHIP_SECONDS)
                except Exception:  # noqa: BLE001 - retried later
                    log.exception("tenant %s: shipping its closed copy failed", tenant_id)
                finally:
                    self._reshipping.discard(tenant_id)
                    if shipped:
                        self._reship_failures.pop(tenant_id, None)
                        self._reship_after.pop(tenant_id, None)
                    else:
                        failures = self._reship_failures.get(tenant_id, 0) + 1
                        self._reship_failures[tenant_id] = failures
                        self._reship_after[tenant_id] = time.monotonic() + min(
                            RESHIP_BACKOFF_MAX_SECONDS, RESHIP_BACKOFF_SECONDS * 2 ** (failures - 1))

            self._background(ship())

    def _copy_shipped(self, tenant_id: str) -> bool:
        """Whether the tenant's local copy (if any) is known to be whole in the replica (blocking)."""
        directory = self.tenants_dir / tenant_id
        if not (directory / DATA_DB).exists():
            return True  # nothing here that the replica lacks
        try:
            marker = read_marker(directory)
        except MarkerError:
            return False
        # No marker: a copy closed by a pbfast from before markers, which closed only after a final sync.
        return marker is None or marker.shipped

    async def _drop(self, tenant_id: str, epoch: int, why: str, deadline: float | None = None) -> None:
        self.assignments.pop(tenant_id, None)
        self.open_tenants.remove(tenant_id)
        if await self._close(tenant_id, "released" if why == "released" else "unassigned", deadline):
            log.info("closed tenant %s (epoch %d): %s", tenant_id, epoch, why)

    async def _retire_local_copy(self, tenant_id: str) -> None:
        async with self._lock(tenant_id):
            await self._retire_locked(tenant_id)

    async def _retire_locked(self, tenant_id: str) -> None:
        """With the tenant's lock held: take its local copy out of service if it is marked stale (see
        :meth:`_retire_copy`). If that fails the mark stays, and the tenant is not opened."""
        if tenant_id not in self._stale_local:
            return
        self._stale_local.discard(tenant_id)
        marker = self._copies.get(tenant_id)
        if tenant_id in self.tenants and marker is not None and self.confirmed.get(tenant_id) == marker.epoch:
            return  # open under the epoch the control plane confirms now: it is this node's copy
        tenant = self.tenants.pop(tenant_id, None)
        if tenant is not None:  # not expected: closed before being marked. Another node owns it: no flush.
            self.open_tenants.remove(tenant_id)
            self.metrics.closed("unassigned")
            if self.replicator is not None:
                self.replicator.drop_without_flush(tenant.directory / DATA_DB)
            self._copies.pop(tenant_id, None)
            await self._close_database(tenant)
        try:
            self._retire_copy(tenant_id, "another node owns the tenant now")
        except OSError as err:  # the copy must not be served: keep refusing to open it
            self._stale_local.add(tenant_id)
            log.error("tenant %s: could not retire the local copy: %s", tenant_id, err)

    def _retire_copy(self, tenant_id: str, why: str) -> None:
        """Take the tenant's local copy (closed) out of ``tenants/``: deleted when its marker says its final
        state was confirmed in the replica and it was not written since, else kept under
        ``<data-dir>/retired/<id>-<time>-<random>/`` (it may hold writes the replica never got; an operator
        can inspect it with stock PocketBase). Raises OSError if it cannot be moved."""
        directory = self.tenants_dir / tenant_id
        if not directory.exists():
            return
        try:
            marker = read_marker(directory)
        except MarkerError:
            marker = None
        suffix = f"{time.strftime('%Y%m%dT%H%M%S')}-{new_record_id()[:6]}"
        if marker is not None and marker.shipped:
            doomed = self.tenants_dir / f".deleting-{tenant_id}-{suffix}"  # never a tenant id: no leading dot
            os.replace(directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            log.info("tenant %s: removed the local copy (%s; its last state is in the replica)", tenant_id, why)
            return
        retired = self.tenants_dir.parent / RETIRED_DIR / f"{tenant_id}-{suffix}"
        retired.parent.mkdir(parents=True, exist_ok=True)
        os.replace(directory, retired)
        log.warning("tenant %s: %s; its local copy may hold writes the replica lacks: moved it to %s",
                    tenant_id, why, retired)

    def clean_leftovers(self) -> int:
        """Remove what an interrupted run left behind (blocking; call before serving): copies being deleted
        (``tenants/.deleting-*``), restores and checks (``tenants/.restore-*``), imports and exports
        (``tenants/<id>/.import-*``, ``.export-*``) and half-written markers. Returns how many."""
        if not self.tenants_dir.is_dir():
            return 0
        removed = 0
        leftovers = [*self.tenants_dir.glob(".deleting-*"), *self.tenants_dir.glob(".restore-*"),
                     *self.tenants_dir.glob("*/.import-*"), *self.tenants_dir.glob("*/.export-*"),
                     *self.tenants_dir.glob(f"*/.{MARKER_FILE}.*.tmp")]
        for leftover in leftovers:
            try:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
                removed += 1
            except OSError as err:
                log.warning("could not remove the leftover %s: %s", leftover, err)
        if removed:
            log.info("removed %d leftover(s) of an earlier run under %s", removed, self.tenants_dir)
        for marker_path in self.tenants_dir.glob(f"*/{MARKER_FILE}"):
            try:
                marker = read_marker(marker_path.parent)
            except MarkerError:
                continue
            if marker is not None and not marker.shipped and marker.node_id == self.node_id:
                self._unshipped.add(marker_path.parent.name)  # shipped once the node owns it again
        return removed

    @contextlib.asynccontextmanager
    async def _using(self, tenant_id: str) -> AsyncIterator[Tenant]:
        """The open tenant for node work outside a request (superuser, import, export): counted in the open
        tenants (so it is closed when idle or evicted, like one a request opened) and pinned meanwhile."""
        _, evicted = self.open_tenants.acquire(tenant_id)
        self._close_evicted(evicted)
        try:
            yield await self.open_tenant(tenant_id)
        finally:
            try:
                self._close_evicted(self.open_tenants.release(tenant_id))
            except KeyError:
                pass  # dropped meanwhile

    def _lock(self, tenant_id: str) -> asyncio.Lock:
        lock = self._locks.get(tenant_id)
        if lock is None:
            lock = self._locks[tenant_id] = asyncio.Lock()
        return lock

    async def _close(self, tenant_id: str, reason: str, deadline: float | None = None) -> bool:
        """Final replication sync, stop replicating, checkpoint and close. Serialised with opening. With a
        ``deadline`` (monotonic), waiting for the tenant's lock raises TimeoutError after it, and the sync and
        unregister are bounded by it."""
        lock = self._lock(tenant_id)
        if deadline is None:
            await lock.acquire()
        else:
            await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
        try:
            return await self._close_locked(tenant_id, reason, deadline)
        finally:
            lock.release()

    async def _close_locked(self, tenant_id: str, reason: str, deadline: float | None = None) -> bool:
        tenant = self.tenants.pop(tenant_id, None)
        if tenant is None:
            return False
        self.metrics.closed(reason)
        self._storage_measured.pop(tenant_id, None)
        db_path = tenant.directory / DATA_DB
        shipped = False
        if self.replicator is not None:
            def budget(reserve: float = 0.0) -> float:
                if deadline is None:
                    return SYNC_TIMEOUT_SECONDS
                return max(1.0, min(SYNC_TIMEOUT_SECONDS, deadline - time.monotonic() - reserve))

            before = await self._total_changes(tenant)
            try:
                await self.replicator.sync(db_path, wait=True, timeout=budget(UNREGISTER_RESERVE_SECONDS))
                shipped = True
            except ReplicationError as err:
                log.warning("tenant %s: final sync before closing failed (%s); the local copy stays "
                            "the newest", tenant_id, err)
            try:
                await self.replicator.unregister(db_path, timeout=budget())
            except ReplicationError as err:  # retried by the replicator, counted by fences and releases
                log.warning("tenant %s: unregister not confirmed (retried): %s", tenant_id, err)
            # A request admitted earlier may have written after the sync started.
            shipped = shipped and await self._total_changes(tenant) == before
        await self._close_connection(tenant_id, tenant, shipped)
        return True

    async def _total_changes(self, tenant: Tenant) -> int:
        """Rows the tenant's connection changed since it was opened (every write of the tenant goes through it),
        read in the tenant's turn: after the requests queued before, so a write in flight is counted."""
        return await self.db.run(tenant.id, tenant.conn.total_changes, bounded=False)

    async def _close_connection(self, tenant_id: str, tenant: Tenant, shipped: bool) -> None:
        """The last step of every close: checkpoint and close the database (in the tenant's turn, after the
        requests that still hold it), then record in its marker whether its final state is in the replica (a
        failed checkpoint counts as not shipped; it never stops the node)."""
        try:
            await self._close_database(tenant)
        except Exception:  # noqa: BLE001 - a failed checkpoint must not stop the node or a fence
            shipped = False
            log.exception("closing tenant %s failed", tenant_id)
        await self._mark_closed(tenant_id, shipped)

    async def _close_database(self, tenant: Tenant) -> None:
        """Close the tenant's connection in its turn (after the requests that still hold it), checkpointed
        first (data.db whole) unless litestream may be replicating it: a checkpoint litestream did not make can
        move the WAL past frames it has not read, and its replica would restore corrupt (see
        :mod:`pbfast.tenant_node.replication`)."""
        checkpoint = self._may_checkpoint(tenant)
        await self.db.run(tenant.id, lambda: tenant.close(checkpoint=checkpoint), bounded=False)

    def _close_unshared(self, tenant: Tenant) -> None:
        """:meth:`_close_database` for a tenant no request can hold yet (one that failed to open)."""
        tenant.close(checkpoint=self._may_checkpoint(tenant))

    def _may_checkpoint(self, tenant: Tenant) -> bool:
        return self.replicator is None or not self.replicator.watching(tenant.directory / DATA_DB)

    async def _checkpoint_unwatched(self) -> None:
        """Checkpoint the open tenants litestream does not replicate right now (down, or the registration
        not confirmed) once their WAL passed :data:`UNWATCHED_WAL_BYTES`: their connections leave
        checkpoints to litestream, and the WAL must not grow without bound meanwhile."""
        assert self.replicator is not None
        for tenant_id, tenant in list(self.tenants.items()):
            db_path = tenant.directory / DATA_DB
            try:
                if os.stat(f"{db_path}-wal").st_size < UNWATCHED_WAL_BYTES:
                    continue
            except OSError:
                continue
            async with self.replicator.registrations_held(db_path):
                if self.replicator.watching(db_path) or self.tenants.get(tenant_id) is not tenant:
                    continue
                try:
                    await asyncio.to_thread(_checkpoint, db_path)
                except apsw.Error as err:
                    log.warning("tenant %s: checkpoint while not replicated failed: %s", tenant_id, err)
                else:
                    log.info("tenant %s: checkpointed its WAL (litestream does not replicate it now)", tenant_id)

    async def _mark_closed(self, tenant_id: str, shipped: bool) -> None:
        """The tenant was closed: if its final state is in the replica, say so in its marker (the copy may
        then be deleted rather than kept when it is retired, also after a restart)."""
        marker = self._copies.pop(tenant_id, None)
        if marker is None:
            return
        if not shipped:
            self._unshipped.add(tenant_id)
            return
        self._unshipped.discard(tenant_id)
        try:
            await asyncio.to_thread(write_marker, self.tenants_dir / tenant_id,
                                    CopyMarker(marker.incarnation, marker.epoch, self.node_id, shipped=True))
        except OSError as err:  # it then counts as not shipped: kept, not deleted, when retired
            log.warning("tenant %s: could not record that its copy is in the replica: %s", tenant_id, err)

    async def _remove_data(self, tenant_id: str) -> None:
        """The tenant was deleted: close it and remove its files from this node."""
        self.open_tenants.remove(tenant_id)
        self.assignments.pop(tenant_id, None)
        self.released.pop(tenant_id, None)  # the id may be created again later, starting at epoch 1
        await self._close(tenant_id, "deleted")
        directory = self.tenants_dir / tenant_id
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            log.info("removed the data of deleted tenant %s", tenant_id)

    async def open_tenant(self, tenant_id: str) -> Tenant:
        """The open tenant: from memory, else from local disk, else restored from its replica, else new.

        A local copy is served only if it belongs to the assignment the node serves now
        (:meth:`_vet_local_copy`); the marker of that assignment is written before the tenant is served or
        replicated."""
        tenant = self.tenants.get(tenant_id)
        if tenant is not None and not self._superseded(tenant_id):
            return tenant
        async with self._lock(tenant_id):
            tenant = self.tenants.get(tenant_id)
            if tenant is not None:
                if not self._superseded(tenant_id):
                    return tenant
                log.info("tenant %s: placed again since it was opened; closing it to check its copy", tenant_id)
                # A request waits for this: the final sync is bounded well below the gateway's read timeout.
                await self._close_locked(tenant_id, "reassigned", time.monotonic() + REQUEST_CLOSE_SECONDS)
            self._check_lease()
            generation = self._fence_generation
            await self._retire_locked(tenant_id)  # a copy another node may have written since is never opened
            if tenant_id in self._stale_local:
                raise ApiError(503, "The tenant's previous local copy cannot be retired; it is not served.",
                               headers=[("retry-after", "5")])
            epoch = await self._serving_epoch(tenant_id)
            directory = self.tenants_dir / tenant_id
            db_path = directory / DATA_DB
            incarnation = self.incarnations.get(tenant_id, DEFAULT_INCARNATION)
            source = "disk"
            on_disk: CopyMarker | None = None
            if epoch is not None and db_path.exists():
                on_disk, source = await self._vet_local_copy(tenant_id, directory, incarnation, epoch)
            elif not db_path.exists() and self.replicator is not None:
                restored = await self._fetch_replica(tenant_id, incarnation)
                if restored is not None:
                    self._install(restored, directory)
                source = "replica"
            created = not db_path.exists()
            tenant = await asyncio.to_thread(Tenant.open, tenant_id, directory, True, DEFAULT_LIMITS,
                                             self._max_bytes(tenant_id))
            try:
                if self.replicator is not None:  # only litestream checkpoints what it replicates
                    tenant.conn.execute(NO_AUTOCHECKPOINT)
                # A restore takes time: meanwhile the node may have been fenced and the tenant placed elsewhere
                # (and the lease renewed again): never start replicating a tenant the node no longer owns.
                self._check_still_owned(tenant_id, epoch, generation)
                if epoch is not None:  # from here on this node may write the copy under this assignment
                    marker = CopyMarker(incarnation, epoch, self.node_id)
                    if on_disk != marker:
                        await asyncio.to_thread(write_marker, directory, marker)
                    self._copies[tenant_id] = marker
            except BaseException:
                self._close_unshared(tenant)
                raise
            self.metrics.opened("new" if created else source)
            if created:
                log.info("created the database of tenant %s", tenant_id)
                superuser = self.superusers.pop(tenant_id, None)
                if superuser is not None:
                    upsert_superuser(tenant, superuser.email, superuser.password_hash)
                    self.superusers_applied.add(tenant_id)
            try:
                if self.replicator is not None:
                    try:
                        await self.replicator.register(db_path, tenant_id, incarnation)
                    except ReplicationError as err:  # serve anyway: the replicator retries it (unless paused)
                        log.error("tenant %s: replication not started yet: %s", tenant_id, err)
                # Registering can take long: a fence that came meanwhile only saw the tenants already open, so
                # a tenant opened across it must not go on replicating or serving.
                self._check_still_owned(tenant_id, epoch, generation)
            except BaseException as err:
                if self.replicator is not None:
                    if isinstance(err, ApiError) and epoch is not None and self._still_ours(tenant_id, epoch):
                        self.replicator.forget(db_path)  # still ours (fenced, or put back here under a newer
                        # epoch): the reconcile unregisters it, with a final flush
                    else:  # another node may own the replica path by now: not even a final flush
                        self.replicator.drop_without_flush(db_path)
                self._copies.pop(tenant_id, None)
                self._close_unshared(tenant)
                raise
            self.tenants[tenant_id] = tenant
            self.quotas.set_storage(tenant_id, tenant.size_bytes())
            return tenant

    def _max_bytes(self, tenant_id: str) -> int | None:
        """The tenant's storage quota, which SQLite enforces too (None: unlimited)."""
        assignment = self.assignments.get(tenant_id)
        return None if assignment is None or assignment.storage_quota_bytes < 0 else assignment.storage_quota_bytes

    def _still_ours(self, tenant_id: str, epoch: int) -> bool:
        """Whether no other node can have been assigned the tenant since this node took it under ``epoch``:
        still confirmed under it, or under a later epoch of an uninterrupted stay here."""
        confirmed = self.confirmed.get(tenant_id)
        since = self.placed_since.get(tenant_id)
        return tenant_id not in self._stale_local and confirmed is not None and (
            confirmed == epoch or (since is not None and since <= epoch <= confirmed))

    def _check_still_owned(self, tenant_id: str, epoch: int | None, generation: int) -> None:
        """Raise ApiError 503 unless the node may still serve and replicate the tenant it began opening under
        ``epoch`` when the fence generation was ``generation``: the lease holds, no fence or renewal happened
        since, the control plane still confirms that epoch here, and it was not released."""
        self._check_lease()
        if generation != self._fence_generation or tenant_id in self._stale_local or (
                epoch is not None and (self.confirmed.get(tenant_id) != epoch
                                       or epoch <= self.released.get(tenant_id, 0))):
            raise ApiError(503, "The tenant was placed elsewhere while it was being opened; retry.", headers=_MOVED)

    async def _open_within(self, tenant_id: str, seconds: float) -> Tenant:
        """:meth:`open_tenant` for a request, which waits for it at most ``seconds`` (a restore of a large
        database from its replica can take longer than a gateway waits for an answer): then ApiError 503 with
        ``Retry-After``, while the open goes on, so that a retry finds the tenant open."""
        opening = asyncio.ensure_future(self.open_tenant(tenant_id))
        try:
            return await asyncio.wait_for(asyncio.shield(opening), seconds)
        except TimeoutError:
            opening.add_done_callback(_log_open_failure)
            raise ApiError(503, "The tenant is being loaded from its replica; retry shortly.",
                           headers=[("retry-after", "2")]) from None

    async def _serving_epoch(self, tenant_id: str) -> int | None:
        """The epoch under which the tenant may be opened: the one the control plane's latest heartbeat answer
        gives for it here, which must be the one the node was asked to serve (a gateway may know a new
        assignment before the node: then the node asks the control plane now). A tenant the control plane
        does not assign here is not opened (after a restart the node does not remember which epochs it gave
        up, so a stale gateway's epoch alone proves nothing). None for a node without a control plane
        (benchmarks): nothing to check against, and no marker is written."""
        if self.lease is None:
            return None
        assignment = self.assignments.get(tenant_id)
        if (assignment is None or self.confirmed.get(tenant_id) != assignment.epoch) \
                and self.refresh_assignments is not None:
            try:
                await asyncio.wait_for(self.refresh_assignments(), REFRESH_SECONDS)
            except Exception as err:  # noqa: BLE001 - answered below
                log.warning("tenant %s: assignments not refreshed before opening: %r", tenant_id, err)
            assignment = self.assignments.get(tenant_id)
        confirmed = self.confirmed.get(tenant_id)
        if assignment is None or confirmed is None or confirmed != assignment.epoch:
            raise ApiError(503, "The tenant is not served by this node; retry.", headers=_MOVED)
        return confirmed

    async def _vet_local_copy(self, tenant_id: str, directory: Path, incarnation: str,
                              epoch: int) -> tuple[CopyMarker | None, str]:
        """Decide whether the tenant's local copy may be served under ``incarnation`` and ``epoch``
        (:func:`pbfast.tenant_node.local_copy.judge`); returns its marker and the open's source.

        A current copy is served. A superseded or unknown one (the tenant may have lived elsewhere since)
        gives way to the replica when there is one: the replica is restored first, then the copy retired
        (:meth:`_retire_copy`) and the restored one put in its place; without a replica it is the newest
        state there is, and it is served. A copy of another incarnation is retired in any case."""
        try:
            marker: CopyMarker | None = read_marker(directory)
            readable = True
        except MarkerError as err:
            log.warning("tenant %s: %s", tenant_id, err)
            marker, readable = None, False
        verdict, why = judge(marker, readable, incarnation, epoch, self.placed_since.get(tenant_id), self.node_id)
        if verdict is Verdict.CURRENT:
            log.debug("tenant %s: serving the local copy (%s)", tenant_id, why)
            return marker, "disk"
        # A seed (an in-place restore's starting state) is older than a copy of this same incarnation.
        use_seed = verdict is not Verdict.SUPERSEDED
        restored = await self._fetch_replica(tenant_id, incarnation, use_seed) if self.replicator is not None \
            else None
        if restored is None and verdict is not Verdict.FOREIGN:
            log.warning("tenant %s: serving the local copy although %s: there is no replica to prefer",
                        tenant_id, why)
            return marker, "disk"
        try:
            self._retire_copy(tenant_id, f"not serving the local copy: {why}")
            if restored is not None:
                self._install(restored, directory)
        finally:
            if restored is not None:
                _discard(restored)
        return None, "replica"

    async def _fetch_replica(self, tenant_id: str, incarnation: str, use_seed: bool = True) -> Path | None:
        """Restore the tenant's replica into a temporary file beside the tenants' directories, checked and
        fsynced; None when there is no replica. Raises :class:`ReplicationError` (counted as a restore
        failure)."""
        assert self.replicator is not None
        damaged = self.damaged.get(tenant_id)
        if damaged is not None:
            if damaged.current(incarnation, time.time()):
                raise ApiError(503, damaged.message(), headers=_DAMAGED)
            del self.damaged[tenant_id]  # looked at again: the replica may have been repaired
        self.tenants_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.tenants_dir / f".restore-{tenant_id}-{new_record_id()}.db"  # never a tenant id
        started = time.monotonic()
        seeded = False
        try:
            if not await self.replicator.restore(tenant_id, incarnation, temporary):
                seed = self.seeds.get(tenant_id) if use_seed else None
                if seed is None or seed.incarnation == incarnation:
                    _discard(temporary)
                    return None  # no replica: a new tenant
                # A new incarnation made by an in-place point-in-time restore, not shipped yet: it starts as
                # the earlier incarnation was at the chosen time.
                seed_incarnation, at = seed.incarnation, seed.at
                if not await self.replicator.restore(tenant_id, seed_incarnation, temporary, at):
                    raise ReplicationError(f"tenant {tenant_id} is to start from incarnation {seed_incarnation} "
                                           "but that has no replica")
                log.info("tenant %s: incarnation %s starts from incarnation %s as of %s", tenant_id, incarnation,
                         seed_incarnation, at or "its latest state")
                seeded = True
            problem = await asyncio.to_thread(check_pocketbase_database, temporary)
            if problem and not seeded:
                state = await self._put_aside_damaged(tenant_id, incarnation, temporary, problem)
                raise ApiError(503, state.message(), headers=_DAMAGED)
            if problem:  # the seed's state (the control plane checked it before the in-place restore)
                raise ReplicationError(f"restored copy of tenant {tenant_id} is unusable: {problem}")
            await asyncio.to_thread(fsync_file, temporary)
        except BaseException as err:
            _discard(temporary)
            if isinstance(err, Exception):
                self.metrics.restore_failures += 1
            raise
        log.info("restored tenant %s from its replica in %.0f ms", tenant_id, (time.monotonic() - started) * 1000)
        return temporary

    async def _put_aside_damaged(self, tenant_id: str, incarnation: str, restored: Path,
                                 problem: str) -> DamagedState:
        """The latest state restored from the tenant's replica failed its check: keep it aside, find the
        newest earlier state that passes, remember the verdict and tell the operator (see
        :mod:`pbfast.tenant_node.damaged`)."""
        assert self.replicator is not None
        self.metrics.damaged_restores += 1
        log.error("tenant %s: the newest state of its replica (incarnation %s) fails its check: %s; it is not "
                  "served. Looking for the newest earlier state that passes.", tenant_id, incarnation, problem)
        kept: Path | None = None
        try:
            kept = await asyncio.to_thread(keep_aside, restored, self.tenants_dir.parent, tenant_id, incarnation)
        except OSError as err:
            log.error("tenant %s: could not keep the damaged restore aside: %s", tenant_id, err)
        started = time.monotonic()
        restorable_at = await newest_restorable(self.replicator, tenant_id, incarnation, self.tenants_dir)
        state = DamagedState(tenant_id, incarnation, problem, kept, restorable_at, time.time())
        self.damaged[tenant_id] = state
        log.error("tenant %s: not served, its newest replicated state is damaged (%s; kept at %s). %s "
                  "(searched for %.1f s)", tenant_id, problem, kept or "-",
                  f"The newest state that passes is at {restorable_at}: restore it with `pbfast tenant restore "
                  f"{tenant_id} --at {restorable_at}`." if restorable_at else "No earlier state that passes was "
                  "found.", time.monotonic() - started)
        return state

    def _install(self, restored: Path, directory: Path) -> None:
        """Put a restored database in place as the tenant's data.db (atomic rename)."""
        directory.mkdir(parents=True, exist_ok=True)
        for stale in (DATA_DB + "-wal", DATA_DB + "-shm"):
            (directory / stale).unlink(missing_ok=True)
        os.replace(restored, directory / DATA_DB)
        fsync_directory(directory)
        fsync_directory(self.tenants_dir)
        _discard(restored)

    async def close_all(self, budget: float = CLOSE_ALL_SECONDS) -> None:
        """Close every open tenant (final sync to the replica first), within ``budget`` seconds; a tenant
        whose sync does not finish in time stays whole on local disk and is shipped when next opened."""
        closing = [*self._tasks, *(asyncio.ensure_future(self._close(t, "shutdown")) for t in list(self.tenants))]
        if closing:
            _, late = await asyncio.wait(closing, timeout=budget)
            for task in late:
                task.cancel()
            if late:
                log.warning("shutdown: %d tenant(s) closed without a final replica sync", len(late))
        for tenant in list(self.tenants.values()):
            tenant.conn.interrupt()  # a statement still running on a worker thread stops now
            try:
                await asyncio.wait_for(self._close_database(tenant), 1.0)
            except Exception as err:  # noqa: BLE001 - shutting down: the WAL is checkpointed on next open
                log.warning("shutdown: tenant %s not closed cleanly: %r", tenant.id, err)
        self.tenants.clear()

    def close_idle(self, idle_seconds: float) -> None:
        """Close the tenants idle for ``idle_seconds``, and open tenants the LRU no longer tracks (dropped from
        it while they were being opened, e.g. by a release that was then rolled back) once they were seen
        untracked at two checks in a row."""
        for tenant_id in self.open_tenants.evict_idle(idle_seconds):
            self._background(self._close(tenant_id, "idle"))
        untracked = {t for t in self.tenants if t not in self.open_tenants and t not in self._reassigning}
        for tenant_id in untracked & self._untracked:
            self._background(self._close(tenant_id, "idle"))
        self._untracked = untracked - self._untracked
        self._reship_closed()
        if self.replicator is not None and self.tenants and not self._checkpointing:
            self._checkpointing = True
            self._background(self._checkpoint_unwatched_once())

    async def _checkpoint_unwatched_once(self) -> None:
        try:
            await self._checkpoint_unwatched()
        finally:
            self._checkpointing = False

    def replication_status(self) -> dict[str, Any]:
        status = self.replicator.status() if self.replicator is not None else {"running": False, "replicating": 0}
        return {**status, "damagedTenants": self.damaged_tenants()}

    def damaged_tenants(self) -> int:
        """Tenants not served because their newest replicated state is damaged (verdicts still standing)."""
        now = time.time()
        return sum(1 for state in self.damaged.values() if state.current(state.incarnation, now))

    async def replication_lag(self) -> float:
        """Seconds the replica is behind: the age of the oldest write not known to be in it (0.0 when
        everything written is shipped). While Litestream is down or does not answer nothing is shipped, so
        it is the time since the replica was last known to be current, if a replicated database was written
        since then."""
        if self.replicator is None:
            return 0.0
        lag = await self.replicator.lag_seconds()
        now = time.time()
        if lag is not None:
            self._replica_current_at = now - lag
            return lag
        written = 0.0
        for path in list(self.replicator.registered):
            for name in (path, path + "-wal"):
                try:
                    written = max(written, os.stat(name).st_mtime)
                except OSError:
                    pass
        return round(now - self._replica_current_at, 3) if written > self._replica_current_at else 0.0

    # ---- the lease (see pbfast.tenant_node.lease) ------------------------------------------------------

    def _lease_lost(self) -> bool:
        return self.lease is not None and (self.fenced is not None or not self.lease.valid())

    def _check_lease(self) -> None:
        if self.lease is None or not self._lease_lost():
            return
        if self.lease.renewed_at is None:
            raise ApiError(503, "The node has not joined the cluster yet; retry shortly.",
                           headers=[("retry-after", "1")])
        raise ApiError(503, "The node lost contact with the control plane; the tenant is served elsewhere "
                            "shortly, retry.", headers=_MOVED)

    async def watch_lease(self) -> None:
        """Fence the node as soon as its lease runs out (runs as a task beside the heartbeats)."""
        while True:
            lease = self.lease
            try:
                if lease is not None and lease.renewed_at is not None and self.fenced is None \
                        and not lease.valid():
                    self.fence()
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("fencing failed")
            await asyncio.sleep(LEASE_CHECK_SECONDS)

    def fence(self) -> None:
        """The lease ran out: admit no tenant request from now on, let the running ones finish, ship and
        stop replicating every open tenant, and make sure nothing of this node writes a replica after the
        lease's halt time. The tenants stay assigned in :attr:`assignments`; the next acknowledged
        heartbeat decides about them (:meth:`apply_assignments`)."""
        lease = self.lease
        assert lease is not None
        self.fenced = {tenant_id: assignment.epoch for tenant_id, assignment in self.assignments.items()}
        for tenant_id in self.tenants:
            self.fenced.setdefault(tenant_id, self.released.get(tenant_id, 0))
        self._fence_generation += 1
        self.metrics.fences += 1
        if self.replicator is not None:
            self.replicator.pause()
        age = lease.age() or 0.0
        log.warning("no heartbeat acknowledged for %.1f s (node timeout %.1f s): stopped serving and replicating "
                    "%d tenant(s) until the control plane answers again", age, lease.node_timeout or 0.0,
                    len(self.fenced))
        self._background(self._stop_replicating(self._fence_generation, lease.drain_until, lease.sync_until,
                                                lease.halt_at))

    async def _stop_replicating(self, generation: int, drain_until: float, sync_until: float,
                                halt_at: float) -> None:
        clock = time.monotonic
        while clock() < drain_until and any(self.open_tenants.pins(t) for t in self.tenants):
            await asyncio.sleep(0.01)  # requests admitted before the lease ran out finish first
        if generation != self._fence_generation:
            return  # renewed meanwhile
        closing = [asyncio.ensure_future(self._fence_close(t, sync_until, halt_at)) for t in list(self.tenants)]
        for tenant_id in list(self.tenants):
            self.open_tenants.remove(tenant_id)
        done, late = await asyncio.wait(closing, timeout=max(0.0, halt_at - clock())) if closing else (set(), set())
        if generation != self._fence_generation:
            return  # renewed meanwhile: the control plane cannot have re-placed anything
        unconfirmed = len(late) + sum(1 for task in done if task.cancelled() or task.exception() or not task.result())
        if self.replicator is not None and not unconfirmed and (self.replicator.unregistering
                                                                or self.replicator.registered):
            # Tenants closed before the fence whose unregister is still unconfirmed (or a registration that
            # raced the fence): litestream may still write their replicas. One more try, bounded by the halt.
            try:
                remaining = max(0.0, halt_at - clock())
                await asyncio.wait_for(self.replicator.reconcile(remaining), remaining)
            except (ReplicationError, TimeoutError) as err:
                log.warning("fenced: unregisters not confirmed: %r", err)
            if generation != self._fence_generation:
                return
            unconfirmed = len(self.replicator.unregistering) + len(self.replicator.registered)
        if unconfirmed and self.replicator is not None:
            # Nothing may reach the replica from here on: litestream forgets every database and is killed
            # without a flush; registrations are refused until the lease is renewed.
            self.replicator.halt()
            self.metrics.replication_halts += 1
            log.error("fenced: replication of %d tenant(s) did not stop in time; killed litestream", unconfirmed)

    async def _fence_close(self, tenant_id: str, sync_until: float, halt_at: float) -> bool:
        """Close one tenant of a fenced node: a final sync (bounded by ``sync_until``), unregister (bounded by
        ``halt_at``), close. True once litestream confirmed it stopped replicating it."""
        async with self._lock(tenant_id):
            tenant = self.tenants.pop(tenant_id, None)
            if tenant is None:
                return True
            self.metrics.closed("fenced")
            stopped = True
            shipped = False
            if self.replicator is not None:
                db_path = tenant.directory / DATA_DB
                try:
                    before: int | None = await asyncio.wait_for(self._total_changes(tenant),
                                                                max(0.0, sync_until - time.monotonic()))
                except TimeoutError:  # its requests hold it: whatever they write is not known to be shipped
                    before = None
                try:
                    await asyncio.wait_for(self.replicator.sync(db_path, wait=True),
                                           max(0.0, sync_until - time.monotonic()))
                    shipped = True
                except (ReplicationError, TimeoutError) as err:
                    log.warning("tenant %s: final sync before fencing failed: %r", tenant_id, err)
                self.replicator.forget(db_path)  # unregistering from now on, whatever happens below
                remaining = halt_at - time.monotonic()
                try:
                    await asyncio.wait_for(self.replicator.unregister(db_path, timeout=max(1.0, remaining)),
                                           max(0.05, remaining))
                except (ReplicationError, TimeoutError) as err:
                    log.warning("tenant %s: unregister while fencing failed: %r", tenant_id, err)
                stopped = self.replicator.stopped(db_path)
                shipped = shipped and before is not None and await self._total_changes(tenant) == before
            await self._close_connection(tenant_id, tenant, shipped)
            return stopped

    def _admit(self, tenant_id: str, epoch: int) -> None:
        if self.lease is not None:
            self._check_lease()
        if epoch <= self.released.get(tenant_id, 0):
            raise ApiError(503, "The tenant has moved; retry.", headers=_MOVED)
        current = self.assignments.get(tenant_id)
        if current is None or current.epoch < epoch:
            self.assignments[tenant_id] = current = Assignment(epoch)
        elif current.epoch > epoch:
            raise ApiError(503, "The tenant has moved; retry.", headers=_MOVED)
        if current.status == "suspended":
            raise ApiError(403, "The tenant is suspended.")
        allowed, _ = self.quotas.try_acquire(tenant_id)
        if not allowed:
            self.metrics.quota_rejected("requests")
            raise ApiError(429, "The tenant's daily API request quota is used up.")

    # ---- HTTP ---------------------------------------------------------------------------------------

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        await self.router.dispatch(scope, proto, on_error=self._log_error)

    def _bearer_is_cluster_token(self, scope: Scope) -> bool:
        return bearer_token_matches(scope.headers.get("authorization"), self._cluster_token)

    def _bearer_may_read_metrics(self, scope: Scope) -> bool:
        authorization = scope.headers.get("authorization")
        return any(bearer_token_matches(authorization, token) for token in self.metrics_tokens)

    def _forwarded_by_gateway(self, scope: Scope) -> bool:
        return hmac.compare_digest((scope.headers.get(CLUSTER_TOKEN_HEADER) or "").encode(),
                                   self._cluster_token.encode())

    async def _metrics_handler(self, request: Request) -> None:
        await self.serve_metrics(request.scope, request.proto)

    async def serve_metrics(self, scope: Scope, proto: HTTPProtocol) -> None:
        """``GET /metrics``: Prometheus text (``Authorization: Bearer`` with the cluster token, or the admin
        token where the node knows it)."""
        authorization = scope.headers.get("authorization")
        if not any(bearer_token_matches(authorization, token) for token in self.metrics_tokens):
            send_error(proto, 401, "The request requires the cluster token.")
            return
        if scope.method not in ("GET", "HEAD"):
            send_error(proto, 405, "Method not allowed.")
            return
        proto.response_bytes(200, METRICS_HEADERS, self.metrics.render(await self.gauges()))

    async def gauges(self) -> NodeGauges:
        loads, queued = self.db.snapshot()
        status = self.replication_status()
        lease = self.lease
        return NodeGauges(
            open_tenants=len(self.tenants), assigned_tenants=len(self.assignments),
            replicating_tenants=len(self.replicator.registered) if self.replicator is not None else 0,
            litestream_up=bool(status.get("running")), litestream_restarts=int(status.get("restarts", 0)),
            lag_seconds=await self.replication_lag(), damaged_tenants=self.damaged_tenants(),
            lease_valid=not self._lease_lost(), lease_remaining=lease.remaining() if lease is not None else 0.0,
            heartbeat_age=lease.age() if lease is not None else None,
            node_timeout=lease.node_timeout if lease is not None else None,
            db_threads=self.db.threads, db_queued=queued, db_load=loads)

    async def _serve_forwarded(self, request: Request) -> None:
        """A gateway's forwarded request: ``/t/{id}/rest`` with the cluster token and the route's epoch. The
        tenant's API matches the rest only in its canonical spelling."""
        tenant_id = request.params["id"]
        epoch_text = request.header(EPOCH_HEADER) or ""
        if not is_valid_tenant_id(tenant_id) or not epoch_text.isdigit():
            raise ApiError(400, "Invalid forwarded tenant request.")
        await self.serve_tenant(tenant_id, int(epoch_text), request.path, request.scope, request.proto)
        await discard_unread_body(request.proto)  # answered early: let a gateway still sending the body finish

    async def _health(self, request: Request) -> None:
        """PocketBase's health body, plus the state of this node's replication under ``data.replication``
        (``lagSeconds``: see :meth:`replication_lag`). The lease is in the metrics."""
        replication = self.replication_status()
        if self.replicator is not None:
            replication["lagSeconds"] = await self.replication_lag()
        request.send_json(200, {"message": "API is healthy.", "code": 200, "data": {"replication": replication}})

    async def _restore_check_handler(self, request: Request) -> None:
        """``POST /api/node/tenants/{id}/restore-check`` ``{"incarnation", "at"}``: see :meth:`restore_check`.
        200 ``{"bytes"}``; 400 when the replica holds no usable state then; 503 when storage fails."""
        body = await request.json_object()
        tenant_id, incarnation, at = request.params["id"], body.get("incarnation"), body.get("at")
        size = await self.restore_check(tenant_id, incarnation, at)
        request.send_json(200, {"tenantId": tenant_id, "incarnation": incarnation, "at": at, "bytes": size})

    async def restore_check(self, tenant_id: str, incarnation: Any, at: Any) -> int:
        """Restore ``incarnation``'s replica as of ``at`` into a temporary file, check it and discard it (the
        control plane's trial before an in-place restore; called in-process in all-in-one). Returns the
        restored database's size. Raises ApiError 400 when the replica holds no usable state then, 503 when
        storage fails."""
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")
        if not is_incarnation(incarnation):
            raise ApiError(400, "Failed to validate the submitted data.", {"incarnation": {
                "code": "validation_invalid_incarnation", "message": "Must be a tenant incarnation."}})
        if at is not None and not is_restore_time(at):
            raise ApiError(400, "Failed to validate the submitted data.", {"at": {
                "code": "validation_invalid_datetime", "message": "Must be an RFC 3339 date-time."}})
        if self.replicator is None:
            raise ApiError(400, "This node does not replicate tenants: there is nothing to restore from.")
        self.tenants_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.tenants_dir / f".restore-{tenant_id}-{new_record_id()}.db"  # never a tenant id
        try:
            try:
                found = await self.replicator.restore(tenant_id, incarnation, temporary, at)
            except NoStateAt as err:
                raise ApiError(400, f"Restore failed: {err}", {"at": {
                    "code": "validation_no_state_at", "message": str(err)}}) from err
            except ReplicationError as err:
                raise ApiError(503, f"Restore failed: {err}", headers=[("retry-after", "5")]) from err
            if not found:  # the only answer after which the control plane may fall back to the seed
                raise ApiError(400, "The tenant has no replica of that incarnation.", {"incarnation": {
                    "code": "validation_no_replica", "message": "Nothing of this incarnation was replicated."}})
            problem = await asyncio.to_thread(check_pocketbase_database, temporary)
            if problem:
                raise ApiError(400, f"The restored database is unusable: {problem}")
            return temporary.stat().st_size
        finally:
            _discard(temporary)

    async def _release_handler(self, request: Request) -> None:
        body = await request.json_object()
        epoch = body.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ApiError(400, "Failed to validate the submitted data.",
                           {"epoch": {"code": "validation_invalid_type", "message": "Must be a whole number."}})
        await self.release(request.params["id"], epoch)
        request.send_json(200, {"tenantId": request.params["id"], "releasedEpoch": epoch})

    # ---- data in and out (control plane only) -----------------------------------------------------------

    async def upsert_tenant_superuser(self, tenant_id: str, email: str, password_hash: str) -> None:
        if tenant_id in self.importing:
            raise ApiError(409, "The tenant is being imported; retry afterwards.")
        async with self._using(tenant_id) as tenant:
            await self.db.run(tenant_id, lambda: upsert_superuser(tenant, email, password_hash), bounded=False)
        self.superusers.pop(tenant_id, None)
        self.superusers_applied.add(tenant_id)

    async def import_data(self, tenant_id: str, chunks: AsyncIterator[bytes]) -> None:
        """Install an uploaded PocketBase data.db as the tenant's database (only for a tenant without data):
        written to a temporary file, fsynced, checked (``PRAGMA integrity_check``, PocketBase tables), then
        renamed into place atomically, with the marker of the tenant's assignment here
        (:mod:`pbfast.tenant_node.local_copy`)."""
        directory = self.tenants_dir / tenant_id
        if tenant_id in self.tenants or (directory / DATA_DB).exists() or tenant_id in self.importing:
            raise ApiError(409, "The tenant already has data; import only into a new tenant.")
        self.importing.add(tenant_id)  # requests get 503 meanwhile, and do not wait for the lock
        try:
            async with self._lock(tenant_id):  # serialised with opening and closing
                await self._import_locked(tenant_id, directory, chunks)
            # Replicated before the import is acknowledged: else a node lost before the tenant's first
            # request would lose it.
            async with self._using(tenant_id) as tenant:
                if self.replicator is not None:
                    try:
                        await self.replicator.sync(tenant.directory / DATA_DB, wait=True)
                    except ReplicationError as err:
                        log.warning("tenant %s: imported, but not in the replica yet (%s); shipped when storage "
                                    "answers", tenant_id, err)
        finally:
            self.importing.discard(tenant_id)

    async def _import_locked(self, tenant_id: str, directory: Path, chunks: AsyncIterator[bytes]) -> None:
        self._check_lease()
        epoch = await self._serving_epoch(tenant_id)
        if tenant_id in self.tenants or (directory / DATA_DB).exists():
            raise ApiError(409, "The tenant already has data; import only into a new tenant.")
        incarnation = self.incarnations.get(tenant_id, DEFAULT_INCARNATION)
        if self.replicator is not None:
            # Data written on another node (or before this node's disk was lost) lives only in the replica:
            # installing an upload here would fork the tenant's history.
            if tenant_id in self.seeds:
                raise ApiError(409, "The tenant already has data (it was restored in place); "
                                    "import only into a new tenant.")
            try:
                has_replica = await self.replicator.has_replica(tenant_id, incarnation)
            except ReplicationError as err:
                raise ApiError(503, f"Cannot check the tenant's replica: {err}",
                               headers=[("retry-after", "5")]) from err
            if has_replica:
                raise ApiError(409, "The tenant already has data in its replica; import only into a new tenant.")
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".import-{new_record_id()}.db"
        try:
            with open(temporary, "wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            problem = await asyncio.to_thread(check_pocketbase_database, temporary)
            if problem:
                raise ApiError(400, f"The uploaded file is not a usable PocketBase data.db: {problem}")
            # The upload took a while: install it only if this node still serves the tenant as before.
            self._check_lease()
            if epoch is not None and (self.confirmed.get(tenant_id) != epoch
                                      or epoch <= self.released.get(tenant_id, 0)):
                raise ApiError(503, "The tenant was placed elsewhere during the upload; retry.", headers=_MOVED)
            if epoch is not None:  # first, so the copy is never without its marker
                await asyncio.to_thread(write_marker, directory, CopyMarker(incarnation, epoch, self.node_id))
            os.replace(temporary, directory / DATA_DB)
            fsync_directory(directory)
            log.info("imported the database of tenant %s", tenant_id)
        finally:
            temporary.unlink(missing_ok=True)

    async def export_chunks(self, tenant_id: str) -> AsyncIterator[bytes]:
        """A consistent snapshot of the tenant's data.db (SQLite online backup), streamed in chunks."""
        async with self._using(tenant_id) as tenant:
            snapshot = tenant.directory / f".export-{new_record_id()}.db"
            try:
                await asyncio.to_thread(backup_database, tenant.directory / DATA_DB, snapshot)
            except BaseException:
                snapshot.unlink(missing_ok=True)
                raise
        try:
            with open(snapshot, "rb") as source:
                while chunk := source.read(1 << 20):
                    yield chunk
        finally:
            snapshot.unlink(missing_ok=True)

    async def _superuser_handler(self, request: Request) -> None:
        body = await request.json_object()
        email, password_hash = body.get("email"), body.get("passwordHash")
        if not isinstance(email, str) or not isinstance(password_hash, str) or not password_hash.startswith("$2"):
            raise ApiError(400, "Failed to validate the submitted data.")
        await self.upsert_tenant_superuser(request.params["id"], email, password_hash)
        request.send_json(200, {"email": email})

    async def _import_handler(self, request: Request) -> None:
        tenant_id = request.params["id"]
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.proto:
                yield chunk

        await self.import_data(tenant_id, chunks())
        request.send_json(200, {"tenantId": tenant_id})

    async def _export_handler(self, request: Request) -> None:
        tenant_id = request.params["id"]
        if not is_valid_tenant_id(tenant_id):
            raise ApiError(400, "Invalid tenant id.")
        stream = request.proto.response_stream(200, [("content-type", "application/vnd.sqlite3")])
        async for chunk in self.export_chunks(tenant_id):
            await stream.send_bytes(chunk)

    async def serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        """Serve one request of ``tenant_id`` (routed with fencing ``epoch``) at tenant-relative ``path``."""
        recorder = StatusRecorder(proto)
        try:
            await self._serve_tenant(tenant_id, epoch, path, scope, recorder)
        finally:
            self.metrics.observe(recorder.status)

    async def _serve_tenant(self, tenant_id: str, epoch: int, path: str, scope: Scope, proto: HTTPProtocol) -> None:
        try:
            self._admit(tenant_id, epoch)
        except ApiError as err:
            send_error(proto, err.status, err.message, err.data, err.headers)
            return
        if tenant_id in self.importing:
            send_error(proto, 503, "The tenant is being imported; retry shortly.", headers=[("retry-after", "1")])
            return
        writes = scope.method not in ("GET", "HEAD", "OPTIONS")
        if writes and not self.quotas.storage_allows(tenant_id, 0):
            self.metrics.quota_rejected("storage")
            send_error(proto, 403, "The tenant's storage quota is used up.")
            return
        _, evicted = self.open_tenants.acquire(tenant_id)
        self._close_evicted(evicted)
        try:
            try:
                tenant = self.tenants.get(tenant_id)
                if tenant is None or self._superseded(tenant_id):
                    tenant = await self._open_within(tenant_id, self.open_wait_seconds)
            except ApiError as err:  # the lease ran out meanwhile, or the open takes long
                send_error(proto, err.status, err.message, err.data, err.headers)
                return
            except Exception as err:  # noqa: BLE001 - answer clearly, keep the node up
                log.error("cannot open tenant %s: %r", tenant_id, err, exc_info=err)
                send_error(proto, 503, "The tenant cannot be opened right now; retry.", headers=[("retry-after", "1")])
                return
            assignment = self.assignments.get(tenant_id)
            if epoch <= self.released.get(tenant_id, 0) or assignment is None or assignment.epoch != epoch \
                    or self._lease_lost():  # the open may have waited long: admitted again
                send_error(proto, 503, "The tenant has moved; retry.", headers=_MOVED)
                return
            try:
                if writes and self.replicator is not None and assignment.durability == "sync":
                    await self._handle_durably(tenant, assignment, path, scope, proto)
                else:
                    await self._handle(tenant, assignment, path, scope, proto)
            except TenantBusy:
                self.metrics.queue_rejected()
                send_error(proto, 429, "Too many requests for this tenant are waiting; retry shortly.",
                           headers=[("retry-after", "1")])
                return
            if writes:
                self._measure_storage(tenant)
        finally:
            try:
                self._close_evicted(self.open_tenants.release(tenant_id))
            except KeyError:
                pass  # dropped (moved or deleted) while this request ran

    async def _handle(self, tenant: Tenant, assignment: Assignment, path: str, scope: Scope,
                      proto: HTTPProtocol) -> None:
        """The tenant's API, its database work on the scheduler within the tenant's time limit."""
        limit_ms = assignment.time_limit_ms
        time_limit = self.request_time_limit if limit_ms is None else limit_ms / 1000
        max_bytes = self._max_bytes(tenant.id)

        async def run(work: Callable[[], None]) -> None:
            def job() -> None:
                if tenant.max_bytes != max_bytes and not tenant.closed:  # the quota changed since it was opened
                    tenant.set_max_bytes(max_bytes)
                work()

            await self.db.run(tenant.id, job)

        await self.api.handle(tenant, path, scope, proto, run=run, time_limit=time_limit)

    async def _handle_durably(self, tenant: Tenant, assignment: Assignment, path: str, scope: Scope,
                              proto: HTTPProtocol) -> None:
        """Durable mode: answer a successful write only once it is in the replica (RPO 0)."""
        assert self.replicator is not None
        held = HeldResponse(proto)
        await self._handle(tenant, assignment, path, scope, held)
        if held.status is not None and held.status < 400:
            try:
                await self.replicator.sync(tenant.directory / DATA_DB, wait=True)
            except ReplicationError as err:
                log.warning("tenant %s: durable write not confirmed by the replica: %s", tenant.id, err)
                send_error(proto, 503, "The change was saved on the node but the replica did not confirm it; "
                                       "it will be replicated when storage is reachable.",
                           headers=[("retry-after", "2")])
                return
        held.replay(proto)

    def _measure_storage(self, tenant: Tenant) -> None:
        """Refresh the tenant's stored bytes after writes, at most once per second per tenant."""
        now = time.monotonic()
        if now - self._storage_measured.get(tenant.id, 0.0) >= STORAGE_MEASURE_SECONDS:
            self._storage_measured[tenant.id] = now
            self.quotas.set_storage(tenant.id, tenant.size_bytes())

    def _close_evicted(self, evicted: list[str]) -> None:
        for closed in evicted:
            self._background(self._close(closed, "evicted"))

    @staticmethod
    def _log_error(err: BaseException) -> None:
        log.error("request failed: %r", err, exc_info=err)
