"""Request ids: the gateway assigns ``X-Request-Id`` (or keeps a usable one from the client), the node logs it
with the lines it writes for that request, and both return it, on each way a request reaches a tenant:
the native data path to a remote node, the native data path handing over to an in-process node
(all-in-one), and the Python data path to a remote node. Real processes on loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cpcluster import wait_until
from helpers import PbfastProcess, free_port

ADMIN_TOKEN = "admin-token-request-ids-0123456789"
CLUSTER_TOKEN = "cluster-token-request-ids-0123456789"
SUPERUSER = {"email": "root@ids.test", "password": "password-1234"}
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x as id FROM c"
NEW_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Way:
    """One way to a tenant: the gateway URL prefix of the tenant, and the processes whose logs it crosses."""

    url: str
    gateway: PbfastProcess
    node: PbfastProcess


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Way]]:
    tmp = tmp_path_factory.mktemp("request-ids")
    started: list[PbfastProcess] = []

    def start(args: list[str], name: str, env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"{name}.log", env or {}).start()
        started.append(process)
        return process

    try:
        cp_port, gw_port = free_port(), free_port()
        aio = start(["serve", f"--data-dir={tmp / 'aio'}", f"--http-addr=127.0.0.1:{cp_port}",
                     f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
                     f"--admin-token={ADMIN_TOKEN}", f"--cluster-token={CLUSTER_TOKEN}", "--gateway-access-log",
                     "--request-time-limit=0.3"], "aio")
        cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
        aio.wait_healthy([cp, gw], timeout=30)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def create(tenant_id: str) -> str:
            created = httpx.post(f"{cp}/api/cp/tenants", headers=admin, timeout=30,
                                 json={"id": tenant_id, "superuser": SUPERUSER})
            assert created.status_code == 200, created.text
            base = f"{gw}/t/{tenant_id}"
            wait_until(lambda: httpx.get(f"{base}/api/health").status_code == 200, timeout=15)
            token = httpx.post(f"{base}/api/collections/_superusers/auth-with-password", timeout=30, json={
                "identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
            view = httpx.post(f"{base}/api/collections", headers={"Authorization": token},
                              json={"name": "loop", "type": "view", "listRule": "", "viewQuery": ENDLESS})
            assert view.status_code == 200, view.text
            return str(created.json()["nodeId"])

        assert create("local") == (tmp / "aio" / "node.id").read_text().strip()
        node_port = free_port()
        node = start(["serve", "--mode=tenant-node", "--node-id=node-2", f"--http-addr=127.0.0.1:{node_port}",
                      f"--control-plane-addrs=127.0.0.1:{cp_port}", f"--cluster-token={CLUSTER_TOKEN}",
                      f"--data-dir={tmp / 'node-2'}", "--request-time-limit=0.3"], "node-2")
        node.wait_healthy([f"http://127.0.0.1:{node_port}"], timeout=30)
        wait_until(lambda: len(httpx.get(f"{cp}/api/cp/nodes", headers=admin).json()["items"]) == 2, timeout=15)
        assert create("remote") == "node-2"
        python_port = free_port()
        python_gw = start(["serve", "--mode=gateway", "--gateway-data-path=python", "--gateway-access-log",
                           f"--http-addr=127.0.0.1:{python_port}", f"--control-plane-addrs=127.0.0.1:{cp_port}",
                           f"--cluster-token={CLUSTER_TOKEN}"], "python-gateway", env={"PB_LOG_FORMAT": "json"})
        python_url = f"http://127.0.0.1:{python_port}"
        python_gw.wait_healthy([python_url], timeout=30)
        wait_until(lambda: httpx.get(f"{python_url}/t/remote/api/health").status_code == 200, timeout=15)
        yield {
            "native to a remote node": Way(f"{gw}/t/remote", aio, node),
            "native to the in-process node": Way(f"{gw}/t/local", aio, aio),
            "python to a remote node": Way(f"{python_url}/t/remote", python_gw, node),
        }
    finally:
        for process in started:
            process.stop()


WAYS = ["native to a remote node", "native to the in-process node", "python to a remote node"]


@pytest.mark.parametrize("way", WAYS)
def test_every_answer_carries_one_request_id(paths: dict[str, Way], way: str) -> None:
    url = paths[way].url
    for target in ("/api/health", "/api/collections/nope/records", "/api/collections/loop/records?perPage=x"):
        answer = httpx.get(url + target)
        ids = answer.headers.get_list("x-request-id")
        assert len(ids) == 1 and NEW_ID.fullmatch(ids[0]), (target, answer.headers)
    first, second = (httpx.get(url + "/api/health").headers["x-request-id"] for _ in range(2))
    assert first != second
    given = "client-id_1.2~" + uuid.uuid4().hex
    assert httpx.get(url + "/api/health", headers={"X-Request-Id": given}).headers.get_list("x-request-id") == [given]
    for unusable in ("a" * 129, "has space", ""):
        ids = httpx.get(url + "/api/health", headers={"X-Request-Id": unusable}).headers.get_list("x-request-id")
        assert len(ids) == 1 and NEW_ID.fullmatch(ids[0]), (unusable, ids)


@pytest.mark.parametrize("way", WAYS)
def test_one_request_is_followed_through_gateway_and_node_logs(paths: dict[str, Way], way: str) -> None:
    """A request the node stops at its time limit: the node's warning (written on a database thread) and the
    gateway's access line both end with the id the client got back."""
    path = paths[way]
    request_id = "trace-" + uuid.uuid4().hex
    answer = httpx.get(path.url + "/api/collections/loop/records", headers={"X-Request-Id": request_id}, timeout=30)
    assert answer.status_code == 400 and answer.headers["x-request-id"] == request_id, answer.text

    def lines_with_id(process: PbfastProcess) -> list[str]:
        return [line for line in process.output().splitlines() if request_id in line]

    def node_warned() -> list[str]:
        return [line for line in lines_with_id(path.node) if "stopped by its time limit" in line]

    warned = wait_until(node_warned, timeout=10)
    assert all(line.endswith(f"request_id={request_id}") for line in warned), warned

    def gateway_logged() -> list[str]:
        return [line for line in lines_with_id(path.gateway) if "GatewayAccess" in line]

    access = wait_until(gateway_logged, timeout=10)
    if way.startswith("python"):  # PB_LOG_FORMAT=json there
        entry = json.loads(access[0])
        assert entry["requestId"] == request_id and entry["component"] == "GatewayAccess"
        assert entry["level"] == "INFO" and " 400 " in entry["message"] and entry["time"].endswith("Z")
    else:
        assert access[0].endswith(f"request_id={request_id}") and " 400 " in access[0], access


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pbfast", "serve", f"--data-dir={tmp_path}"], capture_output=True,
                         text=True, env={**os.environ, "PB_LOG_FORMAT": "xml"}, timeout=30)
    assert run.returncode == 2 and "PB_LOG_FORMAT must be text or json" in run.stderr
