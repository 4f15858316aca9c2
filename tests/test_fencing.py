"""Single writer across a partition: a tenant node cut off from the control plane stops serving and
replicating its tenants before the control plane re-places them on another node, and after the partition
heals it serves nothing stale. Real processes: one control plane member, two tenant nodes sharing moto's
S3 server; node A reaches the control plane only through a TCP forwarder the test cuts."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import apsw
import httpx
import pytest

from cpcluster import ADMIN, Start, start_cluster, wait_until
from helpers import moto_s3_server
from nodetools import S3_ENV, Forwarder, forwarded, forwarded_ok, scrape, start_node, tenant
from pbfast.tenant_node.lease import HALT_FRACTION, SERVE_FRACTION, Lease, heartbeat_interval, heartbeat_timeout
from pbfast.tenant_node.replica import ReplicaStore

NODE_TIMEOUT = 4.0  # the node fences at half of it (2 s) and stops replicating by 0.8 of it (3.2 s)
OWNER = {"email": "owner@example.com", "password": "owner-password-1"}


def wall(text: str) -> float:
    """The control plane's ``updatedAt`` (``2026-01-02 03:04:05.678Z``) as Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def replica_ids(endpoint: str, incarnation: str, tmp_path: Path) -> set[str]:
    """The note ids in the tenant's replica in S3 now (restored with the stock litestream CLI)."""
    target = tmp_path / f"replica-{time.monotonic_ns()}.db"
    store = ReplicaStore("fencing-test", endpoint, tmp_path)
    restored = subprocess.run(["litestream", "restore", "-if-replica-exists", "-o", str(target),
                               store.url("shared", incarnation)],
                              env={**store.environment(), **S3_ENV}, capture_output=True, timeout=30)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    if not target.exists():
        return set()
    connection = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM notes")}
    except apsw.SQLError:  # no notes collection yet
        return set()
    finally:
        connection.close()


def note_ids(node: str, epoch: int, token: str) -> set[str]:
    listed = forwarded_ok(node, "shared", epoch, "GET", "/api/collections/notes/records?perPage=500", token,
                          timeout=15)
    return {item["id"] for item in listed.json()["items"]}


def test_lease_deadlines_leave_a_margin_before_the_control_plane_can_re_place() -> None:
    now = [100.0]
    lease = Lease(clock=lambda: now[0])
    assert not lease.valid() and lease.age() is None and lease.remaining() == 0
    lease.renew(100.0, 5.0)  # a heartbeat sent at 100 acknowledged; the control plane stamped it later
    assert lease.serve_until == 102.5 and lease.halt_at == 104.0
    assert (100.0 + 5.0) - lease.halt_at == pytest.approx((1 - HALT_FRACTION) * 5.0) == 1.0
    now[0] = 102.49
    assert lease.valid() and lease.remaining() == pytest.approx(0.01)
    now[0] = 102.5
    assert not lease.valid()
    lease.renew(99.0, 5.0)  # the late answer to an older heartbeat never moves the lease back
    assert lease.renewed_at == 100.0
    assert heartbeat_interval(5.0) == 1.0 and heartbeat_timeout(5.0) == 1.25 and heartbeat_interval(60.0) == 1.0
    for timeout in (0.5, 1.0, 2.0, 5.0, 60.0):
        # A heartbeat sent one interval after the last acknowledged one, whose first attempt hangs for the
        # whole attempt timeout, is still answered (by the next member) before the serving window closes.
        assert heartbeat_interval(timeout) + heartbeat_timeout(timeout) < SERVE_FRACTION * timeout


@pytest.fixture
def s3() -> Iterator[str]:
    with moto_s3_server("fencing-test") as endpoint:
        yield endpoint


def test_partitioned_node_stops_before_its_tenant_is_re_placed(pbfast_process: Start, tmp_path: Path,
                                                                s3: str) -> None:
    cp = start_cluster(pbfast_process, tmp_path, 1, node_timeout=NODE_TIMEOUT)[0]
    forwarder = Forwarder(cp.http_port)
    storage = (f"--s3-endpoint={s3}", "--s3-bucket=fencing-test")
    try:
        _, node_a = start_node(pbfast_process, "node-a", forwarder.address, tmp_path, storage, S3_ENV)
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "shared", "superuser": OWNER})
        assert created.status_code == 200 and created.json()["nodeId"] == "node-a", created.text
        _, node_b = start_node(pbfast_process, "node-b", f"127.0.0.1:{cp.http_port}", tmp_path, storage, S3_ENV)
        epoch_a = created.json()["epoch"]
        token = forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections/_superusers/auth-with-password",
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
        forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections", token,
                     {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "text"}]})

        # A stale client keeps writing to node A through the partition.
        acknowledged: list[tuple[str, float]] = []  # (record id, wall clock of the answer)
        refused: list[httpx.Response] = []
        stop = threading.Event()

        def stale_writer() -> None:
            while not stop.is_set():
                response = forwarded(node_a, "shared", epoch_a, "POST", "/api/collections/notes/records", token,
                                     {"n": "from a"})
                if response.status_code == 200:
                    assert not refused, "node A served again after it had stopped"
                    acknowledged.append((response.json()["id"], time.time()))
                else:
                    refused.append(response)
                time.sleep(0.03)

        writer = threading.Thread(target=stale_writer)
        writer.start()
        try:
            time.sleep(0.5)
            before = scrape(node_a)  # counters are compared with these (a loaded machine may have fenced already)
            forwarder.cut()
            cut_at = time.monotonic()
            wait_until(lambda: refused, timeout=NODE_TIMEOUT)
            fenced_after = time.monotonic() - cut_at
            assert fenced_after <= NODE_TIMEOUT / 2 + 0.3, fenced_after
            answer = refused[0]
            assert answer.status_code == 503, answer.text
            assert set(answer.json()) == {"status", "message", "data"} and answer.json()["status"] == 503
            assert answer.headers["retry-after"] == "1" and answer.headers["x-pbfast-moved"] == "1"
            assert scrape(node_a)["pbfast_node_lease_valid"] == 0

            # The control plane declares A down and re-places the tenant on B, after A's last answer.
            wait_until(lambda: tenant(cp.url, "shared")["nodeId"] == "node-b", timeout=NODE_TIMEOUT + 3)
            moved = tenant(cp.url, "shared")
            placed_after = time.monotonic() - cut_at
            assert moved["epoch"] == epoch_a + 1
            assert acknowledged and acknowledged[-1][1] < wall(moved["updatedAt"])
            print(f"\n[fencing] A refused {fenced_after:.2f} s after the cut; B got the tenant after "
                  f"{placed_after:.2f} s; A acknowledged {len(acknowledged)} writes")

            # B restored everything A acknowledged (A shipped it before letting go) and takes writes.
            epoch_b = moved["epoch"]
            on_b = note_ids(node_b, epoch_b, token)
            assert {rid for rid, _ in acknowledged} <= on_b
            written_on_b = forwarded_ok(node_b, "shared", epoch_b, "POST", "/api/collections/notes/records", token,
                                        {"n": "from b"}).json()["id"]
        finally:
            stop.set()
            writer.join(10)
        assert all(r.status_code == 503 for r in refused)

        # Healed: A renews its lease, serves nothing of its old epoch and keeps no copy of the tenant.
        forwarder.heal()
        wait_until(lambda: scrape(node_a)["pbfast_node_lease_valid"] == 1, timeout=5)
        metrics = scrape(node_a)
        fenced = 'pbfast_node_tenant_closes_total{reason="fenced"}'
        assert metrics["pbfast_node_fences_total"] - before["pbfast_node_fences_total"] == 1
        assert metrics["pbfast_node_assigned_tenants"] == 0
        assert metrics["pbfast_node_replication_halts_total"] == 0  # S3 was reachable: a clean stop
        assert metrics[fenced] - before[fenced] == 1
        stale = forwarded(node_a, "shared", epoch_a, "GET", "/api/collections/notes/records", token)
        assert stale.status_code == 503 and stale.headers["x-pbfast-moved"] == "1", stale.text
        wait_until(lambda: not (tmp_path / "node-a" / "tenants" / "shared").exists(), timeout=5)

        # Moved back to A on purpose: A restores B's state from the replica; nothing of B's was overwritten.
        back = httpx.post(f"{cp.url}/api/cp/tenants/shared/move", headers=ADMIN, json={"nodeId": "node-a"},
                          timeout=30)
        assert back.status_code == 200, back.text
        on_a = note_ids(node_a, back.json()["epoch"], token)
        assert on_a == on_b | {written_on_b}
    finally:
        forwarder.close()


def test_node_cut_off_from_everything_never_writes_the_replica_again(pbfast_process: Start, tmp_path: Path,
                                                                    s3: str) -> None:
    """A full partition: node A loses the control plane and S3 at once, so it cannot ship its last writes.
    It still stops (killing Litestream if need be) before B takes over, and after healing its stale copy
    neither reaches the replica nor is served: B's writes survive a move back to A."""
    cp = start_cluster(pbfast_process, tmp_path, 1, node_timeout=NODE_TIMEOUT)[0]
    to_cp, to_s3 = Forwarder(cp.http_port), Forwarder(int(s3.rsplit(":", 1)[1]))
    try:
        _, node_a = start_node(pbfast_process, "node-a", to_cp.address, tmp_path,
                               (f"--s3-endpoint=http://{to_s3.address}", "--s3-bucket=fencing-test"), S3_ENV)
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "shared", "superuser": OWNER})
        assert created.status_code == 200 and created.json()["nodeId"] == "node-a", created.text
        _, node_b = start_node(pbfast_process, "node-b", f"127.0.0.1:{cp.http_port}", tmp_path,
                               (f"--s3-endpoint={s3}", "--s3-bucket=fencing-test"), S3_ENV)
        epoch_a = created.json()["epoch"]
        token = forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections/_superusers/auth-with-password",
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
        forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections", token,
                     {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "text"}]})
        shipped = forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections/notes/records", token,
                               {"n": "shipped"}).json()["id"]
        wait_until(lambda: shipped in replica_ids(s3, created.json()["incarnation"], tmp_path), timeout=10,
                   interval=0.2)

        before = scrape(node_a)
        to_s3.cut()
        to_cp.cut()
        cut_at = time.monotonic()
        unshipped = forwarded_ok(node_a, "shared", epoch_a, "POST", "/api/collections/notes/records", token,
                                 {"n": "never shipped"}).json()["id"]
        wait_until(lambda: forwarded(node_a, "shared", epoch_a, "GET", "/api/health").status_code == 503,
                   timeout=NODE_TIMEOUT)
        assert time.monotonic() - cut_at <= NODE_TIMEOUT / 2 + 0.3
        wait_until(lambda: tenant(cp.url, "shared")["nodeId"] == "node-b", timeout=NODE_TIMEOUT + 3)
        metrics = scrape(node_a)  # by now A has stopped replicating, cleanly or by killing Litestream
        fenced = 'pbfast_node_tenant_closes_total{reason="fenced"}'
        assert metrics[fenced] - before[fenced] == 1
        assert metrics["pbfast_node_replicating_tenants"] == 0
        halts = metrics["pbfast_node_replication_halts_total"]

        epoch_b = tenant(cp.url, "shared")["epoch"]
        on_b = note_ids(node_b, epoch_b, token)
        assert shipped in on_b and unshipped not in on_b  # A could not ship it: lost with A's disk (RPO)
        written_on_b = forwarded_ok(node_b, "shared", epoch_b, "POST", "/api/collections/notes/records", token,
                                    {"n": "from b"}).json()["id"]

        to_s3.heal()
        to_cp.heal()
        wait_until(lambda: scrape(node_a)["pbfast_node_lease_valid"] == 1, timeout=5)
        assert forwarded(node_a, "shared", epoch_a, "GET", "/api/health").status_code == 503
        # The unshipped copy is kept for the operator, out of service.
        retired = wait_until(lambda: list((tmp_path / "node-a" / "retired").glob("shared-*/data.db")), timeout=5)
        assert not (tmp_path / "node-a" / "tenants" / "shared").exists()
        time.sleep(1.5)  # had A's Litestream still held the tenant, it would ship it now

        back = httpx.post(f"{cp.url}/api/cp/tenants/shared/move", headers=ADMIN, json={"nodeId": "node-a"},
                          timeout=30)
        assert back.status_code == 200, back.text
        on_a = note_ids(node_a, back.json()["epoch"], token)
        assert on_a == on_b | {written_on_b}
        print(f"\n[fencing] full partition: litestream halts {halts:.0f}; retired copy {retired[0].parent.name}")
    finally:
        to_cp.close()
        to_s3.close()
