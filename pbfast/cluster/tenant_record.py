"""The tenant record: what the control plane knows of one tenant, typed.

The registry (:mod:`pbfast.control_plane.registry`) keeps records in their *stored* form, camelCase dicts
written into the Raft log and its snapshots, which a member replays after a restart; that form cannot
change. Everything else reads a record as a :class:`TenantRecord` (:meth:`TenantRecord.from_stored`, which
also reads records written before newer fields existed), and writes one only through the registry's
commands: :func:`new_tenant` is the stored form of a tenant the ``create_tenant`` command adds. Its public
JSON is :meth:`TenantRecord.to_json`; what its node is told, :attr:`TenantRecord.assignment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pbfast.cluster.heartbeat import DEFAULT_INCARNATION, FirstSuperuser, Seed, TenantAssignment
from pbfast.incarnations import Life, lives_of, lives_to_json
from pbfast.timefmt import format_datetime

__all__ = ["NewTenant", "TenantChanges", "TenantRecord", "Usage", "new_tenant"]

Json = dict[str, Any]
# The ``update_tenant`` command's argument: stored fields (storageQuotaMB, apiRequestsQuota, requestTimeLimitMs,
# status, durability) and their new values.
TenantChanges = dict[str, int | str | None]


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's usage in its current daily window, summed from its node's heartbeats."""

    api_requests: int
    period_start: int  # Unix seconds: the start of the day the counters are for
    storage_bytes: int
    db_time_limited: int = 0  # requests stopped by their time limit
    db_queue_rejected: int = 0  # requests refused because the tenant's queue was full
    db_wait_ms: int = 0  # time its database work waited for a thread

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any]) -> Usage:
        return cls(raw["apiRequests"], raw["periodStart"], raw["storageBytes"], raw.get("dbTimeLimited", 0),
                   raw.get("dbQueueRejected", 0), raw.get("dbWaitMs", 0))

    def to_json(self) -> Json:
        return {
            "storageMB": round(self.storage_bytes / (1 << 20), 3),
            "apiRequests": self.api_requests,
            "dbTimeLimited": self.db_time_limited,
            "dbQueueRejected": self.db_queue_rejected,
            "dbWaitSeconds": round(self.db_wait_ms / 1000, 3),
            "periodStart": format_datetime(self.period_start),
        }


def _seed(raw: Any) -> Seed | None:
    return None if raw is None else Seed(raw["incarnation"], raw.get("at"))


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    status: str  # "active" or "suspended"
    node_id: str | None  # where it is placed (None: nowhere yet)
    epoch: int  # the fencing epoch: bumped by every placement
    placed_since: int | None  # first epoch of its uninterrupted stay on its node
    moving: str | None  # the target of a planned move or in-place restore in progress
    moving_since: float | None  # when that began (None: a marker recorded before markers had a time)
    storage_quota_mb: int | None  # None: unlimited
    api_requests_quota: int | None  # a day; None: unlimited
    request_time_limit_ms: int | None  # None: the node's default
    durability: str  # "async" or "sync"
    incarnation: str  # its current life: its replica path
    seed: Seed | None  # what the current incarnation started from (an in-place restore)
    superuser: FirstSuperuser | None  # its first superuser, until its node has applied it
    usage: Usage
    created_at: float
    updated_at: float
    lives: tuple[Life, ...]  # its incarnations, oldest first, the current one last
    assignment: TenantAssignment = field(init=False, compare=False)  # what its node is told about it

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any]) -> TenantRecord:
        """The record as the registry stores it; fields added over time take the values older records
        mean (no time limit, no move marker time, incarnation "0", ...)."""
        superuser = raw.get("superuser")
        return cls(
            id=raw["id"], status=raw["status"], node_id=raw["nodeId"], epoch=raw["epoch"],
            placed_since=raw.get("placedSince"), moving=raw.get("moving"), moving_since=raw.get("movingSince"),
            storage_quota_mb=raw["storageQuotaMB"], api_requests_quota=raw["apiRequestsQuota"],
            request_time_limit_ms=raw.get("requestTimeLimitMs"), durability=raw["durability"],
            incarnation=raw.get("incarnation", DEFAULT_INCARNATION), seed=_seed(raw.get("seed")),
            superuser=FirstSuperuser(superuser["email"], superuser["passwordHash"]) if superuser else None,
            usage=Usage.from_stored(raw["usage"]), created_at=raw["createdAt"], updated_at=raw["updatedAt"],
            lives=tuple(lives_of(raw)))

    @property
    def storage_quota_bytes(self) -> int | None:
        return None if self.storage_quota_mb is None else self.storage_quota_mb << 20

    def to_json(self) -> Json:
        """The public JSON form (never its superuser's password hash)."""
        return {
            "id": self.id,
            "status": self.status,
            "nodeId": self.node_id,
            "epoch": self.epoch,
            "moving": self.moving,
            "storageQuotaMB": self.storage_quota_mb,
            "apiRequestsQuota": self.api_requests_quota,
            "requestTimeLimitMs": self.request_time_limit_ms,
            "durability": self.durability,
            "incarnation": self.incarnation,
            "restoredFrom": None if self.seed is None else self.seed.to_json(),
            "incarnations": lives_to_json(self.lives),
            "usage": self.usage.to_json(),
            "createdAt": format_datetime(self.created_at),
            "updatedAt": format_datetime(self.updated_at),
        }

    def __post_init__(self) -> None:
        # Made once per record (the registry types each stored record once): heartbeat answers list them all.
        object.__setattr__(self, "assignment", TenantAssignment(
            epoch=self.epoch, placed_since=self.placed_since, incarnation=self.incarnation, status=self.status,
            moving=self.moving, durability=self.durability, api_requests_quota=self.api_requests_quota,
            storage_quota_mb=self.storage_quota_mb, request_time_limit_ms=self.request_time_limit_ms,
            seed=self.seed, superuser=self.superuser))


@dataclass(frozen=True, slots=True)
class NewTenant:
    """A tenant to create, as an operator asked for it (checked)."""

    id: str
    storage_quota_mb: int | None = None
    api_requests_quota: int | None = None
    request_time_limit_ms: int | None = None
    durability: str = "async"


def new_tenant(tenant: NewTenant, node_id: str | None, incarnation: str, superuser: FirstSuperuser | None,
               window_start: int, now: float) -> Json:
    """The stored form of a new tenant: the ``create_tenant`` command's argument (the command adds its epoch
    and ``placedSince``)."""
    return {
        "id": tenant.id,
        "storageQuotaMB": tenant.storage_quota_mb,
        "apiRequestsQuota": tenant.api_requests_quota,
        "requestTimeLimitMs": tenant.request_time_limit_ms,
        "durability": tenant.durability,
        "status": "active",
        "nodeId": node_id,
        "moving": None,
        "incarnation": incarnation,
        "superuser": None if superuser is None else superuser.to_json(),
        "usage": {"apiRequests": 0, "periodStart": window_start, "storageBytes": 0},
        "createdAt": now,
        "updatedAt": now,
    }
