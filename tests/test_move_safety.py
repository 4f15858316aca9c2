"""A planned move never leaves acknowledged writes behind: the source node releases a tenant only once its
final state is confirmed in the replica, and the control plane makes the move only after that release.
Real processes: one control plane member, two tenant nodes, moto's S3 server (stopped and started again)."""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
from moto.server import ThreadedMotoServer

from cpcluster import ADMIN, Start, start_cluster, wait_until
from helpers import free_port
from nodetools import S3_ENV, forwarded_ok, start_node, tenant

BUCKET = "move-safety-test"
OWNER = {"email": "owner@example.com", "password": "owner-password-1"}


def _notes(node: str, epoch: int, token: str) -> set[str]:
    listed = forwarded_ok(node, "mv", epoch, "GET", "/api/collections/notes/records?perPage=500", token,
                          timeout=15)
    return {item["n"] for item in listed.json()["items"]}


def _add(node: str, epoch: int, token: str, text: str) -> None:
    forwarded_ok(node, "mv", epoch, "POST", "/api/collections/notes/records", token, {"n": text})


def test_a_move_waits_until_the_source_has_shipped_everything(pbfast_process: Start, tmp_path: Path) -> None:
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)  # stopped and started again below
    s3.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    try:
        cp = start_cluster(pbfast_process, tmp_path, 1)[0]
        cp_addr = f"127.0.0.1:{cp.http_port}"
        storage = (f"--s3-endpoint={endpoint}", f"--s3-bucket={BUCKET}")
        _, url_a = start_node(pbfast_process, "node-a", cp_addr, tmp_path, storage, S3_ENV)
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "mv", "superuser": OWNER})
        assert created.status_code == 200 and created.json()["nodeId"] == "node-a", created.text
        epoch = created.json()["epoch"]
        _, url_b = start_node(pbfast_process, "node-b", cp_addr, tmp_path, storage, S3_ENV)
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 2)
        token = forwarded_ok(url_a, "mv", epoch, "POST", "/api/collections/_superusers/auth-with-password",
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
        forwarded_ok(url_a, "mv", epoch, "POST", "/api/collections", token,
                     {"name": "notes", "type": "base", "fields": [{"name": "n", "type": "text"}]})
        _add(url_a, epoch, token, "shipped")

        # S3 goes away; a write is acknowledged on A but cannot reach the replica.
        s3.stop()
        _add(url_a, epoch, token, "only-on-a")
        refused = httpx.post(f"{cp.url}/api/cp/tenants/mv/move", headers=ADMIN, json={"nodeId": "node-b"},
                             timeout=90)
        assert refused.status_code == 503, refused.text
        assert set(refused.json()) == {"status", "message", "data"}
        after = tenant(cp.url, "mv")
        assert after["nodeId"] == "node-a" and after["epoch"] == epoch and not after["moving"]
        # A goes on serving the tenant, with everything it acknowledged.
        assert _notes(url_a, epoch, token) == {"shipped", "only-on-a"}

        # S3 is back: the move goes through and B has every acknowledged write.
        s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        s3.start()
        moved = httpx.post(f"{cp.url}/api/cp/tenants/mv/move", headers=ADMIN, json={"nodeId": "node-b"},
                           timeout=90)
        assert moved.status_code == 200, moved.text
        epoch_b = tenant(cp.url, "mv")["epoch"]
        assert epoch_b > epoch
        assert _notes(url_b, epoch_b, token) == {"shipped", "only-on-a"}
    finally:
        s3.stop()
