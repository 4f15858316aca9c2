"""A loaded machine is not a partition: a heartbeat whose answer is late (a starved control plane) does not cost
the node its lease, because bare heartbeats sent beside it renew it, and its late answer brings nothing back."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any


def test_a_heartbeat_answered_late_neither_costs_the_lease_nor_brings_back_old_assignments(tmp_path: Path) -> None:
    """The control plane answers one heartbeat only after the serving window of its sending: the bare
    heartbeats sent beside it renew the lease meanwhile, and its late answer (alpha still here, as when it
    was sent) does not bring back what the newer ones dropped (alpha moved away)."""
    from pbfast.tenant_node.app import TenantNodeApp  # noqa: PLC0415
    from pbfast.tenant_node.membership import NodeMembership  # noqa: PLC0415

    node_timeout = 2.0  # heartbeats every 0.4 s, fenced 1 s after the last acknowledged one was sent

    class SlowOnceControlPlane:
        def __init__(self) -> None:
            self.heartbeats = 0
            self.release = asyncio.Event()

        async def request(self, method: str, path: str, body: Any = None, timeout: float = 0) -> Any:
            if not path.endswith("/heartbeat"):
                return {}
            self.heartbeats += 1
            if self.heartbeats == 1:
                return {"tenants": {"alpha": {"epoch": 1}}, "deleted": [], "nodeTimeoutSeconds": node_timeout}
            if self.heartbeats == 2:  # answered only when the test says so, with what held when it was sent
                await self.release.wait()
                return {"tenants": {"alpha": {"epoch": 1}}, "deleted": [], "nodeTimeoutSeconds": node_timeout}
            return {"tenants": {}, "deleted": [], "nodeTimeoutSeconds": node_timeout}  # alpha moved away

    async def scenario() -> None:
        node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path)
        control_plane = SlowOnceControlPlane()
        membership = NodeMembership(control_plane, node, "http://node-a", 10)  # type: ignore[arg-type]
        running = asyncio.create_task(membership.run())
        try:
            await asyncio.sleep(0.1)
            assert "alpha" in node.assignments and membership.lease.valid()
            await asyncio.sleep(3 * node_timeout)  # three serving windows with heartbeat 2 unanswered
            assert control_plane.heartbeats >= 4
            assert node.metrics.fences == 0 and membership.lease.valid()
            assert "alpha" not in node.assignments
            control_plane.release.set()
            await asyncio.sleep(0.2)
            assert "alpha" not in node.assignments  # the late answer did not bring it back
            assert node.metrics.fences == 0
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_heartbeat_applied_late_never_moves_the_nodes_last_heartbeat_back() -> None:
    """Two heartbeats of one node in flight (a bare one beside a slow one) may be applied in either order: the
    control plane's clock for the node stays at the newest, as the node's lease does, so it is not marked down early."""
    from pbfast.control_plane.registry import Registry  # noqa: PLC0415

    registry = Registry()
    registry.register_node("n1", "http://127.0.0.1:9/n1", 10, 1.0, _doApply=True)
    registry.heartbeat("n1", 10.0, 0, {}, _doApply=True)  # the newer, bare one first
    registry.heartbeat("n1", 8.0, 0, {}, _doApply=True)  # then the slow one, stamped earlier
    node = registry.nodes["n1"]
    assert node["lastHeartbeatAt"] == 10.0
    assert registry.mark_node_down("n1", 8.0, _doApply=True) == ("ok", False)  # judged by a stale time: not down


def test_an_event_loop_busy_for_longer_than_the_serving_window_does_not_cost_the_lease(tmp_path: Path) -> None:
    """All-in-one: the node's heartbeats go from the event loop to a control plane listening on the same loop.
    With the loop busy (CPU-bound, holding the GIL but for the interpreter's switches) for two and a half
    serving windows, the lease keeper's thread sends bare heartbeats straight into the process's own control
    plane member (Raft, no loop) and keeps the lease renewed: no fence, the control plane saw the node all along."""
    import time  # noqa: PLC0415

    from helpers import free_port  # noqa: PLC0415
    from pbfast.config import Address  # noqa: PLC0415
    from pbfast.control_plane.api import ControlPlaneApi  # noqa: PLC0415
    from pbfast.control_plane.node_client import NodeClient  # noqa: PLC0415
    from pbfast.control_plane.raft import RaftMember  # noqa: PLC0415
    from pbfast.control_plane.routes import RouteFeed  # noqa: PLC0415
    from pbfast.tenant_node.app import TenantNodeApp  # noqa: PLC0415
    from pbfast.tenant_node.lease import SERVE_FRACTION  # noqa: PLC0415
    from pbfast.tenant_node.membership import NodeMembership  # noqa: PLC0415

    node_timeout = 2.0  # heartbeats every 0.4 s, fenced 1 s after the last acknowledged one was sent
    member = RaftMember(Address("127.0.0.1", free_port()), (), tmp_path / "cp", "cluster-token")
    api = ControlPlaneApi(member, RouteFeed(member.registry), NodeClient("cluster-token", {}), node_timeout)
    registry = member.registry

    class OwnControlPlane:
        """The control plane's node handlers as the loop reaches them (its listener is on this loop)."""

        async def request(self, method: str, path: str, body: Any = None, timeout: float = 0) -> Any:
            node_id = path.split("/")[4]
            if method == "PUT":
                _, stored = await member.submit(registry.register_node, node_id, body["address"], body["maxTenants"],
                                                time.time(), body["instanceId"], node_timeout)
                return stored
            await member.submit(registry.heartbeat, node_id, time.time(), body["openTenants"], {}, body["instanceId"])
            return api.assignments_of(node_id).to_json()

    async def scenario() -> None:
        await member.catch_up()
        node = TenantNodeApp("node-a", 10, "cluster-token", tmp_path / "node")
        membership = NodeMembership(OwnControlPlane(), node, "local://node-a", 10,  # type: ignore[arg-type]
                                    beside_loop=lambda heartbeat, timeout: api.bare_heartbeat("node-a", heartbeat,
                                                                                             timeout))
        lease = membership.lease
        running = asyncio.create_task(membership.run())
        try:
            while not lease.valid():  # noqa: ASYNC110 - the lease has no event to wait on
                await asyncio.sleep(0.02)
            busy_from = time.monotonic()
            while time.monotonic() - busy_from < 2.5 * SERVE_FRACTION * node_timeout:  # the loop does nothing else
                sum(range(1000))
            assert lease.valid(), f"lease ran out {lease.clock() - lease.serve_until:.2f} s ago"
            assert lease.renewed_at is not None and lease.renewed_at > busy_from + SERVE_FRACTION * node_timeout
            assert lease.extensions >= 2
            stored = registry.node("node-a")
            assert stored is not None and stored.up and time.time() - stored.last_heartbeat_at < 1.0
            await asyncio.sleep(0.1)  # the lease watch runs
            assert node.metrics.fences == 0
            scraped = node.metrics.render(await node.status.gauges())
            assert f"pbfast_node_lease_keeper_renewals_total {lease.extensions}".encode() in scraped
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        member.close()


def test_the_lease_keeper_renews_only_a_late_but_valid_lease() -> None:
    """The keeper's rule, on a clock of its own: nothing sent while the loop's heartbeats keep up; a bare one sent
    and the lease renewed from its sending when they are late; a lapsed lease never renewed by it (the control plane
    may have re-placed the node's tenants meanwhile: only the loop, adopting the answer, renews it then)."""
    from pbfast.cluster.heartbeat import Heartbeat  # noqa: PLC0415
    from pbfast.tenant_node.lease import Lease  # noqa: PLC0415
    from pbfast.tenant_node.lease_keeper import LeaseKeeper  # noqa: PLC0415

    now = [100.0]
    lease = Lease(clock=lambda: now[0])
    sent: list[float] = []

    def send(heartbeat: Heartbeat, timeout: float) -> float | None:
        sent.append(now[0])
        now[0] += 0.05  # the round trip
        return 5.0

    keeper = LeaseKeeper(lease, send, lambda: Heartbeat(0, {}, [], "instance"), lambda: 1.0)
    assert not keeper.check_once() and sent == []  # no lease yet: the loop's first answer brings it
    lease.renew(100.0, 5.0)
    now[0] = 101.2
    assert not keeper.check_once() and sent == []  # 1.2 intervals: the loop's next one may still come
    now[0] = 101.3
    assert keeper.check_once() and sent == [101.3]
    assert lease.renewed_at == 101.3 and lease.extensions == 1 and lease.valid()
    now[0] = 103.9  # lapsed at 103.8 (the loop stood still, the keeper too)
    assert not keeper.check_once() and sent == [101.3] and not lease.valid()

    def late_answer(heartbeat: Heartbeat, timeout: float) -> float | None:
        now[0] += 1.0  # sent while valid, answered after the lease ran out: not renewed from it
        return 5.0

    lease.renew(103.0, 5.0)  # the loop adopted an answer
    now[0] = 105.0
    keeper.send = late_answer
    assert not keeper.check_once() and lease.renewed_at == 103.0 and not lease.valid()
