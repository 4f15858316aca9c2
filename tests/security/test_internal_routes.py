"""Internal routes answer only with the cluster (or admin) token, however the path is spelled.

Issue 11 §1: the tenant node checked the token only for paths starting with ``/api/node/`` while its router
stripped repeated slashes, so ``//api/node/tenants/beta/data`` exported a tenant's database without the
token (``%2f`` likewise: granian decodes it to ``/``). Real processes on loopback: a control plane, a tenant
node and the native gateway (cluster mode), and an all-in-one process. Requests are sent byte for byte on a
raw socket (httpx would remove ``.`` and ``..`` segments).

Every internal route of the node, the control plane and the gateway is tried under many spellings without
a token and must answer 401 or 404 (PocketBase-shaped); the issue's three reproductions (export, superuser
upsert then login through the gateway, release) run end to end.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bcrypt
import httpx
import orjson
import pytest

from pbfast.pocketbase.apis.front import clean_path

from cpcluster import ADMIN, ADMIN_TOKEN, CLUSTER_TOKEN, Member, start_cluster, start_node, wait_until
from helpers import PbfastProcess, free_port

PASSWORD = "password-1234"
SQLITE_MAGIC = b"SQLite format 3\x00"
SECRET = "the launch codes"
CLUSTER_BEARER = {"Authorization": f"Bearer {CLUSTER_TOKEN}"}

# Every route of a tenant node except the public GET /api/health, with a sample path.
NODE_ROUTES = [
    ("GET", "/api/node/tenants/ghost/data"),
    ("PUT", "/api/node/tenants/ghost/data"),
    ("PUT", "/api/node/tenants/ghost/superuser"),
    ("POST", "/api/node/tenants/ghost/release"),
    ("POST", "/api/node/tenants/ghost/restore-check"),
    ("GET", "/metrics"),
]
# Every route of a control plane except the public GET /api/health.
CP_ROUTES = [
    ("POST", "/api/cp/tenants"),
    ("GET", "/api/cp/tenants"),
    ("GET", "/api/cp/tenants/ghost"),
    ("PATCH", "/api/cp/tenants/ghost"),
    ("DELETE", "/api/cp/tenants/ghost"),
    ("POST", "/api/cp/tenants/ghost/move"),
    ("POST", "/api/cp/tenants/ghost/restore"),
    ("PUT", "/api/cp/tenants/ghost/superusers"),
    ("PUT", "/api/cp/tenants/ghost/data"),
    ("GET", "/api/cp/tenants/ghost/data"),
    ("GET", "/api/cp/nodes"),
    ("PUT", "/api/cp/nodes/ghost"),
    ("DELETE", "/api/cp/nodes/ghost"),
    ("POST", "/api/cp/nodes/ghost/heartbeat"),
    ("GET", "/api/cp/routes"),
    ("GET", "/api/cp/openapi.json"),
]


def spellings(path: str) -> list[str]:
    """``path`` and other spellings a lenient parser might read as it: repeated slashes, dot segments,
    encoded slashes and dots, trailing slashes, other case, absolute form."""
    first, _, rest = path[1:].partition("/")
    return [
        path,
        "/" + path,
        "//" + path,
        "/%2f" + path[1:],
        "/%2F" + path[1:],
        path.replace("/", "%2f").replace("%2f", "/", 1),
        f"/{first}//{rest}",
        f"/{first}/%2F{rest}",
        "/./" + path[1:],
        f"/{first}/./{rest}",
        "/%2e/" + path[1:],
        f"/x/../{path[1:]}",
        f"/x/%2e%2e/{path[1:]}",
        f"/{first}/../{first}/{rest}",
        f"/{first}/..%2f{first}/{rest}",
        path + "/",
        path + "//",
        path + "/.",
        path + "/..",
        path + "%2f",
        path + "%00",
        path.upper(),
        f"/{first.upper()}/{rest}",
        path + "?x=1",
        "http://127.0.0.1" + path,
    ]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def raw(base_url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
        timeout: float = 10.0) -> Answer:
    """One HTTP/1.1 request with ``target`` sent byte for byte; the whole answer."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    sent = {"host": f"{host}:{port}", "connection": "close", "content-length": str(len(body))}
    sent.update({name.lower(): value for name, value in (headers or {}).items()})
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in sent.items())]
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, content = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    if answer_headers.get("transfer-encoding") == "chunked":
        content = _dechunk(content)
    return Answer(int(status_line.split()[1]), answer_headers, content)


def assert_refused(base_url: str, method: str, target: str, headers: dict[str, str] | None = None) -> Answer:
    """Without a valid token: 401 or 404, PocketBase-shaped, and never a database."""
    answer = raw(base_url, method, target, headers, b'{"epoch":1}' if method in ("POST", "PUT") else b"")
    assert answer.status in (401, 404), (method, target, answer.status, answer.body[:200])
    assert SQLITE_MAGIC not in answer.body
    error = answer.json()
    assert set(error) == {"status", "message", "data"} and error["status"] == answer.status, (target, error)
    return answer


@dataclass
class Cluster:
    cp: Member
    node: str
    gateway: str

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.cp.url}/api/cp/tenants/{tenant_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("internal-routes")
    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"pbfast-{len(started)}.log", env or {}).start()
        started.append(process)
        return process

    try:
        cp = start_cluster(start, tmp, 1, node_timeout=60)[0]
        _, node = start_node(start, "node-a", [cp.url], tmp / "nodes")
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 1)
        gw_port = free_port()
        gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{gw_port}",
                         f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}",
                         "--base-domain=pb.test"])
        gw = f"http://127.0.0.1:{gw_port}"
        gateway.wait_healthy([gw])
        yield Cluster(cp, node, gw)
    finally:
        for process in started:
            process.stop()


def superuser_token(gateway: str, tenant_id: str, email: str, password: str) -> str:
    login = httpx.post(f"{gateway}/t/{tenant_id}/api/collections/_superusers/auth-with-password",
                       json={"identity": email, "password": password}, timeout=10)
    assert login.status_code == 200, login.text
    return str(login.json()["token"])


def create_tenant_with_secret(cluster: Cluster, tenant_id: str) -> str:
    """A tenant with a superuser and a superuser-only collection holding :data:`SECRET`; its owner's token."""
    email = f"owner@{tenant_id}.test"
    created = httpx.post(f"{cluster.cp.url}/api/cp/tenants", headers=ADMIN, timeout=10,
                         json={"id": tenant_id, "superuser": {"email": email, "password": PASSWORD}})
    assert created.status_code == 200, created.text
    wait_until(lambda: httpx.get(f"{cluster.gateway}/t/{tenant_id}/api/health").status_code == 200, timeout=15)
    token = superuser_token(cluster.gateway, tenant_id, email, PASSWORD)
    owner = {"Authorization": token}
    collection = httpx.post(f"{cluster.gateway}/t/{tenant_id}/api/collections", headers=owner, timeout=10, json={
        "name": "secrets", "type": "base", "fields": [{"name": "text", "type": "text"}]})  # rules null: superusers only
    assert collection.status_code == 200, collection.text
    record = httpx.post(f"{cluster.gateway}/t/{tenant_id}/api/collections/secrets/records", headers=owner,
                        json={"text": SECRET}, timeout=10)
    assert record.status_code == 200, record.text
    return token


# ---- the node ------------------------------------------------------------------------------------------


def test_node_internal_routes_refuse_every_spelling_without_the_cluster_token(cluster: Cluster) -> None:
    for method, path in NODE_ROUTES:
        for target in spellings(path):
            assert_refused(cluster.node, method, target)
            assert_refused(cluster.node, method, target, {"Authorization": "Bearer not-the-cluster-token"})
    # The gateway's header authenticates forwarded tenant requests (/t/...) only, never an internal route.
    for method, path in NODE_ROUTES:
        for target in (path, "/" + path):
            assert_refused(cluster.node, method, target, {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN})


def test_node_refuses_unknown_paths_and_methods_without_the_token(cluster: Cluster) -> None:
    """Deny by default: only GET /api/health is public; a stranger cannot even tell routes apart."""
    for method, target in [("GET", "/"), ("GET", "/no/such/route"), ("DELETE", "/api/node/tenants/ghost/data"),
                           ("POST", "/api/health"), ("GET", "//api/health"), ("GET", "/api/health/"),
                           ("GET", "/t"), ("GET", "//t/ghost/api/health"), ("GET", "/t/ghost/api/health")]:
        assert raw(cluster.node, method, target).status == 401, target
    assert raw(cluster.node, "GET", "/api/health").status == 200
    assert raw(cluster.node, "HEAD", "/api/health").status == 200
    # With the token a wrong spelling is simply not a route.
    for target in ("//api/node/tenants/ghost/data", "/api/node/tenants/ghost/data/", "/api/node/./tenants/ghost/data"):
        assert raw(cluster.node, "GET", target, CLUSTER_BEARER).status == 404, target
    assert raw(cluster.node, "GET", "/metrics", CLUSTER_BEARER).status == 200


def test_export_needs_the_cluster_token_whatever_the_spelling(cluster: Cluster) -> None:
    """Reproduction 1: ``GET //api/node/tenants/beta/data`` answered 200 and beta's whole database."""
    create_tenant_with_secret(cluster, "beta")
    for target in ("//api/node/tenants/beta/data", "/%2fapi/node/tenants/beta/data",
                   "/%2Fapi/node/tenants/beta/data", "/api/node/tenants/beta/data"):
        assert_refused(cluster.node, "GET", target)
    # The route itself works, for the control plane: the refusals above are not a broken route.
    exported = raw(cluster.node, "GET", "/api/node/tenants/beta/data", CLUSTER_BEARER)
    assert exported.status == 200 and exported.body.startswith(SQLITE_MAGIC) and SECRET.encode() in exported.body


def test_superuser_upsert_needs_the_cluster_token(cluster: Cluster) -> None:
    """Reproduction 2: ``PUT //api/node/tenants/gamma/superuser`` made an attacker gamma's superuser, who then
    logged in through the gateway and read superuser-only records."""
    owner = create_tenant_with_secret(cluster, "gamma")
    evil = {"email": "evil@x.test", "passwordHash": bcrypt.hashpw(b"evil-password-1", bcrypt.gensalt(4)).decode()}
    for target in ("//api/node/tenants/gamma/superuser", "/%2fapi/node/tenants/gamma/superuser",
                   "/api/node/tenants/gamma/superuser/"):
        answer = raw(cluster.node, "PUT", target, body=orjson.dumps(evil))
        assert answer.status in (401, 404), (target, answer.status, answer.body)
    login = httpx.post(f"{cluster.gateway}/t/gamma/api/collections/_superusers/auth-with-password",
                       json={"identity": "evil@x.test", "password": "evil-password-1"}, timeout=10)
    assert login.status_code == 400, login.text
    assert httpx.get(f"{cluster.gateway}/t/gamma/api/collections/secrets/records").status_code in (403, 404)
    listed = httpx.get(f"{cluster.gateway}/t/gamma/api/collections/secrets/records", headers={"Authorization": owner})
    assert listed.status_code == 200 and [item["text"] for item in listed.json()["items"]] == [SECRET]


def test_release_needs_the_cluster_token(cluster: Cluster) -> None:
    """Reproduction 3: ``POST //api/node/tenants/delta/release`` made delta answer 503 "has moved" and the
    node drop its copy while the control plane still listed it active there."""
    create_tenant_with_secret(cluster, "delta")
    epoch = cluster.tenant("delta")["epoch"]
    for target in ("//api/node/tenants/delta/release", "/%2fapi/node/tenants/delta/release",
                   "/./api/node/tenants/delta/release"):
        answer = raw(cluster.node, "POST", target, body=orjson.dumps({"epoch": epoch}))
        assert answer.status in (401, 404), (target, answer.status, answer.body)
    time.sleep(0.2)  # a release would have taken effect by now
    assert cluster.tenant("delta")["status"] == "active"
    for _ in range(3):
        health = httpx.get(f"{cluster.gateway}/t/delta/api/health", timeout=10)
        assert health.status_code == 200, health.text


# ---- the gateway -----------------------------------------------------------------------------------------


def test_gateway_metrics_refuse_every_spelling_without_the_token(cluster: Cluster) -> None:
    for target in spellings("/metrics"):
        assert_refused(cluster.gateway, "GET", target)
    assert raw(cluster.gateway, "GET", "/metrics", CLUSTER_BEARER).status == 200


def test_gateway_never_reaches_node_internals(cluster: Cluster) -> None:
    """A tenant path that climbs out of ``/t/{id}`` (or a Host-routed one that names an internal route) stays
    a tenant request: the node answers it from the tenant's API, never from its internal routes."""
    create_tenant_with_secret(cluster, "epsilon")
    internal = "api/node/tenants/epsilon/data"
    for target in (f"/t/epsilon/../../{internal}", f"/t/epsilon/%2e%2e/%2e%2e/{internal}",
                   f"/t/epsilon/..%2f..%2f{internal}", f"/t/epsilon//{internal}", f"/t/epsilon/%2f{internal}",
                   f"/t/epsilon/{internal}", "/t/epsilon/../../metrics", "/t/epsilon/%2e%2e/%2e%2e/metrics"):
        answer = _followed_within_the_tenant(cluster, target, "/t/epsilon", {})
        assert answer.status in (400, 404), (target, answer.status, answer.body[:200])
        assert SQLITE_MAGIC not in answer.body
    for target in (f"/{internal}", f"//{internal}", f"/%2e%2e/{internal}", "/metrics", "//metrics"):
        answer = _followed_within_the_tenant(cluster, target, "", {"Host": "epsilon.pb.test"})
        assert answer.status in (400, 404), (target, answer.status, answer.body[:200])
        assert SQLITE_MAGIC not in answer.body


def _followed_within_the_tenant(cluster: Cluster, target: str, prefix: str, headers: dict[str, str]) -> Answer:
    """The gateway's answer to ``target``; a redirect (PocketBase's, of a path with ``//`` to its clean form)
    must stay under the tenant's ``prefix`` and is followed once."""
    answer = raw(cluster.gateway, "GET", target, headers)
    if answer.status != 307:
        return answer
    location = answer.headers["location"]
    assert location.startswith(prefix + "/") and "//" not in location and "/.." not in location, (target, location)
    return raw(cluster.gateway, "GET", location, headers)


def test_tenant_api_serves_only_the_canonical_spelling(cluster: Cluster) -> None:
    """Behind ``/t/{id}`` a path is matched segment by segment: dot segments and a trailing slash name no route,
    and a path with ``//`` is redirected to its clean form, as PocketBase does (never the route under another
    name: the client asks again for the canonical path)."""
    token = create_tenant_with_secret(cluster, "zeta")
    owner = {"Authorization": token}
    assert raw(cluster.gateway, "GET", "/t/zeta/api/collections/secrets/records", owner).status == 200
    for target in ("/t/zeta//api/collections/secrets/records", "/t/zeta/api/collections/secrets/records/",
                   "/t/zeta/api/collections/./secrets/records", "/t/zeta/api/collections/x/../secrets/records",
                   "/t/zeta/api/collections//records"):
        answer = raw(cluster.gateway, "GET", target, owner)
        if "//" in target.removeprefix("/t/zeta"):
            assert answer.status == 307, (target, answer.status, answer.body[:200])
            assert answer.headers["location"] == "/t/zeta" + clean_path(target.removeprefix("/t/zeta")), target
            assert SECRET.encode() not in answer.body
        else:
            assert answer.status == 404, (target, answer.status, answer.body[:200])


# ---- the control plane and all-in-one ------------------------------------------------------------------


def test_control_plane_routes_refuse_every_spelling_without_a_token(cluster: Cluster) -> None:
    for method, path in CP_ROUTES:
        for target in spellings(path):
            assert_refused(cluster.cp.url, method, target)
    for target in ("/", "/no/such/route", "//api/health", "/metrics", "/api/node/tenants/ghost/data"):
        assert_refused(cluster.cp.url, "GET", target)
    assert raw(cluster.cp.url, "GET", "/api/health").status == 200
    assert raw(cluster.cp.url, "GET", "//api/cp/tenants", ADMIN).status == 404
    assert raw(cluster.cp.url, "GET", "/api/cp/tenants", ADMIN).status == 200


@pytest.fixture(scope="module")
def all_in_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("internal-routes-aio")
    cp_port, gw_port = free_port(), free_port()
    process = PbfastProcess([
        "serve", f"--data-dir={tmp / 'data'}", f"--http-addr=127.0.0.1:{cp_port}",
        f"--raft-bind-addr=127.0.0.1:{free_port()}", f"--gateway-addr=127.0.0.1:{gw_port}",
        f"--admin-token={ADMIN_TOKEN}", f"--cluster-token={CLUSTER_TOKEN}", "--base-domain=pb.test",
    ], tmp / "pbfast.log").start()
    try:
        cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
        process.wait_healthy([cp, gw], timeout=20)
        yield cp, gw
    finally:
        process.stop()


def test_all_in_one_refuses_every_spelling_without_a_token(all_in_one: tuple[str, str]) -> None:
    cp, gw = all_in_one
    for method, path in [*CP_ROUTES, ("GET", "/metrics")]:
        for target in spellings(path):
            assert_refused(cp, method, target)
    for target in spellings("/metrics"):
        assert_refused(gw, "GET", target)
    # The node has no listener here; its internal routes are on no public listener under any spelling.
    for method, path in NODE_ROUTES:
        for target in spellings(path)[:6]:
            assert_refused(cp, method, target)
            assert_refused(gw, method, target)
    assert raw(cp, "GET", "/metrics", CLUSTER_BEARER).status == 200
    assert raw(cp, "GET", "/metrics", ADMIN).status == 200
    assert raw(gw, "GET", "/metrics", CLUSTER_BEARER).status == 200
