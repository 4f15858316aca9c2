"""Node identity: nodes started without ``--node-id`` (as the guide's "Running Multi-Node Locally" does) are
distinct nodes, a node keeps its id across restarts, and two processes never act as one node."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from cpcluster import ADMIN, CLUSTER_TOKEN, Start, start_cluster, wait_until
from helpers import PbfastProcess, free_port


def start_anonymous_node(start: Start, cp_url: str, data_dir: Path, node_id: str | None = None,
                         wait: bool = True) -> tuple[PbfastProcess, str]:
    """A tenant node started the guide's way: no ``--node-id`` unless given."""
    port = free_port()
    args = ["serve", "--mode=tenant-node", f"--http-addr=127.0.0.1:{port}",
            f"--control-plane-addrs={cp_url.removeprefix('http://')}", f"--data-dir={data_dir}"]
    if node_id:
        args.append(f"--node-id={node_id}")
    process = start(args, env={"PBFAST_CLUSTER_TOKEN": CLUSTER_TOKEN})
    url = f"http://127.0.0.1:{port}"
    if wait:
        process.wait_healthy([url])
    return process, url


def nodes(cp_url: str) -> list[dict[str, object]]:
    return list(httpx.get(f"{cp_url}/api/cp/nodes", headers=ADMIN).json()["items"])


def test_nodes_without_node_id_are_distinct_and_keep_their_ids(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path / "cp", 1)[0]
    first, first_url = start_anonymous_node(pbfast_process, cp.url, tmp_path / "node1")
    second, second_url = start_anonymous_node(pbfast_process, cp.url, tmp_path / "node2")
    listed = wait_until(lambda: n if len(n := nodes(cp.url)) == 2 else None)
    ids = {str(n["id"]): str(n["address"]) for n in listed}
    assert ids == {(tmp_path / "node1" / "node.id").read_text().strip(): first_url,
                   (tmp_path / "node2" / "node.id").read_text().strip(): second_url}
    # tenants spread over both nodes, each served by exactly the node it is placed on
    placed: dict[str, str] = {}
    for index in range(6):
        created = httpx.post(f"{cp.url}/api/cp/tenants", json={"id": f"t{index}"}, headers=ADMIN)
        assert created.status_code == 200, created.text
        placed[f"t{index}"] = created.json()["nodeId"]
    assert set(placed.values()) == set(ids)
    for tenant_id, node_id in placed.items():
        epoch = httpx.get(f"{cp.url}/api/cp/tenants/{tenant_id}", headers=ADMIN).json()["epoch"]
        for url in (first_url, second_url):
            response = httpx.get(f"{url}/t/{tenant_id}/api/health", timeout=10, headers={
                "x-pbfast-cluster-token": CLUSTER_TOKEN, "x-pbfast-epoch": str(epoch)})
            assert (response.status_code == 200) == (ids[node_id] == url), (tenant_id, url, response.text)
    # a restart keeps the id (and so the node's tenants)
    old_id = (tmp_path / "node1" / "node.id").read_text().strip()
    first.stop()
    first, first_url = start_anonymous_node(pbfast_process, cp.url, tmp_path / "node1")
    assert (tmp_path / "node1" / "node.id").read_text().strip() == old_id
    wait_until(lambda: any(n["id"] == old_id and n["address"] == first_url for n in nodes(cp.url)))
    assert len(nodes(cp.url)) == 2


def test_a_second_process_with_the_same_node_id_waits(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path / "cp", 1, node_timeout=2.0)[0]
    first, first_url = start_anonymous_node(pbfast_process, cp.url, tmp_path / "a", node_id="same")
    wait_until(lambda: nodes(cp.url))
    created = httpx.post(f"{cp.url}/api/cp/tenants", json={"id": "acme"}, headers=ADMIN)
    assert created.status_code == 200 and created.json()["nodeId"] == "same"
    epoch = created.json()["epoch"]
    second, second_url = start_anonymous_node(pbfast_process, cp.url, tmp_path / "b", node_id="same")
    forwarded = {"x-pbfast-cluster-token": CLUSTER_TOKEN, "x-pbfast-epoch": str(epoch)}
    # while the first is alive the second is refused: the control plane keeps the first, the second serves
    # nothing and says why
    wait_until(lambda: "held by another running process" in second.output(), timeout=10)
    assert [(n["id"], n["address"]) for n in nodes(cp.url)] == [("same", first_url)]
    assert httpx.get(f"{first_url}/t/acme/api/health", headers=forwarded, timeout=10).status_code == 200
    assert httpx.get(f"{second_url}/t/acme/api/health", headers=forwarded, timeout=10).status_code == 503
    # once the first is gone past the node timeout, the second takes the id over
    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    wait_until(lambda: [n["address"] for n in nodes(cp.url)] == [second_url], timeout=20)
    tenant = httpx.get(f"{cp.url}/api/cp/tenants/acme", headers=ADMIN).json()
    forwarded["x-pbfast-epoch"] = str(tenant["epoch"])
    wait_until(lambda: httpx.get(f"{second_url}/t/acme/api/health", headers=forwarded,
                                 timeout=10).status_code == 200, timeout=20)


def test_two_processes_never_share_a_data_dir(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path / "cp", 1)[0]
    start_anonymous_node(pbfast_process, cp.url, tmp_path / "shared")
    second, _ = start_anonymous_node(pbfast_process, cp.url, tmp_path / "shared", wait=False)
    assert second.proc is not None and second.proc.wait(30) != 0
    assert "another pbfast process" in second.output() and "uses the data dir" in second.output()
