"""The control plane API on a one-member cluster: tenants, validation, auth, nodes, routes, restarts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cpcluster import ADMIN, CLUSTER, Member, Start, start_cluster, start_member, start_node, wait_until

TENANT_KEYS = {"id", "status", "nodeId", "epoch", "moving", "storageQuotaMB", "apiRequestsQuota", "requestTimeLimitMs", "durability",
               "incarnation", "restoredFrom", "incarnations", "usage", "createdAt", "updatedAt"}


@pytest.fixture
def cp(pbfast_process: Start, tmp_path: Path) -> Member:
    return start_cluster(pbfast_process, tmp_path, 1, node_timeout=1.0)[0]


def create(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/api/cp/tenants", json=body, headers=ADMIN)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status
    return body


def test_health_reports_raft(cp: Member) -> None:
    body = httpx.get(cp.url + "/api/health").json()
    assert body["message"] == "API is healthy." and body["code"] == 200
    raft = body["data"]["raft"]
    assert raft["role"] == "leader" and raft["leader"] == cp.raft
    assert raft["term"] >= 1 and raft["commitIndex"] >= 0


def test_tenant_crud(cp: Member) -> None:
    response = create(cp.url, {"id": "tenant-123", "storageQuotaMB": 500, "apiRequestsQuota": 1000,
                                "superuser": {"email": "Admin@Example.com", "password": "1234567890"}})
    assert response.status_code == 200, response.text
    tenant = response.json()
    assert set(tenant) == TENANT_KEYS
    assert tenant["id"] == "tenant-123" and tenant["status"] == "active" and tenant["nodeId"] is None
    assert tenant["storageQuotaMB"] == 500 and tenant["apiRequestsQuota"] == 1000
    assert tenant["usage"]["apiRequests"] == 0 and tenant["usage"]["storageMB"] == 0
    assert "superuser" not in json.dumps(tenant) and "1234567890" not in json.dumps(tenant)

    assert httpx.get(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN).json() == tenant
    # The guide's example, as written (plus the token).
    response = httpx.patch(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN,
                           content='{"storageQuotaMB":1000,"apiRequestsQuota":100000}')
    assert response.status_code == 200, response.text
    assert response.json()["storageQuotaMB"] == 1000 and response.json()["apiRequestsQuota"] == 100000
    response = httpx.patch(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN,
                           json={"status": "suspended", "apiRequestsQuota": None})
    assert response.json()["status"] == "suspended" and response.json()["apiRequestsQuota"] is None

    assert_error(create(cp.url, {"id": "tenant-123"}), 409)
    assert httpx.delete(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN).status_code == 204
    assert_error(httpx.get(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN), 404)
    assert_error(httpx.delete(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN), 404)
    assert_error(httpx.patch(f"{cp.url}/api/cp/tenants/tenant-123", headers=ADMIN, json={}), 404)


def test_list_paging_and_filters(cp: Member) -> None:
    for i in range(7):
        assert create(cp.url, {"id": f"t{i}"}).status_code == 200
    httpx.patch(f"{cp.url}/api/cp/tenants/t3", headers=ADMIN, json={"status": "suspended"})
    page = httpx.get(f"{cp.url}/api/cp/tenants", params={"perPage": 3, "page": 2}, headers=ADMIN).json()
    assert (page["page"], page["perPage"], page["totalItems"], page["totalPages"]) == (2, 3, 7, 3)
    assert [t["id"] for t in page["items"]] == ["t3", "t4", "t5"]
    suspended = httpx.get(f"{cp.url}/api/cp/tenants?status=suspended", headers=ADMIN).json()
    assert [t["id"] for t in suspended["items"]] == ["t3"]
    assert httpx.get(f"{cp.url}/api/cp/tenants?nodeId=none", headers=ADMIN).json()["totalItems"] == 0
    assert_error(httpx.get(f"{cp.url}/api/cp/tenants?page=abc", headers=ADMIN), 400)


@pytest.mark.parametrize("body", [
    {"id": "../etc"}, {"id": "Acme"}, {"id": "x" * 64}, {"id": ""}, {}, {"id": 5}, {"id": "a_b"},
    {"id": "ok", "storageQuotaMB": -1}, {"id": "ok", "storageQuotaMB": "10"}, {"id": "ok", "storageQuotaMB": 1.5},
    {"id": "ok", "apiRequestsQuota": True}, {"id": "ok", "unknown": 1}, {"id": "ok", "durability": "eventually"},
    {"id": "ok", "superuser": {"email": "nope", "password": "1234567890"}},
    {"id": "ok", "superuser": {"email": "a@b.co", "password": "short"}},
    {"id": "ok", "superuser": "admin"},
])
def test_create_rejects_bad_input_and_stores_nothing(cp: Member, body: dict[str, Any]) -> None:
    error = assert_error(create(cp.url, body), 400)
    assert error["data"], error
    for field_error in error["data"].values():
        assert "code" in field_error or all("code" in v for v in field_error.values())
    assert httpx.get(f"{cp.url}/api/cp/tenants", headers=ADMIN).json()["totalItems"] == 0


def test_malformed_and_huge_bodies(cp: Member) -> None:
    for raw in (b"{", b"[1,2]", b'"id"', b"\xff\xfe", b"null"):
        assert_error(httpx.post(f"{cp.url}/api/cp/tenants", content=raw, headers=ADMIN), 400)
    huge = b'{"id":"big","pad":"' + b"x" * (2 << 20) + b'"}'
    assert_error(httpx.post(f"{cp.url}/api/cp/tenants", content=huge, headers=ADMIN), 413)
    assert_error(httpx.patch(f"{cp.url}/api/cp/tenants/x", content=b"{", headers=ADMIN), 404)
    assert httpx.get(f"{cp.url}/api/health").status_code == 200


def test_tokens_are_required_and_scoped(cp: Member) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert_error(httpx.get(f"{cp.url}/api/cp/tenants", headers=headers), 401)
        assert_error(httpx.get(f"{cp.url}/api/cp/no-such-thing", headers=headers), 401)
    # The cluster token is for nodes and gateways, not for operators.
    assert_error(httpx.get(f"{cp.url}/api/cp/tenants", headers=CLUSTER), 403)
    assert_error(httpx.put(f"{cp.url}/api/cp/nodes/n1", headers=ADMIN,
                           json={"address": "http://127.0.0.1:1", "maxTenants": 1}), 403)
    assert httpx.get(f"{cp.url}/api/cp/routes", headers=CLUSTER).status_code == 200
    assert_error(httpx.get(f"{cp.url}/api/cp/no-such-thing", headers=ADMIN), 404)
    assert_error(httpx.put(f"{cp.url}/api/cp/tenants", headers=ADMIN), 405)


def test_node_registration_validation(cp: Member) -> None:
    for body in ({"address": "ftp://x", "maxTenants": 1}, {"address": "http://127.0.0.1:1", "maxTenants": 0},
                 {"address": "http://127.0.0.1:1"}, {"address": "http://127.0.0.1:1", "maxTenants": 1, "x": 1}):
        assert_error(httpx.put(f"{cp.url}/api/cp/nodes/n1", headers=CLUSTER, json=body), 400)
    assert_error(httpx.put(f"{cp.url}/api/cp/nodes/Bad_Id", headers=CLUSTER,
                           json={"address": "http://127.0.0.1:1", "maxTenants": 1}), 400)
    assert_error(httpx.post(f"{cp.url}/api/cp/nodes/ghost/heartbeat", headers=CLUSTER, json={}), 404)
    assert httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json() == {"items": []}


def test_one_member_restart_keeps_everything(pbfast_process: Start, tmp_path: Path) -> None:
    members = start_cluster(pbfast_process, tmp_path, 1)
    member = members[0]
    for i in range(30):
        assert create(member.url, {"id": f"keep-{i}", "storageQuotaMB": i}).status_code == 200
    httpx.patch(f"{member.url}/api/cp/tenants/keep-7", headers=ADMIN, json={"status": "suspended"})
    before = httpx.get(f"{member.url}/api/cp/tenants?perPage=100", headers=ADMIN).json()
    assert member.process is not None
    member.process.stop()
    start_member(pbfast_process, member, members)
    member.process.wait_healthy([member.url])
    after = wait_until(lambda: (r := httpx.get(f"{member.url}/api/cp/tenants?perPage=100", headers=ADMIN).json())
                       ["totalItems"] == 30 and r)
    assert after == before
    # kill -9 loses nothing that was acknowledged either.
    assert create(member.url, {"id": "after-restart"}).status_code == 200
    import signal
    member.process.stop(signal.SIGKILL)
    start_member(pbfast_process, member, members)
    member.process.wait_healthy([member.url])
    wait_until(lambda: httpx.get(f"{member.url}/api/cp/tenants/after-restart", headers=ADMIN).status_code == 200)
    assert httpx.get(f"{member.url}/api/cp/tenants", headers=ADMIN).json()["totalItems"] == 31


def test_nodes_placement_failover_and_move(pbfast_process: Start, tmp_path: Path, cp: Member) -> None:
    node_a, _ = start_node(pbfast_process, "node-a", [cp.url], tmp_path)
    node_b, url_b = start_node(pbfast_process, "node-b", [cp.url], tmp_path)
    wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 2)
    for i in range(10):
        assert create(cp.url, {"id": f"p{i}"}).status_code == 200
    tenants = httpx.get(f"{cp.url}/api/cp/tenants?perPage=100", headers=ADMIN).json()["items"]
    placed = {t["id"]: t["nodeId"] for t in tenants}
    assert sorted(placed.values()).count("node-a") == 5 and sorted(placed.values()).count("node-b") == 5
    nodes = {n["id"]: n for n in httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]}
    assert nodes["node-a"]["status"] == "up" and nodes["node-a"]["assignedTenants"] == 5
    assert nodes["node-b"]["address"] == url_b

    # Move one tenant from a to b: the epoch fences the old node.
    on_a = next(tid for tid, node in placed.items() if node == "node-a")
    before = httpx.get(f"{cp.url}/api/cp/tenants/{on_a}", headers=ADMIN).json()
    moved = httpx.post(f"{cp.url}/api/cp/tenants/{on_a}/move", headers=ADMIN, json={"nodeId": "node-b"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["nodeId"] == "node-b" and moved.json()["epoch"] == before["epoch"] + 1
    assert moved.json()["moving"] is None
    assert_error(httpx.post(f"{cp.url}/api/cp/tenants/{on_a}/move", headers=ADMIN, json={"nodeId": "nope"}), 400)

    # node-a dies: after the timeout it is down and its tenants live on node-b.
    node_a.stop(9)
    started = time.monotonic()
    wait_until(lambda: {n["id"]: n["status"] for n in httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN)
                        .json()["items"]}["node-a"] == "down", timeout=10)
    wait_until(lambda: all(t["nodeId"] == "node-b" for t in httpx.get(
        f"{cp.url}/api/cp/tenants?perPage=100", headers=ADMIN).json()["items"]), timeout=5)
    assert time.monotonic() - started < 5
    assert_error(httpx.post(f"{cp.url}/api/cp/tenants/p0/move", headers=ADMIN, json={"nodeId": "node-a"}), 409)
    assert_error(httpx.delete(f"{cp.url}/api/cp/nodes/node-b", headers=ADMIN), 409)
    assert httpx.delete(f"{cp.url}/api/cp/nodes/node-a", headers=ADMIN).status_code == 204
    del node_b


def test_usage_is_reported_by_heartbeats(cp: Member) -> None:
    register = httpx.put(f"{cp.url}/api/cp/nodes/hb", headers=CLUSTER,
                         json={"address": "http://127.0.0.1:9", "maxTenants": 10})
    assert register.status_code == 200
    assert create(cp.url, {"id": "counted"}).json()["nodeId"] == "hb"
    day = int(time.time()) // 86400 * 86400
    for _ in range(3):
        beat = httpx.post(f"{cp.url}/api/cp/nodes/hb/heartbeat", headers=CLUSTER, json={
            "openTenants": 1, "usage": {"counted": {"apiRequests": 5, "storageBytes": 3 << 20, "periodStart": day}}})
        assert beat.status_code == 200
    assignments = beat.json()
    assert assignments["tenants"]["counted"]["epoch"] == 1
    usage = httpx.get(f"{cp.url}/api/cp/tenants/counted", headers=ADMIN).json()["usage"]
    assert usage["apiRequests"] == 15 and usage["storageMB"] == 3.0
    assert (usage["dbTimeLimited"], usage["dbQueueRejected"], usage["dbWaitSeconds"]) == (0, 0, 0)
    # the database counters (sent by nodes that have them) add up within the day, like requests
    for _ in range(2):
        beat = httpx.post(f"{cp.url}/api/cp/nodes/hb/heartbeat", headers=CLUSTER, json={
            "openTenants": 1, "usage": {"counted": {"apiRequests": 1, "storageBytes": 3 << 20, "periodStart": day,
                                                    "dbTimeLimited": 2, "dbQueueRejected": 3, "dbWaitMs": 1500}}})
        assert beat.status_code == 200
    usage = httpx.get(f"{cp.url}/api/cp/tenants/counted", headers=ADMIN).json()["usage"]
    assert (usage["apiRequests"], usage["dbTimeLimited"], usage["dbQueueRejected"], usage["dbWaitSeconds"]) == \
        (17, 4, 6, 3.0)
    # a new day starts every counter again
    beat = httpx.post(f"{cp.url}/api/cp/nodes/hb/heartbeat", headers=CLUSTER, json={
        "openTenants": 1, "usage": {"counted": {"apiRequests": 1, "storageBytes": 3 << 20, "periodStart": day + 86400,
                                                "dbTimeLimited": 1}}})
    usage = httpx.get(f"{cp.url}/api/cp/tenants/counted", headers=ADMIN).json()["usage"]
    assert (usage["apiRequests"], usage["dbTimeLimited"], usage["dbQueueRejected"]) == (1, 1, 0)
    bad = httpx.post(f"{cp.url}/api/cp/nodes/hb/heartbeat", headers=CLUSTER,
                     json={"usage": {"counted": {"apiRequests": -1, "storageBytes": 0, "periodStart": day}}})
    assert_error(bad, 400)
    bad = httpx.post(f"{cp.url}/api/cp/nodes/hb/heartbeat", headers=CLUSTER, json={
        "usage": {"counted": {"apiRequests": 1, "storageBytes": 0, "periodStart": day, "dbWaitMs": "x"}}})
    assert_error(bad, 400)


@pytest.mark.exclusive
def test_route_watch_sees_changes_fast(cp: Member) -> None:
    httpx.put(f"{cp.url}/api/cp/nodes/rw", headers=CLUSTER, json={"address": "http://127.0.0.1:9", "maxTenants": 9})
    table = httpx.get(f"{cp.url}/api/cp/routes", headers=CLUSTER).json()
    seen: dict[str, float] = {}

    def watch() -> None:
        version = table["version"]
        with httpx.Client(headers=CLUSTER, timeout=30) as client:
            while len(seen) < 5:
                answer = client.get(f"{cp.url}/api/cp/routes", params={"since": version, "timeout": 10}).json()
                version = answer["version"]
                for route in answer["routes"]:
                    seen.setdefault(route["tenantId"], time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.2)
    created: dict[str, float] = {}
    for i in range(5):
        assert create(cp.url, {"id": f"route-{i}"}).status_code == 200
        created[f"route-{i}"] = time.monotonic()
        time.sleep(0.05)
    watcher.join(15)
    lags = [seen[tid] - created[tid] for tid in created]
    assert max(lags) < 0.5, lags
    route = next(r for r in httpx.get(f"{cp.url}/api/cp/routes", headers=CLUSTER).json()["routes"]
                 if r["tenantId"] == "route-0")
    assert route == {"tenantId": "route-0", "nodeId": "rw", "address": "http://127.0.0.1:9", "status": "active",
                     "epoch": 1}


def test_deleted_id_is_reserved_until_retention_ends(pbfast_process: Start, tmp_path: Path) -> None:
    from cpcluster import make_members

    member = make_members(tmp_path, 1)[0]
    start_member(pbfast_process, member, [member], extra=("--delete-retention-hours=0.0005",))  # 1.8 s
    assert member.process is not None
    member.process.wait_healthy([member.url])
    assert create(member.url, {"id": "phoenix"}).status_code == 200
    assert httpx.delete(f"{member.url}/api/cp/tenants/phoenix", headers=ADMIN).status_code == 204
    reserved = assert_error(create(member.url, {"id": "phoenix"}), 409)
    assert "deleted" in reserved["message"]
    wait_until(lambda: create(member.url, {"id": "phoenix"}).status_code == 200, timeout=10, interval=0.3)
