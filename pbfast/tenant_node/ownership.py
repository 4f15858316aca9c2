"""Which tenants this node may serve, under which fencing epoch, and the lease it serves them on.

Fencing: every tenant assignment carries an epoch from the control plane. The node serves a tenant only for
requests whose epoch (sent by the gateway) is at least the epoch it knows, and never for an epoch it has
released. A gateway with a newer epoch than the node's last heartbeat is believed (the epoch came from the
control plane), so a fresh assignment is served at once; a gateway with an older epoch is refused, so two
nodes never both accept writes for one tenant. On top of that the node holds a lease
(:mod:`pbfast.tenant_node.lease`): when its heartbeats have not been acknowledged for half the control
plane's node timeout it is *fenced* (:meth:`Ownership.fence`, carried out by
:class:`pbfast.tenant_node.fencing.Fencing`): it stops serving and replicating every tenant, before the
control plane could re-place them.

A tenant is opened only under the epoch the control plane confirmed (:meth:`Ownership.serving_epoch`), and
an open that took long is checked again before the tenant is served (:meth:`Ownership.check_still_owned`).

This module decides; what follows from a decision (closing, retiring a copy, applying a first superuser) is
done by the node through :class:`AdoptionActions`. Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from pbfast.cluster.heartbeat import Assignments, FirstSuperuser
from pbfast.cluster.wire import MOVED_ANSWER_HEADERS
from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.primitives import QuotaCounters, SharedQuotas
from pbfast.tenant_node.lease import Lease
from pbfast.tenant_node.metrics import NodeMetrics
from pbfast.tenant_node.slots import Assignment, Slots, TenantSlot

__all__ = ["AdoptionActions", "Ownership"]

log = component_logger("TenantNode")

REFRESH_SECONDS = 3.0  # a request waits this long for the node to ask the control plane about its tenant


def moved(message: str = "The tenant has moved; retry.") -> ApiError:
    """The 503 a gateway takes as "wait for a newer route, then retry" (:mod:`pbfast.cluster.wire`)."""
    return ApiError(503, message, headers=MOVED_ANSWER_HEADERS)


class AdoptionActions(Protocol):
    """What the node does about a heartbeat answer, in the order :meth:`Ownership.adopt` asks (each starts
    work in the background or records it; none waits)."""

    def resume_replication(self) -> None: ...

    def retire_copy(self, slot: TenantSlot) -> None: ...

    def drop(self, slot: TenantSlot, epoch: int) -> None: ...

    def remove_data(self, slot: TenantSlot) -> None: ...

    def close_superseded(self, slot: TenantSlot) -> None: ...

    def first_superuser(self, slot: TenantSlot, superuser: FirstSuperuser) -> None: ...


class Ownership:
    def __init__(self, slots: Slots, quotas: QuotaCounters | SharedQuotas, metrics: NodeMetrics) -> None:
        self.slots = slots
        self.quotas = quotas
        self.metrics = metrics
        # The lease (set by the node's membership; without one, as in benchmarks, the node serves freely).
        self.lease: Lease | None = None
        # Set by the node's membership: fetch assignments from the control plane now.
        self.refresh_assignments: Callable[[], Awaitable[None]] | None = None
        self.fenced: dict[str, int] | None = None  # while fenced: tenant -> epoch it had when the lease ran out
        self.fence_generation = 0  # bumped by every fence and renewal: an open that spans one is not served
        self._confirmed: set[str] = set()  # tenants whose slot has a confirmed epoch
        self.on_lease_change: Callable[[], None] | None = None  # told when the node is fenced or stops being so

    # ---- the lease ----------------------------------------------------------------------------------

    def lease_lost(self) -> bool:
        return self.lease is not None and (self.fenced is not None or not self.lease.valid())

    def check_lease(self) -> None:
        if self.lease is None or not self.lease_lost():
            return
        if self.lease.renewed_at is None:
            raise ApiError(503, "The node has not joined the cluster yet; retry shortly.",
                           headers=[("retry-after", "1")])
        raise moved("The node lost contact with the control plane; the tenant is served elsewhere shortly, retry.")

    def fence(self) -> dict[str, int]:
        """The lease ran out: every tenant assigned here (and every open one) is fenced under the epoch it
        has now; the next heartbeat answer decides about them (:meth:`adopt`). Returns them."""
        fenced = {slot.tenant_id: slot.assignment.epoch for slot in self.slots if slot.assignment is not None}
        for slot in self.slots.serving_slots():
            fenced.setdefault(slot.tenant_id, slot.released or 0)
        self.fenced = fenced
        self.fence_generation += 1
        if self.on_lease_change is not None:
            self.on_lease_change()
        return fenced

    # ---- requests -----------------------------------------------------------------------------------

    def admit(self, tenant_id: str, epoch: int) -> TenantSlot:
        """Admit a request routed with ``epoch``, or raise ApiError: 503 "moved" (a stale epoch, or the lease is
        lost), 403 (suspended), 429 (the daily request quota is used up)."""
        if self.lease is not None:
            self.check_lease()
        slot = self.slots[tenant_id]
        if epoch <= (slot.released or 0):
            raise moved()
        current = slot.assignment
        if current is None or current.epoch < epoch:
            slot.assignment = current = Assignment(epoch)
        elif current.epoch > epoch:
            raise moved()
        if current.status == "suspended":
            raise ApiError(403, "The tenant is suspended.")
        allowed, _ = self.quotas.try_acquire(tenant_id)
        if not allowed:
            self.metrics.quota_rejected("requests")
            raise ApiError(429, "The tenant's daily API request quota is used up.")
        return slot

    def serves(self, slot: TenantSlot, epoch: int) -> Assignment | None:
        """The assignment a request admitted under ``epoch`` is served under, or None if that changed while it
        waited for its tenant to open (the epoch was released or superseded, or the lease ran out)."""
        assignment = slot.assignment
        if epoch <= (slot.released or 0) or assignment is None or assignment.epoch != epoch or self.lease_lost():
            return None
        return assignment

    async def serving_epoch(self, slot: TenantSlot) -> int | None:
        """The epoch under which the tenant may be opened: the one the control plane's latest heartbeat answer
        gives for it here, which must be the one the node was asked to serve (a gateway may know a new
        assignment before the node: then the node asks the control plane now). A tenant the control plane
        does not assign here is not opened (after a restart the node does not remember which epochs it gave
        up, so a stale gateway's epoch alone proves nothing). None for a node without a control plane
        (benchmarks): nothing to check against, and no marker is written."""
        if self.lease is None:
            return None
        assignment = slot.assignment
        if (assignment is None or slot.confirmed != assignment.epoch) and self.refresh_assignments is not None:
            try:
                await asyncio.wait_for(self.refresh_assignments(), REFRESH_SECONDS)
            except Exception as err:  # noqa: BLE001 - answered below
                log.warning("tenant %s: assignments not refreshed before opening: %r", slot.tenant_id, err)
            assignment = slot.assignment
        confirmed = slot.confirmed
        if assignment is None or confirmed is None or confirmed != assignment.epoch:
            raise moved("The tenant is not served by this node; retry.")
        return confirmed

    def still_ours(self, slot: TenantSlot, epoch: int) -> bool:
        """Whether no other node can have been assigned the tenant since this node took it under ``epoch``:
        still confirmed under it, or under a later epoch of an uninterrupted stay here."""
        confirmed, since = slot.confirmed, slot.placed_since
        return not slot.stale and confirmed is not None and (
            confirmed == epoch or (since is not None and since <= epoch <= confirmed))

    def check_still_owned(self, slot: TenantSlot, epoch: int | None, generation: int) -> None:
        """Raise ApiError 503 unless the node may still serve and replicate the tenant it began opening under
        ``epoch`` when the fence generation was ``generation``: the lease holds, no fence or renewal happened
        since, the control plane still confirms that epoch here, and it was not released."""
        self.check_lease()
        if generation != self.fence_generation or slot.stale or (
                epoch is not None and (slot.confirmed != epoch or epoch <= (slot.released or 0))):
            raise moved("The tenant was placed elsewhere while it was being opened; retry.")

    def may_ship(self, slot: TenantSlot, epoch: int, releasing: bool) -> bool:
        """Whether the node may still write the tenant's replica under ``epoch`` (``releasing``: the release of
        that epoch is in progress)."""
        return slot.confirmed == epoch and not slot.stale and not self.lease_lost() \
            and (releasing or epoch > (slot.released or 0))

    @staticmethod
    def max_bytes(slot: TenantSlot) -> int | None:
        """The tenant's storage quota, which SQLite enforces too (None: unlimited)."""
        assignment = slot.assignment
        return None if assignment is None or assignment.storage_quota_bytes < 0 else assignment.storage_quota_bytes

    # ---- the control plane's answer -----------------------------------------------------------------

    def adopt(self, answer: Assignments, act: AdoptionActions) -> None:
        """Adopt the control plane's view: serve exactly ``answer.tenants``, drop the others.

        The first answer after the node was fenced also decides about the fenced tenants: one still
        assigned here with the epoch it had is served again from the local copy (nobody else can have
        written it); any other was re-placed meanwhile, so the epoch it had is released (stale gateways
        get 503 "moved") and its local copy is retired."""
        for why in answer.unusable.values():
            log.error("control plane sent an unusable assignment; not serving the tenant: %s", why)
        specs, deleted = answer.tenants, answer.deleted
        listed = specs.keys() | answer.unusable.keys()  # an unusable entry is not served, nor dropped
        if self.fenced is not None:
            fenced, self.fenced = self.fenced, None
            self.fence_generation += 1
            if self.on_lease_change is not None:
                self.on_lease_change()
            kept = 0
            for tenant_id, epoch in fenced.items():
                still = specs.get(tenant_id)
                if still is not None and still.epoch == epoch:
                    kept += 1
                    continue
                slot = self.slots[tenant_id]
                slot.released = max(slot.released or 0, epoch)
                slot.stale = True
                act.retire_copy(slot)
            act.resume_replication()
            log.warning("lease renewed: serving again (%d of %d fenced tenant(s) still assigned here)",
                        kept, len(fenced))
        for slot in self.slots:
            if slot.assignment is not None and slot.tenant_id not in listed:
                act.drop(slot, slot.assignment.epoch)
        for tenant_id in deleted:
            self.quotas.remove(tenant_id)
            if tenant_id not in listed:
                act.remove_data(self.slots[tenant_id])
        for tenant_id in self._confirmed:
            self.slots[tenant_id].confirmed = None
        self._confirmed = set()
        for tenant_id, spec in specs.items():
            slot = self.slots[tenant_id]
            epoch = spec.epoch
            if epoch <= (slot.released or 0):
                continue
            slot.confirmed = epoch
            self._confirmed.add(tenant_id)
            slot.incarnation = spec.incarnation
            slot.placed_since = spec.placed_since
            slot.seed = spec.seed
            current = slot.assignment
            if current is None or current.epoch <= epoch:
                slot.assignment = Assignment(epoch, spec.status, spec.moving, spec.durability,
                                             spec.request_time_limit_ms, spec.storage_quota_bytes)
            self.quotas.set_limits(tenant_id, spec.requests_quota, spec.storage_quota_bytes)
            if slot.superseded and not slot.reassigning:
                # placed elsewhere and back since it was opened: closed, and vetted again when next opened
                slot.reassigning = True
                act.close_superseded(slot)
            if spec.superuser:
                act.first_superuser(slot, spec.superuser)
        for slot in self.slots:
            assigned = specs.get(slot.tenant_id)
            if assigned is None:
                slot.seed = None  # a seed matters only while the tenant is assigned here
                slot.placed_since = None
                if slot.tenant is None:
                    slot.incarnation = None
            if slot.damaged is not None and (assigned is None or assigned.incarnation != slot.damaged.incarnation):
                slot.damaged = None  # restored in place (a new incarnation), or no longer served here
