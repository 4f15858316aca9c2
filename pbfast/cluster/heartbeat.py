"""What a tenant node and the control plane tell each other once a second.

The node sends a :class:`Heartbeat` (``POST /api/cp/nodes/{id}/heartbeat``): its open tenants, each tenant's
usage since the last acknowledged heartbeat (:class:`TenantUsage`), and the tenants whose first superuser it
has applied. The control plane answers with a :class:`HeartbeatAnswer`: every tenant the node is to serve,
with the :class:`TenantAssignment` it is to serve it under, the tenants deleted from it, and the node
timeout its lease is reckoned by (:mod:`pbfast.tenant_node.lease`).

Both sides build and read these types; JSON (camelCase) exists only on the wire, in :meth:`to_json` and
``from_json``. ``from_json`` checks everything a peer sent before any of it is used and raises
:class:`WireError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pbfast.primitives import is_valid_tenant_id
from pbfast.timefmt import parse_time

__all__ = ["DEFAULT_INCARNATION", "FirstSuperuser", "Heartbeat", "HeartbeatAnswer", "LastRead", "Seed",
           "TenantAssignment", "TenantUsage", "WireError", "is_incarnation", "is_restore_time"]

DEFAULT_INCARNATION = "0"  # tenants created before incarnations existed
_INCARNATION = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a path segment of the replica URL
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Json = dict[str, Any]


class WireError(ValueError):
    """A peer sent something unusable: ``field`` names it, ``code`` and the message say why (PocketBase's
    validation error shape)."""

    def __init__(self, field_name: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.code = code


def is_incarnation(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a tenant incarnation (it is a path segment of the replica URL)."""
    return isinstance(value, str) and _INCARNATION.fullmatch(value) is not None


def is_restore_time(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a point in time a replica can be restored to (RFC 3339; no zone means UTC)."""
    if not isinstance(value, str):
        return False
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- node -> control plane ------------------------------------------------------------------------------


@dataclass(slots=True)
class TenantUsage:
    """One tenant's usage in a heartbeat: requests since the last acknowledged heartbeat and the database
    counters' growth since then (``db_*``), its stored bytes now, and the start of its daily window."""

    api_requests: int
    storage_bytes: int
    period_start: int
    db_time_limited: int = 0
    db_queue_rejected: int = 0
    db_wait_ms: int = 0

    def to_json(self) -> Json:
        return {"apiRequests": self.api_requests, "storageBytes": self.storage_bytes,
                "periodStart": self.period_start, "dbTimeLimited": self.db_time_limited,
                "dbQueueRejected": self.db_queue_rejected, "dbWaitMs": self.db_wait_ms}

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """The form the registry's ``heartbeat`` command stores in the Raft log."""
        return (self.api_requests, self.storage_bytes, self.period_start, self.db_time_limited,
                self.db_queue_rejected, self.db_wait_ms)

    @classmethod
    def from_json(cls, tenant_id: str, raw: object) -> TenantUsage:
        """Raises :class:`WireError`. The database counters are optional (0 from a node without them)."""
        values = [raw.get(name) for name in _USAGE_FIELDS] + [raw.get(name, 0) for name in _DB_USAGE_FIELDS] \
            if isinstance(raw, dict) else [None]
        if not is_valid_tenant_id(tenant_id) or not all(_whole(value) and value >= 0 for value in values):
            raise WireError("usage", "validation_invalid_usage",
                            f"Usage of {tenant_id!r} needs whole numbers apiRequests, storageBytes, periodStart "
                            f"(and, optionally, {', '.join(_DB_USAGE_FIELDS)}).")
        return cls(*values)


_USAGE_FIELDS = ("apiRequests", "storageBytes", "periodStart")
_DB_USAGE_FIELDS = ("dbTimeLimited", "dbQueueRejected", "dbWaitMs")


@dataclass(slots=True)
class Heartbeat:
    open_tenants: int
    usage: dict[str, TenantUsage] = field(default_factory=dict)
    superusers_applied: list[str] = field(default_factory=list)
    instance_id: str | None = None

    def to_json(self) -> Json:
        return {"openTenants": self.open_tenants, "usage": {t: u.to_json() for t, u in self.usage.items()},
                "superusersApplied": self.superusers_applied, "instanceId": self.instance_id}

    @classmethod
    def from_json(cls, body: Json) -> Heartbeat:
        """Raises :class:`WireError`."""
        raw_usage = body.get("usage", {})
        if not isinstance(raw_usage, dict):
            raise WireError("usage", "validation_invalid_type", "Must be an object.")
        usage = {tenant_id: TenantUsage.from_json(tenant_id, entry) for tenant_id, entry in raw_usage.items()}
        open_tenants = body.get("openTenants", 0)
        if not _whole(open_tenants) or open_tenants < 0:
            raise WireError("openTenants", "validation_invalid_type", "Must be a whole number.")
        applied = body.get("superusersApplied", [])
        if not isinstance(applied, list) or not all(isinstance(t, str) for t in applied):
            raise WireError("superusersApplied", "validation_invalid_type", "Must be a list of tenant ids.")
        instance = body.get("instanceId")
        if instance is not None and not (isinstance(instance, str) and _INSTANCE_ID.fullmatch(instance)):
            raise WireError("instanceId", "validation_invalid_instance", "Must be 1-64 letters, digits, '-' or '_'.")
        return cls(open_tenants, usage, applied, instance)


# ---- control plane -> node ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seed:
    """Where a new incarnation without a replica of its own starts: ``incarnation``'s replica as of ``at``
    (RFC 3339; None: its latest state). Made by an in-place point-in-time restore."""

    incarnation: str
    at: str | None

    def to_json(self) -> Json:
        return {"incarnation": self.incarnation, "at": self.at}

    @classmethod
    def from_json(cls, raw: object) -> Seed | None:
        """None for None. Raises ValueError."""
        if raw is None:
            return None
        if not isinstance(raw, dict) or not is_incarnation(raw.get("incarnation")) \
                or not (raw.get("at") is None or is_restore_time(raw["at"])):
            raise ValueError(f"unusable seed {raw!r}")
        return cls(raw["incarnation"], raw.get("at") or None)


@dataclass(frozen=True, slots=True)
class FirstSuperuser:
    """A tenant's first superuser, set at creation (bcrypt hash), until its node has applied it."""

    email: str
    password_hash: str

    def to_json(self) -> Json:
        return {"email": self.email, "passwordHash": self.password_hash}

    @classmethod
    def from_json(cls, raw: object) -> FirstSuperuser | None:
        """None for None or empty. Raises ValueError."""
        if not raw:
            return None
        if not (isinstance(raw, dict) and isinstance(raw.get("email"), str)
                and isinstance(raw.get("passwordHash"), str)):
            raise ValueError("unusable superuser")
        return cls(raw["email"], raw["passwordHash"])


@dataclass(frozen=True, slots=True)
class TenantAssignment:
    """One tenant as the control plane assigns it to a node."""

    epoch: int  # the fencing epoch: the node serves requests routed with it (or a newer one), never older
    placed_since: int | None  # first epoch of the tenant's uninterrupted stay on this node (None: unknown)
    incarnation: str  # the tenant's current life: its replica path
    status: str = "active"  # or "suspended"
    moving: str | None = None  # the node a planned move or in-place restore is taking it to
    durability: str = "async"  # "sync": a write is answered once it is in the replica
    api_requests_quota: int | None = None  # a day; None: unlimited
    storage_quota_mb: int | None = None  # None: unlimited
    request_time_limit_ms: int | None = None  # None: the node's default
    seed: Seed | None = None
    superuser: FirstSuperuser | None = None
    # its JSON, made once: a control plane sends each node all of its assignments every second
    _json: Json | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def requests_quota(self) -> int:
        """The daily request quota as the node counts it (-1: unlimited)."""
        return -1 if self.api_requests_quota is None else self.api_requests_quota

    @property
    def storage_quota_bytes(self) -> int:
        """The storage quota in bytes (-1: unlimited)."""
        return -1 if self.storage_quota_mb is None else self.storage_quota_mb << 20

    def to_json(self) -> Json:
        """Its JSON (shared: do not change it)."""
        if self._json is None:
            object.__setattr__(self, "_json", self._make_json())
        assert self._json is not None
        return self._json

    def _make_json(self) -> Json:
        return {
            "epoch": self.epoch,
            "placedSince": self.placed_since,
            "status": self.status,
            "moving": self.moving,
            "storageQuotaMB": self.storage_quota_mb,
            "apiRequestsQuota": self.api_requests_quota,
            "requestTimeLimitMs": self.request_time_limit_ms,
            "durability": self.durability,
            "incarnation": self.incarnation,
            "seed": None if self.seed is None else self.seed.to_json(),
            "superuser": None if self.superuser is None else self.superuser.to_json(),
        }

    @classmethod
    def from_json(cls, tenant_id: object, raw: object) -> TenantAssignment:
        """One tenant's entry of a heartbeat answer, checked. Raises ValueError."""
        if not isinstance(tenant_id, str) or not is_valid_tenant_id(tenant_id) or not isinstance(raw, dict):
            raise ValueError(f"malformed assignment of tenant {tenant_id!r}")

        def whole(name: str, nullable: bool = True) -> int | None:
            value = raw.get(name)
            if value is None and nullable:
                return None
            if not _whole(value):
                raise ValueError(f"assignment of tenant {tenant_id!r}: {name} is not a whole number: {value!r}")
            return value

        incarnation = str(raw.get("incarnation") or DEFAULT_INCARNATION)
        if not is_incarnation(incarnation):
            raise ValueError(f"assignment of tenant {tenant_id!r}: unusable incarnation {incarnation!r}")
        try:
            seed = Seed.from_json(raw.get("seed"))
            superuser = FirstSuperuser.from_json(raw.get("superuser"))
        except ValueError as err:
            raise ValueError(f"assignment of tenant {tenant_id!r}: {err}") from None
        requests, storage_mb = whole("apiRequestsQuota"), whole("storageQuotaMB")
        moving = raw.get("moving")
        epoch = whole("epoch", nullable=False)
        assert epoch is not None
        return cls(
            epoch=epoch, placed_since=whole("placedSince"), incarnation=incarnation,
            status=str(raw.get("status", "active")), moving=moving if isinstance(moving, str) else None,
            durability=str(raw.get("durability", "async")), api_requests_quota=requests,
            storage_quota_mb=storage_mb, request_time_limit_ms=whole("requestTimeLimitMs"),
            seed=seed, superuser=superuser)


@dataclass(frozen=True, slots=True)
class Assignments:
    """The tenants a node is to serve (checked; an unusable entry is left out and reported in ``unusable``)
    and those deleted from it."""

    tenants: dict[str, TenantAssignment]
    deleted: list[str]
    unusable: dict[str, str] = field(default_factory=dict)  # tenant id -> why its entry was left out

    @classmethod
    def from_json(cls, tenants: object, deleted: object, last_read: LastRead | None = None) -> Assignments:
        """A malformed answer raises ValueError; a malformed entry is left out (that tenant is not served
        until the control plane sends a usable one), so one bad record does not fence a node's other tenants.
        ``last_read``: the entries of the previous answer, kept for the next (an equal entry is not read again)."""
        if not isinstance(tenants, dict) or not isinstance(deleted, list) \
                or not all(isinstance(t, str) and is_valid_tenant_id(t) for t in deleted):
            raise ValueError("malformed assignments: tenants must be an object and deleted a list of tenant ids")
        checked: dict[str, TenantAssignment] = {}
        unusable: dict[str, str] = {}
        previous = {} if last_read is None else last_read.entries
        kept: dict[str, tuple[object, TenantAssignment]] = {}
        for tenant_id, raw in tenants.items():
            known = previous.get(tenant_id)
            if known is not None and known[0] == raw:  # the same JSON reads the same: checked when first read
                checked[tenant_id] = known[1]
                kept[tenant_id] = known
                continue
            try:
                checked[tenant_id] = assignment = TenantAssignment.from_json(tenant_id, raw)
            except ValueError as err:
                unusable[str(tenant_id)] = str(err)
                continue
            kept[tenant_id] = (raw, assignment)
        if last_read is not None:
            last_read.entries = kept
        return cls(checked, list(deleted), unusable)


class LastRead:
    """A node's assignments as read from its last heartbeat answer, by their JSON: every answer repeats all of
    the node's assignments (each second), and checking and building each again cost ~2 % of the event loop
    with 100 busy tenants (~7 ms a beat with 1,000). Event loop only."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, tuple[object, TenantAssignment]] = {}


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    node_id: str
    assignments: Assignments
    routes_version: int
    node_timeout_seconds: float | None  # None: the control plane sent none usable (the node's default holds)

    def to_json(self) -> Json:
        return {"nodeId": self.node_id,
                "tenants": {t: a.to_json() for t, a in self.assignments.tenants.items()},
                "deleted": self.assignments.deleted, "routesVersion": self.routes_version,
                "nodeTimeoutSeconds": self.node_timeout_seconds}

    @classmethod
    def from_json(cls, raw: object, last_read: LastRead | None = None) -> HeartbeatAnswer:
        """Raises ValueError when the answer is malformed (see :meth:`Assignments.from_json`)."""
        if not isinstance(raw, dict):
            raise ValueError("malformed heartbeat answer: not an object")
        timeout = raw.get("nodeTimeoutSeconds")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            timeout = None
        version = raw.get("routesVersion")
        assignments = Assignments.from_json(raw.get("tenants"), raw.get("deleted"), last_read)
        return cls(str(raw.get("nodeId") or ""), assignments,
                   version if _whole(version) else 0, None if timeout is None else float(timeout))
