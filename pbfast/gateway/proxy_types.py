"""The vocabulary the parts of the gateway's Python proxy share: its limits, where a request goes, and the
two ways an attempt fails (the client's fault, or nothing reached the node).

Thread-safety: immutable values and exceptions only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["ClientError", "ProxyLimits", "Reroute", "StaleConnection", "Target", "Unreachable"]


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Limits of the proxy; the defaults suit a gateway in front of PocketBase-compatible nodes.

    ``max_body_bytes`` is the largest of PocketBase's default request limits (128 MiB, its batch limit;
    nodes enforce each route's exact limit: 32 MiB, a batch's ``maxBodySize``, a record route's 32 MiB plus
    what its collection's file fields may carry). ``client_idle_seconds`` bounds the wait for the next
    piece of a request body. ``read_timeout_seconds`` bounds each wait for the node (not for
    ``text/event-stream`` responses once they started).
    """

    max_body_bytes: int = 128 << 20
    max_header_bytes: int = 32 << 10
    max_response_header_bytes: int = 64 << 10
    connect_timeout_seconds: float = 1.0
    read_timeout_seconds: float = 30.0
    client_idle_seconds: float = 60.0
    max_connections_per_node: int = 1024
    max_idle_per_node: int = 256
    pool_idle_seconds: float = 15.0  # below granian's 30 s keep-alive, so the node never closes first
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes: the node's ``http(s)://host:port``, the tenant, its epoch, the path."""

    address: str
    tenant_id: str
    epoch: int
    forward_path: str
    # The client's spelling of /t/{id}{forward_path} (percent-encoded), sent to the node to route on; None:
    # unknown (granian, the Python listener, hands over decoded paths only) or nothing encoded.
    raw_path: str | None = None


# reroute(target, reason) -> a new target to try once, or None. reason: "unreachable" (nothing reached
# the node: connection failed, timed out, or its breaker is open) or "moved" (the node refused the epoch).
Reroute = Callable[[Target, str], Awaitable[Target | None]]


class ClientError(Exception):
    """The client's request cannot be forwarded: answered with ``status`` (nothing reached the node)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unreachable(Exception):
    """Nothing of the request reached the node (or nothing came back): ``kind`` names why."""

    def __init__(self, kind: str, status: int, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.retry_after = retry_after


class StaleConnection(Exception):
    """A pooled connection turned out closed before any answer; the request is sent again on a new one."""
