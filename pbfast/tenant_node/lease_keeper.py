"""Keeps the node's lease (:mod:`pbfast.tenant_node.lease`) renewed while its event loop is busy.

The node's membership sends its heartbeats from the event loop, which also handles requests (in all-in-one
every tenant request, handed over in process). On a loaded machine that loop can be seconds late, and a
lease that lapses fences a healthy node: every tenant answers 503 until the next heartbeat. So a thread
beside the loop watches the lease, and when the loop's heartbeats are late (the last acknowledged one was
sent more than :data:`LATE_INTERVALS` heartbeat intervals ago) it sends a bare heartbeat itself (no usage:
that stays with the loop's next one) and renews the lease from its acknowledgment with
:meth:`~pbfast.tenant_node.lease.Lease.extend`: only a lease still valid is renewed, so the thread never
brings a lapsed node back (the loop does that once it has adopted the answer and sorted out the fenced
tenants).

How the heartbeat travels (:data:`BareBeat`): to a remote control plane over HTTP with a blocking client
(:func:`bare_beats_over_http`); in all-in-one straight into the process's own control plane member
(:meth:`pbfast.control_plane.nodes_api.NodesApi.bare_heartbeat`), whose HTTP listener is on the same busy loop.
It is sent at most once per :data:`LATE_INTERVALS` intervals: an idle loop keeps sending them all itself.

Thread-safety: :meth:`LeaseKeeper.start` and :meth:`LeaseKeeper.stop` from any thread; the rest runs on the
keeper's thread, reading the lease (plain attribute reads) and renewing it under its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pbfast.cluster.heartbeat import Heartbeat, HeartbeatAnswer, LastRead
from pbfast.cp_client import SyncControlPlaneClient
from pbfast.logs import component_logger
from pbfast.tenant_node.lease import Lease, heartbeat_timeout

__all__ = ["LATE_INTERVALS", "BareBeat", "LeaseKeeper", "bare_beats_over_http"]

log = component_logger("TenantNode")

# The keeper sends when the lease was last renewed from a heartbeat sent this many intervals ago: the loop's
# next one is a quarter of an interval late (and the serving window, 2.5 intervals at the default node
# timeout, still has more than one interval left for the keeper's own round trip).
LATE_INTERVALS = 1.25
CHECKS_PER_INTERVAL = 4

# Sends one bare heartbeat, waiting at most the given seconds per control plane member; returns the node
# timeout of the answer (None: the control plane sent none). Raises when it was not acknowledged.
BareBeat = Callable[[Heartbeat, float], float | None]


def bare_beats_over_http(client: SyncControlPlaneClient, node_id: str) -> BareBeat:
    """Bare heartbeats to a remote control plane (``client``: used by the keeper's thread only)."""
    last_read = LastRead()  # the keeper's own: the loop's is the loop's

    def send(heartbeat: Heartbeat, timeout: float) -> float | None:
        raw = client.request("POST", f"/api/cp/nodes/{node_id}/heartbeat", heartbeat.to_json(), timeout=timeout)
        return HeartbeatAnswer.from_json(raw, last_read).node_timeout_seconds  # malformed: ValueError

    return send


class LeaseKeeper:
    """``heartbeat`` makes the bare heartbeat to send (None while the node is not registered), ``interval``
    says the current heartbeat interval; both are called on the keeper's thread."""

    def __init__(self, lease: Lease, send: BareBeat, heartbeat: Callable[[], Heartbeat | None],
                 interval: Callable[[], float]) -> None:
        self.lease = lease
        self.send = send
        self.heartbeat = heartbeat
        self.interval = interval
        self.sent = 0  # bare heartbeats sent by the keeper
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        """Start a thread (each start its own: one stopped before may still be ending its round trip)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does after its round trip in flight, if any: bounded by its timeout)."""
        self._stop.set()

    def check_once(self) -> bool:
        """Send a bare heartbeat if the loop's are late; True if the lease was renewed from it."""
        lease = self.lease
        node_timeout, age = lease.node_timeout, lease.age()
        if node_timeout is None or age is None or age < LATE_INTERVALS * self.interval() or not lease.valid():
            return False  # the loop keeps up, or has the first answer to adopt, or a lapse to sort out
        heartbeat = self.heartbeat()
        if heartbeat is None:
            return False
        sent_at = lease.clock()
        self.sent += 1
        answered_timeout = self.send(heartbeat, heartbeat_timeout(node_timeout))
        return lease.extend(sent_at, answered_timeout or node_timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval() / CHECKS_PER_INTERVAL):
            try:
                if self.check_once() and self._failing:
                    log.info("lease keeper: heartbeats acknowledged again")
                    self._failing = False
            except Exception as err:  # noqa: BLE001 - the keeper must outlive any one failure
                if not self._failing:  # the loop's own heartbeats report an unreachable control plane
                    log.warning("lease keeper: bare heartbeat failed: %r", err)
                    self._failing = True
