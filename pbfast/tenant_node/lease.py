"""The tenant node's lease: how long it may keep serving and replicating its tenants without hearing from
the control plane.

The control plane declares a node down once it has recorded no heartbeat for ``node timeout`` seconds
(``--node-timeout``, sent to the node in every heartbeat answer) and then re-places the node's tenants on
other nodes. A node that merely lost its link to the control plane (a partition) would otherwise keep
serving those tenants to any stale gateway or client that still reaches it, and keep replicating them:
two writers on one replica path. So a node treats every acknowledged heartbeat as a lease:

- the lease starts when the heartbeat was **sent** (``renewed_at``, this node's monotonic clock). The
  control plane stamps the heartbeat when it arrives, which is later, so the control plane's count of
  ``node timeout`` starts after the node's: the node's deadlines err on the early side;
- at ``renewed_at + SERVE_FRACTION × node timeout`` (2.5 s at the default 5 s) the node *fences*: it
  admits no tenant request (503 with ``Retry-After`` and ``x-pbfast-moved``, so a gateway re-resolves and
  retries on the new node), lets requests in flight finish, ships each open tenant a final time and stops
  replicating it (Litestream ``/sync`` then ``/unregister``, each bounded by the deadlines below);
- at ``renewed_at + HALT_FRACTION × node timeout`` (4 s) nothing of this node may write a replica any
  more: if an unregister has not been confirmed by then (S3 unreachable, Litestream stuck) the node kills
  Litestream outright (SIGKILL: no flush), after taking every tenant off its list so the restarted
  Litestream replicates nothing;
- the control plane can declare the node down at ``stamp + node timeout`` at the earliest (5 s), and only
  then re-place its tenants.

The margin between the halt and the earliest re-placement, ``(1 - HALT_FRACTION) × node timeout`` (1 s at
the default), covers: the rate difference between this node's monotonic clock and the control plane
leader's wall clock (crystal oscillators and NTP slewing stay far below 1%, i.e. 0.05 s), the difference
between the wall clocks of the control plane member that stamped the heartbeat and the leader that judges
it (NTP keeps them within milliseconds; a clock *stepped* forward by more than the margin breaks the
guarantee), and this node's event loop being late to act on a lost lease (it must not block for longer than the margin).
The serving window, ``SERVE_FRACTION × node timeout``, tolerates one lost or slow heartbeat at the
default one-second interval: heartbeats are sent every ``min(1 s, node timeout / 5)`` and each attempt on
a control plane member times out after ``node timeout / 4`` (then the next member is tried at once), so a
hung member costs one attempt and the lease of the previous heartbeat still covers it.

A busy event loop (request handling, the in-process hand-over, a loaded machine) does not cost the lease:
the node's membership sends its heartbeats on the loop, and a thread beside it
(:mod:`pbfast.tenant_node.lease_keeper`) sends a bare one whenever the loop's are late, and renews the lease
from its acknowledgment with :meth:`Lease.extend`, which renews only a lease still valid (so nothing the
control plane decided while the node was silent is missed: after a lapse only the loop renews, once it has
adopted the answer).

When a heartbeat is acknowledged again, the lease is renewed and the node re-reads its assignments (the
heartbeat answer): tenants still assigned to it with the epoch they had when it fenced are served again
from the local copy; the others are left alone (their local copy is retired, see
:meth:`TenantNodeApp.apply_assignments`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["HALT_FRACTION", "Lease", "SERVE_FRACTION", "heartbeat_interval", "heartbeat_timeout"]

SERVE_FRACTION = 0.5  # stop admitting requests and start closing tenants
DRAIN_FRACTION = 0.6  # requests still running by then are not waited for
SYNC_FRACTION = 0.75  # final syncs not confirmed by then are abandoned (the unregister follows)
HALT_FRACTION = 0.8  # no replica writes from this node after this, whatever it takes
HEARTBEAT_SECONDS = 1.0
MIN_HEARTBEAT_SECONDS = 0.1


def heartbeat_interval(node_timeout: float) -> float:
    """Seconds between heartbeats: one per second, more often for short node timeouts."""
    return max(MIN_HEARTBEAT_SECONDS, min(HEARTBEAT_SECONDS, node_timeout / 5))


def heartbeat_timeout(node_timeout: float) -> float:
    """How long one heartbeat attempt may wait for one control plane member before trying the next."""
    return max(MIN_HEARTBEAT_SECONDS, node_timeout / 4)


class Lease:
    """The node's right to serve, as of its last acknowledged heartbeat. Times are ``clock()`` seconds
    (monotonic).

    Thread-safety: renewed from the event loop (:meth:`renew`) and from the lease keeper's thread
    (:meth:`extend`), each under :attr:`lock`, which also covers ``on_renew``; whoever decides from
    :meth:`valid` that the lease ran out (the fencing) holds :attr:`lock` for the check and what follows, so
    a renewal lands either before the check or after the fence. Reads are plain attribute reads (atomic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.node_timeout: float | None = None  # from the control plane; None until the first answer
        self.renewed_at: float | None = None  # when the last acknowledged heartbeat was sent
        self.renewals = 0
        self.extensions = 0  # renewals by the lease keeper's thread (the loop's heartbeats were late)
        self.on_renew: Callable[[], None] | None = None  # told of every renewal (a node's worker processes)

    def renew(self, sent_at: float, node_timeout: float) -> None:
        """A heartbeat sent at ``sent_at`` was acknowledged by a control plane using ``node_timeout`` (and its
        answer adopted: event loop)."""
        with self.lock:
            self._renew(sent_at, node_timeout)

    def extend(self, sent_at: float, node_timeout: float) -> bool:
        """A bare heartbeat sent at ``sent_at`` (beside the event loop) was acknowledged: renew the lease if it
        is still valid now; False, and nothing renewed, if it ran out. Still valid means the control plane
        recorded this heartbeat before it could have declared the node down (at the earliest ``node
        timeout`` after the previous heartbeat, twice the serving window), so none of the node's tenants
        was re-placed meanwhile and the assignments the node holds stay good; after a lapse only the loop
        renews, once it has adopted an answer (:meth:`renew`)."""
        with self.lock:
            if not self.clock() < self.serve_until:
                return False
            self._renew(sent_at, node_timeout)
            self.extensions += 1
            return True

    def _renew(self, sent_at: float, node_timeout: float) -> None:
        self.node_timeout = node_timeout
        if self.renewed_at is None or sent_at > self.renewed_at:
            self.renewed_at = sent_at
        self.renewals += 1
        if self.on_renew is not None:
            self.on_renew()

    def _at(self, fraction: float) -> float:
        if self.renewed_at is None or self.node_timeout is None:
            return float("-inf")
        return self.renewed_at + fraction * self.node_timeout

    @property
    def serve_until(self) -> float:
        return self._at(SERVE_FRACTION)

    @property
    def drain_until(self) -> float:
        return self._at(DRAIN_FRACTION)

    @property
    def sync_until(self) -> float:
        return self._at(SYNC_FRACTION)

    @property
    def halt_at(self) -> float:
        return self._at(HALT_FRACTION)

    def valid(self) -> bool:
        """May the node admit tenant requests now?"""
        return self.clock() < self.serve_until

    def remaining(self) -> float:
        """Seconds of serving left (0 when expired or never granted)."""
        return max(0.0, self.serve_until - self.clock())

    def age(self) -> float | None:
        """Seconds since the last acknowledged heartbeat was sent (None before the first)."""
        return None if self.renewed_at is None else self.clock() - self.renewed_at
