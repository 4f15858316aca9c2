"""What the benchmarks share: which external tools one needs (wrk, nginx, pocketbase) and what to do when one is
missing; stock PocketBase started with the benchmarks' superuser (:func:`start_pocketbase`); a pbfast tenant
served by one tenant node, reached directly as a gateway reaches it (:func:`node_direct_tenant`); and wrk
scripts that carry headers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cpcluster import ADMIN, CLUSTER_TOKEN, Member, Start, start_cluster
from helpers import PbfastProcess, free_port
from nodetools import start_node
from pbharness import wait_http

__all__ = ["SUPERUSER", "NodeTenant", "StockPocketBase", "headers_script", "needs_tools", "node_direct_tenant",
           "start_pocketbase", "superuser_token"]

SUPERUSER = ("bench@example.com", "bench-password-1")


def needs_tools(*names: str) -> pytest.MarkDecorator:
    """Skip a benchmark whose external tools are missing on a developer's machine; under CI (``CI`` set,
    where ``.ci/run`` installs them) never skip: a missing tool must fail loudly."""
    missing = [name for name in names if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}")]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"),
                              reason=f"needs {', '.join(missing)} (installed by .ci/run)")


def superuser_token(base: str, headers: dict[str, str] | None = None) -> str:
    """The benchmarks' superuser logged in at ``base`` (a PocketBase root or a tenant's)."""
    response = httpx.post(f"{base}/api/collections/_superusers/auth-with-password", headers=headers or {},
                          json={"identity": SUPERUSER[0], "password": SUPERUSER[1]}, timeout=30)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@dataclass(frozen=True, slots=True)
class StockPocketBase:
    """``pocketbase serve`` on a free loopback port, its data dir, and its superuser's token."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    token: str

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def start_pocketbase(data_dir: Path, automigrate: bool = False) -> StockPocketBase:
    """Stock PocketBase on ``data_dir`` with the benchmarks' superuser; the caller stops it."""
    subprocess.run(["pocketbase", "superuser", "upsert", *SUPERUSER, "--dir", str(data_dir)], check=True,
                   capture_output=True)
    port = free_port()
    process = subprocess.Popen(["pocketbase", "serve", "--dir", str(data_dir), "--http", f"127.0.0.1:{port}",
                                *([] if automigrate else ["--automigrate=false"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        return StockPocketBase(process, url, data_dir, superuser_token(url))
    except BaseException:
        process.kill()
        process.wait()
        raise


@dataclass(frozen=True, slots=True)
class NodeTenant:
    """A tenant on one tenant node, with the control plane that placed it. ``url`` is the tenant's root on the
    node; every request to it carries ``forward`` (cluster token and route epoch), as a gateway's do."""

    control_plane: Member
    node: PbfastProcess
    node_url: str
    url: str
    epoch: int
    forward: dict[str, str]
    token: str  # its superuser's, "" when it was created without one
    data_db: Path


def node_direct_tenant(start: Start, directory: Path, node_args: Iterable[str] = (), tenant_id: str = "bench",
                       with_superuser: bool = True) -> NodeTenant:
    """A control plane of one member and a tenant node ``bench-node`` under ``directory``, and a tenant placed
    on that node (with the benchmarks' superuser, logged in, unless ``with_superuser`` is false)."""
    cp = start_cluster(start, directory / "cp", 1)[0]
    node, node_url = start_node(start, "bench-node", f"127.0.0.1:{cp.http_port}", directory / "nodes",
                                tuple(node_args))
    deadline = time.monotonic() + 10
    while not httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]:
        assert time.monotonic() < deadline, "the node never joined"
        time.sleep(0.05)
    body: dict[str, object] = {"id": tenant_id}
    if with_superuser:
        body["superuser"] = {"email": SUPERUSER[0], "password": SUPERUSER[1]}
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json=body)
    assert created.status_code == 200 and created.json()["nodeId"] == "bench-node", created.text
    epoch = int(created.json()["epoch"])
    forward = {"x-pbfast-cluster-token": CLUSTER_TOKEN, "x-pbfast-epoch": str(epoch)}
    url = f"{node_url}/t/{tenant_id}"
    token = superuser_token(url, forward) if with_superuser else ""
    data_db = directory / "nodes" / "bench-node" / "tenants" / tenant_id / "data.db"
    return NodeTenant(cp, node, node_url, url, epoch, forward, token, data_db)


def headers_script(path: Path, headers: dict[str, str], then: Path | None = None) -> Path:
    """A wrk Lua script that sends ``headers`` with every request, followed by the script ``then``."""
    path.write_text("".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
                    + (then.read_text() if then is not None else ""))
    return path
