"""A tenant node's Prometheus metrics (``GET /metrics``), read over HTTP from real processes: a control plane
and a tenant node replicating to moto's S3 server (stopped and restarted to watch the replication lag), and
all-in-one, where the node's metrics are on the control plane listener."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import boto3
import httpx
from moto.server import ThreadedMotoServer

from cpcluster import ADMIN, Start, start_cluster, wait_until
from helpers import free_port
from nodetools import S3_ENV, forwarded, forwarded_ok, scrape, start_node, tenant

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import ADMIN_TOKEN, create_tenant, start_all_in_one  # noqa: E402

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}


def assert_pocketbase_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status


def litestream_pid(node_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name == "litestream" and int(fields[1]) == node_pid:
            return int(entry.name)
    raise AssertionError("no litestream child")


def test_node_metrics_lag_through_an_s3_outage(pbfast_process: Start, tmp_path: Path) -> None:
    s3_port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)  # stopped and restarted below
    s3.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="metrics-test")
    try:
        cp = start_cluster(pbfast_process, tmp_path, 1)[0]
        process, node = start_node(pbfast_process, "node-m", f"127.0.0.1:{cp.http_port}", tmp_path,
                                   ("--max-tenants=1", f"--s3-endpoint={endpoint}", "--s3-bucket=metrics-test"),
                                   S3_ENV)

        # Only with the cluster token; errors in PocketBase's shape.
        assert_pocketbase_error(httpx.get(f"{node}/metrics"), 401)
        assert_pocketbase_error(httpx.get(f"{node}/metrics", headers={"Authorization": "Bearer nope"}), 401)
        assert_pocketbase_error(httpx.get(f"{node}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
                                401)  # a tenant-node process does not know the admin token
        wait_until(lambda: scrape(node)["pbfast_node_lease_valid"] == 1)
        first = scrape(node)
        assert first["pbfast_node_open_tenants"] == 0 and first["pbfast_node_litestream_up"] == 1
        assert first["pbfast_node_replication_lag_seconds"] == 0 and first["pbfast_node_timeout_seconds"] == 5
        assert 0 < first["pbfast_node_lease_remaining_seconds"] <= 2.5

        for body in ({"id": "busy", "superuser": OWNER}, {"id": "capped", "apiRequestsQuota": 3}):
            created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json=body)
            assert created.status_code == 200, created.text
        busy, capped = tenant(cp.url, "busy")["epoch"], tenant(cp.url, "capped")["epoch"]
        token = forwarded_ok(node, "busy", busy, "POST", "/api/collections/_superusers/auth-with-password",
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
        forwarded_ok(node, "busy", busy, "POST", "/api/collections", token,
                     {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "number"}]})
        for i in range(3):
            forwarded_ok(node, "busy", busy, "POST", "/api/collections/notes/records", token, {"n": i})
        # The second tenant evicts the first (--max-tenants=1), then runs into its daily quota of 3.
        statuses = [forwarded(node, "capped", capped, "GET", "/api/health").status_code for _ in range(6)]
        assert statuses.count(200) >= 3 and statuses[-1] == 429, statuses
        forwarded_ok(node, "busy", busy, "GET", "/api/collections/notes/records", token)  # back from disk
        counts = scrape(node)
        assert counts['pbfast_node_requests_total{class="2xx"}'] >= 8
        assert counts['pbfast_node_requests_total{class="4xx"}'] >= 1
        assert counts['pbfast_node_quota_rejections_total{kind="requests"}'] >= 1
        assert counts['pbfast_node_tenant_opens_total{source="new"}'] == 2
        assert counts['pbfast_node_tenant_opens_total{source="disk"}'] >= 1
        assert counts['pbfast_node_tenant_closes_total{reason="evicted"}'] >= 1
        assert counts["pbfast_node_assigned_tenants"] == 2

        def one_open_and_replicating() -> bool:  # the evicted tenant closes in the background
            now = scrape(node)
            return now["pbfast_node_open_tenants"] == now["pbfast_node_replicating_tenants"] == 1

        wait_until(one_open_and_replicating, timeout=5)
        wait_until(lambda: scrape(node)["pbfast_node_replication_lag_seconds"] == 0, timeout=5)

        # S3 down: writes keep working and the lag grows, in /metrics and /api/health alike.
        s3.stop()
        outage = time.monotonic()
        lags = []
        while time.monotonic() - outage < 3.5 or len(lags) < 2:  # a busy Litestream may answer slowly
            forwarded_ok(node, "busy", busy, "POST", "/api/collections/notes/records", token, {"n": 9})
            lags.append(scrape(node)["pbfast_node_replication_lag_seconds"])
            time.sleep(0.2)
        assert lags[-1] >= 2.5 and lags[-1] > lags[0], lags
        health = httpx.get(f"{node}/api/health").json()["data"]["replication"]
        assert health["lagSeconds"] >= lags[-1]

        # S3 back: Litestream ships the backlog and the lag returns to ~0.
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
        s3.start()
        back = time.monotonic()
        wait_until(lambda: scrape(node)["pbfast_node_replication_lag_seconds"] < 0.5, timeout=20, interval=0.2)
        print(f"\n[metrics] lag back to ~0 {time.monotonic() - back:.1f} s after S3 returned")
        assert httpx.get(f"{node}/api/health").json()["data"]["replication"]["lagSeconds"] < 0.5

        # Litestream killed: the node restarts it; the gauge and the counter say so.
        assert process.proc is not None
        os.kill(litestream_pid(process.proc.pid), signal.SIGKILL)
        wait_until(lambda: scrape(node)["pbfast_node_litestream_restarts_total"] == 1, timeout=10)
        wait_until(lambda: scrape(node)["pbfast_node_litestream_up"] == 1, timeout=10)
        forwarded_ok(node, "busy", busy, "POST", "/api/collections/notes/records", token, {"n": 10})
        wait_until(lambda: scrape(node)["pbfast_node_replication_lag_seconds"] == 0, timeout=10)
    finally:
        s3.stop()


def test_all_in_one_serves_node_metrics_on_the_control_plane_listener(pbfast_process: Start, tmp_path: Path
                                                                      ) -> None:
    data_dir = tmp_path / "aio"
    _, cp, gw = start_all_in_one(pbfast_process, data_dir)
    create_tenant(cp, gw, "solo")
    assert httpx.get(f"{gw}/t/solo/api/collections/users/records").status_code == 200
    assert_pocketbase_error(httpx.get(f"{cp}/metrics"), 401)
    cluster_token = (data_dir / "cluster.token").read_text().strip()
    for token in (ADMIN_TOKEN, cluster_token):  # the process knows both
        samples = scrape(cp, token)
        assert samples["pbfast_node_lease_valid"] == 1 and samples["pbfast_node_open_tenants"] == 1
        assert samples['pbfast_node_requests_total{class="2xx"}'] >= 2  # the health probe and the list
        assert samples['pbfast_node_tenant_opens_total{source="new"}'] == 1
    assert httpx.get(f"{cp}/api/health").json()["data"]["raft"]["role"] == "leader"  # the rest is the CP's
    assert httpx.get(f"{cp}/api/cp/nodes", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
