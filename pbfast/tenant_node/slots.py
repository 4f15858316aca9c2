"""A tenant on this node: one :class:`TenantSlot` per tenant id, with its open connection's state
(:class:`SlotState`) and everything the node knows about the tenant, in one place.

The connection's life, the only transitions there are (each made by the tenant pool under the slot's lock,
except the close a fence makes, which holds it too)::

    CLOSED ──begin_opening──▶ OPENING ──opened──▶ SERVING ──begin_closing──▶ CLOSING ──closed──▶ CLOSED
                                 └──open_failed──▶ CLOSED

- **closed**: no connection; a local copy may be on disk (``tenants/<id>/``, see
  :mod:`pbfast.tenant_node.local_copy`), shipped to the replica or not (:attr:`TenantSlot.unshipped`);
- **opening**: being opened: its local copy vetted, maybe restored from the replica, the copy's marker
  written, registered with Litestream; requests wait for it (up to the open wait);
- **serving**: open, requests are served (:attr:`TenantSlot.tenant`);
- **closing**: taken out of service (idle, evicted, released, unassigned, reassigned, deleted, fenced,
  shutdown): final sync, unregister, checkpoint and close under way; a request waits for the lock and opens
  it again.

Beside that state, a slot holds the tenant's ownership as the control plane last told it (assignment,
confirmed epoch, released epoch, incarnation, seed, ``placedSince``), the state of its local copy (marked
stale, unshipped, being shipped again), and what is pending (its first superuser, an import, a damaged
verdict). Whether the node may serve it is decided by :class:`pbfast.tenant_node.ownership.Ownership`.

Slots are never removed (like the per-tenant lock they hold, which must stay the one lock of the tenant):
one per tenant id this node has ever seen, a few hundred bytes each.

A node with worker processes serves from a copy of each slot's state in shared memory: a slot's *observer*
(:meth:`pbfast.tenant_node.shared_state.SharedState.mirror`) is called on every change of a field that copy is
made of (:data:`MIRRORED`), so no decision of the main process is ever missing there.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from pbfast.cluster.heartbeat import DEFAULT_INCARNATION, FirstSuperuser, Seed
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.damaged import DamagedState
from pbfast.tenant_node.local_copy import CopyMarker

__all__ = ["MIRRORED", "Assignment", "SlotState", "Slots", "TenantSlot"]

T = TypeVar("T")

MIRRORED = frozenset({"state", "tenant", "copy", "assignment", "released", "importing", "realtime_clients"})


class SlotState(Enum):
    CLOSED = "closed"
    OPENING = "opening"
    SERVING = "serving"
    CLOSING = "closing"


@dataclass(slots=True)
class Assignment:
    """What this node serves a tenant under: from the control plane's heartbeat answer, or (an epoch only,
    the rest default) from a gateway that knew a newer route before the node did."""

    epoch: int
    status: str = "active"
    moving: str | None = None
    durability: str = "async"
    time_limit_ms: int | None = None  # the tenant's own request time limit (None: the node's)
    storage_quota_bytes: int = -1  # -1: unlimited


@dataclass(eq=False, slots=True)
class TenantSlot:
    tenant_id: str
    _serving: dict[str, TenantSlot] = field(default_factory=dict, repr=False)  # the table's index of open ones
    # Serialises opening, closing, retiring and shipping the tenant's copy (requests do not take it).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: SlotState = SlotState.CLOSED
    tenant: Tenant | None = None  # the open connection, while serving
    copy: CopyMarker | None = None  # the marker written when it was opened, until its close is recorded

    # ownership (see pbfast.tenant_node.ownership)
    assignment: Assignment | None = None
    confirmed: int | None = None  # the epoch the control plane's last heartbeat answer gives it here
    released: int | None = None  # the highest epoch this node gave up (a move, a re-placement)
    incarnation: str | None = None  # its current life (the replica path), from the heartbeat answers
    seed: Seed | None = None  # where a new incarnation without a replica of its own starts
    placed_since: int | None = None  # first epoch of its uninterrupted stay on this node

    # the local copy on disk
    stale: bool = False  # another node may have written the tenant since: retire the copy before opening
    reassigning: bool = False  # open, placed again since: being closed in the background to be vetted again
    unshipped: bool = False  # closed, but its final sync failed: shipped again in the background
    reshipping: bool = False
    reship_after: float = 0.0  # monotonic time of the next background try
    reship_failures: int = 0

    # pending work
    importing: bool = False  # an upload is being installed: requests get 503
    realtime_clients: bool = False  # realtime streams of it are open here (its writes must run where they are)
    first_superuser: FirstSuperuser | None = None  # to apply once its database exists
    damaged: DamagedState | None = None  # not served: its newest replicated state is damaged
    storage_measured_at: float = 0.0  # monotonic time its stored bytes were last measured
    observer: Callable[[TenantSlot], None] | None = field(default=None, repr=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in MIRRORED:
            observer = getattr(self, "observer", None)  # unset while the dataclass initialises
            if observer is not None:
                observer(self)

    # ---- the connection's state machine ----------------------------------------------------------------

    def begin_opening(self) -> None:
        self._move(SlotState.CLOSED, SlotState.OPENING)

    def opened(self, tenant: Tenant) -> None:
        self._move(SlotState.OPENING, SlotState.SERVING)
        self.tenant = tenant
        self._serving[self.tenant_id] = self

    def open_failed(self) -> None:
        self._move(SlotState.OPENING, SlotState.CLOSED)
        self.copy = None

    def begin_closing(self) -> Tenant | None:
        """Take the open tenant out of service; its connection (None when it is not serving), to close."""
        if self.state is not SlotState.SERVING:
            return None
        tenant, self.tenant = self.tenant, None
        self.state = SlotState.CLOSING
        del self._serving[self.tenant_id]
        return tenant

    def closed(self) -> None:
        self._move(SlotState.CLOSING, SlotState.CLOSED)

    def _move(self, before: SlotState, after: SlotState) -> None:
        if self.state is not before:
            raise RuntimeError(f"tenant {self.tenant_id}: {self.state.value} -> {after.value} is no transition")
        self.state = after

    # ---- what follows from the fields ----------------------------------------------------------------

    @property
    def current_incarnation(self) -> str:
        return self.incarnation or DEFAULT_INCARNATION

    @property
    def superseded(self) -> bool:
        """Whether the open tenant was opened under another epoch than the one it is assigned under now (the
        control plane placed it again since): its copy must be closed and vetted again before it is served."""
        return self.copy is not None and self.assignment is not None and self.assignment.epoch != self.copy.epoch


class Slots:
    """Every tenant slot of the node, by tenant id."""

    def __init__(self, observer: Callable[[TenantSlot], None] | None = None) -> None:
        self._slots: dict[str, TenantSlot] = {}
        self._serving: dict[str, TenantSlot] = {}  # the slots in SERVING, in the order they were opened
        self.observer = observer  # told of every change of a slot's MIRRORED fields

    def __getitem__(self, tenant_id: str) -> TenantSlot:
        """The tenant's slot, made on first use."""
        slot = self._slots.get(tenant_id)
        if slot is None:
            slot = self._slots[tenant_id] = TenantSlot(tenant_id, self._serving, observer=self.observer)
        return slot

    def get(self, tenant_id: str) -> TenantSlot | None:
        return self._slots.get(tenant_id)

    def __iter__(self) -> Iterator[TenantSlot]:
        return iter(list(self._slots.values()))

    def serving(self, tenant_id: str) -> Tenant | None:
        """The tenant's open connection, if it is being served (the requests' fast path)."""
        slot = self._serving.get(tenant_id)
        return None if slot is None else slot.tenant

    def serving_slots(self) -> list[TenantSlot]:
        """The slots being served now, in the order they were opened."""
        return list(self._serving.values())

    def serving_count(self) -> int:
        return len(self._serving)

    def where(self, value: Callable[[TenantSlot], T | None]) -> dict[str, T]:
        """``{tenant id: value(slot)}`` for the slots where it is not None."""
        found = {}
        for tenant_id, slot in self._slots.items():
            if (item := value(slot)) is not None:
                found[tenant_id] = item
        return found

    def open_tenants(self) -> dict[str, Tenant]:
        """The tenants being served now, in the order they were opened."""
        return {tenant_id: slot.tenant for tenant_id, slot in self._serving.items() if slot.tenant is not None}
