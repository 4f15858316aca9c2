"""Real pbfast processes on loopback for the bad-input tests (issue 11 §3, §5) and the fuzz run.

* :func:`start_all_in_one_rig`: an all-in-one process (Python gateway in front of an in-process node) whose
  tenant ``fixture`` holds a copy of PocketBase's own test data dir (``users`` has MFA on).
* :func:`start_cluster_rig`: a control plane, a tenant node and two gateways (native Rust data path, and
  the Python one) with a fresh tenant ``sec`` that has a superuser; requests can also go to the node
  directly, the way a gateway forwards them (cluster token and route epoch).
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cpcluster import ADMIN, CLUSTER_TOKEN, start_cluster, start_node, wait_until
from helpers import PbfastProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pocketbase"))
from pbharness import SUPERUSER, copy_fixture, create_tenant, start_all_in_one  # noqa: E402

PASSWORD = "password-1234"


@dataclass
class Target:
    """A tenant's API base URL (``.../t/<id>``) and how to send raw bytes to the server behind it."""

    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (cluster token ...)
    superuser: dict[str, str] = field(default_factory=dict)  # the Authorization header of a superuser

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, rest = self.base.removeprefix("http://").partition(":")
        return host, int(rest.split("/")[0])

    @property
    def path_prefix(self) -> str:
        return "/" + self.base.removeprefix("http://").partition("/")[2]

    def request(self, method: str, path: str, *, superuser: bool = False, **kwargs: object) -> httpx.Response:
        headers = {**self.headers, **(self.superuser if superuser else {}), **dict(kwargs.pop("headers", {}) or {})}
        return httpx.request(method, self.base + path, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def raw(self, request_head_and_body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Send bytes as they are (the head's own framing); the answer's status and body."""
        with socket.create_connection(self.host_port, timeout=timeout) as conn:
            try:
                conn.sendall(request_head_and_body)
            except OSError:
                pass  # answered (and closed) before everything was sent
            raw = b""
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    raw += chunk
                    head, sep, body = raw.partition(b"\r\n\r\n")
                    length = _content_length(head)
                    if sep and length is not None and len(body) >= length:
                        break
            except TimeoutError:
                pass
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), raw[:200]
        return int(head.split()[1]), body

    def extra_head(self) -> str:
        return "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def _login(base: str, email: str, password: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    answer = httpx.post(f"{base}/api/collections/_superusers/auth-with-password", headers=headers or {},
                        json={"identity": email, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": answer.json()["token"]}


@dataclass
class AllInOne:
    process: PbfastProcess
    gateway: Target
    data_dir: Path

    @property
    def tenant_db(self) -> Path:
        return self.data_dir / "tenants" / "fixture" / "data.db"


@contextmanager
def start_all_in_one_rig(tmp: Path) -> Iterator[AllInOne]:
    data_dir = tmp / "aio"
    copy_fixture(data_dir / "tenants" / "fixture")  # the node opens it on the tenant's first request
    processes: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"aio-{len(processes)}.log", env or {}).start()
        processes.append(process)
        return process

    try:
        process, cp, gw = start_all_in_one(start, data_dir)
        create_tenant(cp, gw, "fixture")
        base = f"{gw}/t/fixture"
        yield AllInOne(process, Target("all-in-one", base, superuser=_login(base, **_superuser_args())), data_dir)
    finally:
        _stop(processes)


def _superuser_args() -> dict[str, str]:
    return {"email": SUPERUSER["identity"], "password": SUPERUSER["password"]}


@dataclass
class ClusterRig:
    gateway: Target  # through the native data path
    node: Target  # the tenant node itself, as a gateway forwards
    python_gateway: Target  # a gateway forwarding in Python (--gateway-data-path=python)
    processes: list[PbfastProcess]


@contextmanager
def start_cluster_rig(tmp: Path, tenant_id: str = "sec") -> Iterator[ClusterRig]:
    processes: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"cluster-{len(processes)}.log", env or {}).start()
        processes.append(process)
        return process

    try:
        cp = start_cluster(start, tmp, 1)[0]
        _, node_url = start_node(start, "node-a", [cp.url], tmp / "nodes")
        gateways = []
        for data_path in ("native", "python"):
            port = free_port()
            gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                             f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}",
                             f"--gateway-data-path={data_path}"])
            gateways.append(f"http://127.0.0.1:{port}")
            gateway.wait_healthy(gateways[-1:])
        gw, python_gw = gateways
        body = {"id": tenant_id, "superuser": {"email": f"root@{tenant_id}.test", "password": PASSWORD}}
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json=body, timeout=10)
        assert created.status_code == 200, created.text
        wait_until(lambda: httpx.get(f"{gw}/t/{tenant_id}/api/health").status_code == 200, timeout=15)
        epoch = httpx.get(f"{cp.url}/api/cp/tenants/{tenant_id}", headers=ADMIN).json()["epoch"]
        node_headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch)}
        gateway_base, node_base = f"{gw}/t/{tenant_id}", f"{node_url}/t/{tenant_id}"
        try:
            superuser = _login(gateway_base, f"root@{tenant_id}.test", PASSWORD)
        except AssertionError as err:  # the logs say which step of the first superuser's way was missing
            logs = "\n".join(f"--- {p.log_path.name}\n{p.output()[-6000:]}" for p in processes)
            raise AssertionError(f"{err}\n{logs}") from None
        wait_until(lambda: httpx.get(f"{python_gw}/t/{tenant_id}/api/health").status_code == 200, timeout=15)
        yield ClusterRig(Target("native gateway", gateway_base, superuser=superuser),
                         Target("tenant node", node_base, node_headers, superuser),
                         Target("python gateway", f"{python_gw}/t/{tenant_id}", superuser=superuser), processes)
    finally:
        _stop(processes)


def _stop(processes: list[PbfastProcess]) -> None:
    for process in reversed(processes):
        if process.proc is not None and process.proc.poll() is None:
            process.stop(signal.SIGTERM, timeout=5)


def wait_healthy(target: Target, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while target.request("GET", "/api/health").status_code != 200:
        assert time.monotonic() < deadline, f"{target.name} is not healthy"
        time.sleep(0.05)
