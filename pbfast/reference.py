"""Pure-Python twins of the native primitives in :mod:`pbfast._native`.

They follow the same contracts (see ``pbfast/_native.pyi``) and exist for two reasons: the test suite runs
every behavioural test against both implementations, and the benchmarks use them as the baseline the Rust
versions must beat. The server never uses them.

Thread-safety: every class guards its state with one :class:`threading.Lock`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CircuitBreakers",
    "InvalidTenantId",
    "QuotaCounters",
    "RoutingTable",
    "TenantCache",
    "hs256_sign",
    "hs256_verify",
    "is_valid_tenant_id",
    "jwt_segments",
]

_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

Route = tuple[str, int, bool]


class InvalidTenantId(ValueError):
    """A request named a tenant whose id is not a DNS label."""


def is_valid_tenant_id(tenant_id: str) -> bool:
    return _TENANT_ID.fullmatch(tenant_id) is not None


_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")


def _b64url_decode(part: str) -> bytes | None:
    """Strict unpadded base64url, as Go's ``RawURLEncoding`` (None: not that)."""
    raw = part.encode()
    if len(raw) % 4 == 1 or _BASE64URL.fullmatch(raw) is None:
        return None
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error:
        return None


def hs256_sign(payload: bytes, key: bytes) -> str:
    signing_input = _JWT_HEADER + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    signature = hmac.digest(key, signing_input, hashlib.sha256)
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def hs256_verify(token: str, key: bytes) -> bool:
    signing_input, dot, signature = token.rpartition(".")
    decoded = _b64url_decode(signature) if dot else None
    return decoded is not None and hmac.compare_digest(hmac.digest(key, signing_input.encode(), hashlib.sha256),
                                                       decoded)


def jwt_segments(token: str) -> tuple[bytes, bytes] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload = _b64url_decode(parts[0]), _b64url_decode(parts[1])
    return None if header is None or payload is None else (header, payload)


def _checked_id(tenant_id: str) -> str:
    if not is_valid_tenant_id(tenant_id):
        raise InvalidTenantId(f"invalid tenant id {tenant_id!r}: must be a DNS label")
    return tenant_id


class RoutingTable:
    """Versioned tenant -> route map; readers see an immutable dict swapped in by writers."""

    def __init__(self, base_domain: str = "") -> None:
        self._base_domain = base_domain.strip().lower().lstrip(".")
        self._suffix = "." + self._base_domain
        self._routes: dict[str, Route] = {}
        self._version = 0
        self._write_lock = threading.Lock()

    @property
    def version(self) -> int:
        return self._version

    @property
    def base_domain(self) -> str:
        return self._base_domain

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, tenant_id: str) -> bool:
        return tenant_id in self._routes

    def get(self, tenant_id: str) -> Route | None:
        return self._routes.get(tenant_id)

    def replace(self, routes: Iterable[tuple[str, str, int, bool]], version: int) -> None:
        fresh = {_checked_id(tid): (address, epoch, active) for tid, address, epoch, active in routes}
        with self._write_lock:
            self._routes = fresh
            self._version = version

    def patch(
        self,
        upserts: Iterable[tuple[str, str, int, bool]],
        removals: Iterable[str],
        version: int,
    ) -> None:
        rows = [(_checked_id(tid), (address, epoch, active)) for tid, address, epoch, active in upserts]
        gone = list(removals)
        with self._write_lock:
            fresh = dict(self._routes)
            fresh.update(rows)
            for tid in gone:
                fresh.pop(tid, None)
            self._routes = fresh
            self._version = version

    def snapshot(self) -> dict[str, Route]:
        return dict(self._routes)

    def resolve(self, path: str, host: str | None = None) -> tuple[str, str, Route | None] | None:
        if host and self._base_domain:
            name = host.lower()
            if not name.startswith("["):
                name = name.split(":", 1)[0]
                if name != self._base_domain and name.endswith(self._suffix):
                    label = name[: -len(self._suffix)]
                    if "." in label:
                        raise InvalidTenantId(f"invalid tenant host {host!r}")
                    return _checked_id(label), path, self._routes.get(label)
        if not path.startswith("/t/"):
            return None
        slash = path.find("/", 3)
        if slash < 0:
            tenant_id, rest = path[3:], "/"
        else:
            tenant_id, rest = path[3:slash], path[slash:]
        return _checked_id(tenant_id), rest, self._routes.get(tenant_id)


class _Quota:
    __slots__ = ("api_limit", "storage_limit", "window_start", "window_count", "unreported", "storage")

    def __init__(self) -> None:
        self.api_limit = -1
        self.storage_limit = -1
        self.window_start = 0
        self.window_count = 0
        self.unreported = 0
        self.storage = 0


class QuotaCounters:
    """Per-tenant request counters over fixed windows aligned to the Unix epoch, plus storage bytes."""

    def __init__(self, window_seconds: int = 86400) -> None:
        if window_seconds < 1:
            raise ValueError("window_seconds must be at least 1")
        self._window = window_seconds
        self._tenants: dict[str, _Quota] = {}
        self._lock = threading.Lock()

    @property
    def window_seconds(self) -> int:
        return self._window

    def __len__(self) -> int:
        return len(self._tenants)

    def _start(self, now: float | None) -> int:
        seconds = int(time.time() if now is None else now)
        return seconds - seconds % self._window

    def _entry(self, tenant_id: str) -> _Quota:
        entry = self._tenants.get(tenant_id)
        if entry is None:
            entry = self._tenants[tenant_id] = _Quota()
        return entry

    def set_limits(self, tenant_id: str, api_requests: int = -1, storage_bytes: int = -1) -> None:
        with self._lock:
            entry = self._entry(tenant_id)
            entry.api_limit = api_requests
            entry.storage_limit = storage_bytes

    def try_acquire(self, tenant_id: str, now: float | None = None) -> tuple[bool, int]:
        start = self._start(now)
        with self._lock:
            entry = self._entry(tenant_id)
            if entry.window_start < start:  # a late caller with an older clock counts in the newer window
                entry.window_start = start
                entry.window_count = 0
            if entry.api_limit < 0:
                entry.window_count += 1
                entry.unreported += 1
                return True, -1
            if entry.window_count >= entry.api_limit:
                return False, 0
            entry.window_count += 1
            entry.unreported += 1
            return True, entry.api_limit - entry.window_count

    def add_storage(self, tenant_id: str, delta_bytes: int) -> int:
        with self._lock:
            entry = self._entry(tenant_id)
            entry.storage = max(0, entry.storage + delta_bytes)
            return entry.storage

    def set_storage(self, tenant_id: str, total_bytes: int) -> None:
        with self._lock:
            self._entry(tenant_id).storage = max(0, total_bytes)

    def storage_allows(self, tenant_id: str, extra_bytes: int) -> bool:
        with self._lock:
            entry = self._tenants.get(tenant_id)
            if entry is None or entry.storage_limit < 0:
                return True
            return entry.storage + extra_bytes <= entry.storage_limit

    def usage(self, tenant_id: str, now: float | None = None) -> tuple[int, int, int] | None:
        start = self._start(now)
        with self._lock:
            entry = self._tenants.get(tenant_id)
            if entry is None:
                return None
            count = entry.window_count if entry.window_start == start else 0
            return count, entry.storage, start

    def snapshot_and_reset(self) -> dict[str, tuple[int, int, int]]:
        start = self._start(None)
        with self._lock:
            report = {}
            for tenant_id, entry in self._tenants.items():
                report[tenant_id] = (entry.unreported, entry.storage, start)
                entry.unreported = 0
            return report

    def remove(self, tenant_id: str) -> bool:
        with self._lock:
            return self._tenants.pop(tenant_id, None) is not None


@dataclass(slots=True)
class _Slot:
    pins: int
    last_used: float


class TenantCache:
    """LRU of open tenants with pinning; an OrderedDict keeps least recently used first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, tenant_id: str) -> bool:
        return tenant_id in self._slots

    def _evict_over_capacity(self) -> list[str]:
        evicted: list[str] = []
        excess = len(self._slots) - self._capacity
        if excess <= 0:
            return evicted
        for tenant_id, slot in self._slots.items():
            if slot.pins == 0:
                evicted.append(tenant_id)
                if len(evicted) == excess:
                    break
        for tenant_id in evicted:
            del self._slots[tenant_id]
        return evicted

    def acquire(self, tenant_id: str) -> tuple[bool, list[str]]:
        now = time.monotonic()
        with self._lock:
            slot = self._slots.get(tenant_id)
            was_open = slot is not None
            if slot is None:
                slot = self._slots[tenant_id] = _Slot(0, now)
            else:
                self._slots.move_to_end(tenant_id)
                slot.last_used = now
            slot.pins += 1
            return was_open, self._evict_over_capacity()

    def release(self, tenant_id: str) -> list[str]:
        with self._lock:
            slot = self._slots.get(tenant_id)
            if slot is None or slot.pins == 0:
                raise KeyError(tenant_id)
            slot.pins -= 1
            return self._evict_over_capacity()

    def pins(self, tenant_id: str) -> int:
        with self._lock:
            slot = self._slots.get(tenant_id)
            return 0 if slot is None else slot.pins

    def remove(self, tenant_id: str) -> bool:
        with self._lock:
            return self._slots.pop(tenant_id, None) is not None

    def evict_idle(self, idle_seconds: float) -> list[str]:
        deadline = time.monotonic() - idle_seconds
        with self._lock:
            idle = [tid for tid, slot in self._slots.items() if slot.pins == 0 and slot.last_used <= deadline]
            for tenant_id in idle:
                del self._slots[tenant_id]
            return idle

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._slots)


@dataclass(slots=True)
class _Breaker:
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probes: int = 0


class CircuitBreakers:
    """Per-node circuit breakers on the monotonic clock."""

    def __init__(
        self, failure_threshold: int = 5, cooldown_seconds: float = 1.0, half_open_probes: int = 1
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")
        if cooldown_seconds < 0:
            raise ValueError("cooldown_seconds must not be negative")
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._probe_budget = half_open_probes
        self._nodes: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def _refresh(self, breaker: _Breaker, now: float) -> None:
        if breaker.state == "open" and now - breaker.opened_at >= self._cooldown:
            breaker.state = "half-open"
            breaker.probes = 0

    def allow(self, node: str) -> bool:
        with self._lock:
            breaker = self._nodes.get(node)
            if breaker is None:
                return True
            self._refresh(breaker, time.monotonic())
            if breaker.state == "closed":
                return True
            if breaker.state == "half-open" and breaker.probes < self._probe_budget:
                breaker.probes += 1
                return True
            return False

    def record_success(self, node: str) -> None:
        with self._lock:
            breaker = self._nodes.get(node)
            if breaker is None:
                return
            if breaker.state == "closed":
                breaker.failures = 0
            elif breaker.state == "half-open":
                breaker.state, breaker.failures, breaker.probes = "closed", 0, 0

    def record_failure(self, node: str) -> None:
        with self._lock:
            breaker = self._nodes.setdefault(node, _Breaker())
            if breaker.state == "closed":
                breaker.failures += 1
                if breaker.failures >= self._threshold:
                    breaker.state, breaker.opened_at = "open", time.monotonic()
            elif breaker.state == "half-open":
                breaker.state, breaker.opened_at, breaker.probes = "open", time.monotonic(), 0

    def state(self, node: str) -> str:
        with self._lock:
            breaker = self._nodes.get(node)
            if breaker is None:
                return "closed"
            self._refresh(breaker, time.monotonic())
            return breaker.state

    def retry_after(self, node: str) -> float:
        with self._lock:
            breaker = self._nodes.get(node)
            if breaker is None or breaker.state != "open":
                return 0.0
            return max(0.0, breaker.opened_at + self._cooldown - time.monotonic())

    def states(self) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            for breaker in self._nodes.values():
                self._refresh(breaker, now)
            return {node: breaker.state for node, breaker in self._nodes.items()}

    def reset(self, node: str) -> None:
        with self._lock:
            self._nodes.pop(node, None)
