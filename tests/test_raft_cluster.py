"""A real 3-process control plane on loopback: leader loss, a paused follower, catch-up after restart."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from cpcluster import ADMIN, Member, Start, start_cluster, start_member, wait_for_leader, wait_until


def tenant_ids(member: Member) -> set[str]:
    body = httpx.get(f"{member.url}/api/cp/tenants?perPage=1000", headers=ADMIN, timeout=5).json()
    return {t["id"] for t in body["items"]}


def create_many(url: str, ids: list[str]) -> None:
    with httpx.Client(headers=ADMIN, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda tid: client.post(f"{url}/api/cp/tenants", json={"id": tid}).status_code, ids))
    assert statuses == [200] * len(ids), statuses


def test_leader_killed_new_leader_keeps_everything(pbfast_process: Start, tmp_path: Path) -> None:
    members = start_cluster(pbfast_process, tmp_path, 3)
    leader = wait_for_leader(members)
    follower = next(m for m in members if m is not leader)
    # Writes may go to any member: a follower's are forwarded to the leader.
    create_many(follower.url, [f"t{i:03d}" for i in range(100)])
    create_many(leader.url, [f"t{i:03d}" for i in range(100, 200)])
    expected = {f"t{i:03d}" for i in range(200)}
    assert tenant_ids(leader) == expected

    assert leader.process is not None
    killed_at = time.monotonic()
    leader.process.stop(signal.SIGKILL)
    survivors = [m for m in members if m is not leader]
    new_leader = wait_for_leader(survivors, timeout=5)
    failover = time.monotonic() - killed_at
    assert failover < 2.0, f"new leader after {failover:.2f}s"
    for member in survivors:
        assert tenant_ids(member) == expected
    # Writes resume on the two survivors.
    create_many(new_leader.url, [f"after-{i}" for i in range(20)])
    expected |= {f"after-{i}" for i in range(20)}

    # The killed member comes back and catches up from the journal plus the leader.
    start_member(pbfast_process, leader, members)
    leader.process.wait_healthy([leader.url])
    wait_until(lambda: tenant_ids(leader) == expected, timeout=15)
    raft = leader.health()
    assert raft is not None and raft["role"] == "follower" and raft["leader"] == new_leader.raft


def test_paused_follower_converges(pbfast_process: Start, tmp_path: Path) -> None:
    members = start_cluster(pbfast_process, tmp_path, 3)
    leader = wait_for_leader(members)
    paused = next(m for m in members if m is not leader)
    assert paused.process is not None and paused.process.proc is not None
    paused.process.proc.send_signal(signal.SIGSTOP)
    try:
        create_many(leader.url, [f"p{i}" for i in range(100)])  # a quorum of two still commits
        httpx.patch(f"{leader.url}/api/cp/tenants/p5", headers=ADMIN, json={"status": "suspended"})
    finally:
        paused.process.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: tenant_ids(paused) == {f"p{i}" for i in range(100)}, timeout=15)
    suspended = httpx.get(f"{paused.url}/api/cp/tenants/p5", headers=ADMIN).json()
    assert suspended["status"] == "suspended"
    leader_view = httpx.get(f"{leader.url}/api/cp/tenants?perPage=1000", headers=ADMIN).json()
    paused_view = httpx.get(f"{paused.url}/api/cp/tenants?perPage=1000", headers=ADMIN).json()
    assert leader_view == paused_view


def test_no_quorum_answers_503_not_500(pbfast_process: Start, tmp_path: Path) -> None:
    members = start_cluster(pbfast_process, tmp_path, 3)
    leader = wait_for_leader(members)
    for member in members:
        if member is not leader:
            assert member.process is not None
            member.process.stop(signal.SIGKILL)
    started = time.monotonic()
    response = httpx.post(f"{leader.url}/api/cp/tenants", json={"id": "lonely"}, headers=ADMIN, timeout=15)
    assert response.status_code == 503, response.text
    assert set(response.json()) == {"status", "message", "data"}
    assert time.monotonic() - started < 8
    assert httpx.get(f"{leader.url}/api/health").status_code == 200
