"""The gateway in front of remote tenant nodes: real processes on loopback.

One cluster for the module (a control plane, two tenant nodes, a gateway with ``--base-domain=pb.test``) plus
a fake node (a tiny asyncio HTTP server in this process, registered through the control plane API) that
echoes what the gateway forwards, streams server-sent events and sends large bodies. Tests run in file
order and each leaves the cluster as it found it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pocketbase import PocketBase

from cpcluster import ADMIN, CLUSTER, CLUSTER_TOKEN, Member, start_cluster, start_node, wait_until
from helpers import FakeHeaders, PbfastProcess, free_port
from pbfast.gateway.app import GatewayApp
from pbfast.gateway.http1_request import node_raw_path
from pbfast.gateway.proxy import NodeProxy, ProxyLimits, Target
from pbfast.gateway.routes import RouteWatcher
from pbfast.primitives import RoutingTable

PASSWORD = "password-1234"


@dataclass
class Cluster:
    cp: Member
    gw: str
    nodes: dict[str, tuple[PbfastProcess, str]]
    tmp: Path
    start: Any
    gateway: PbfastProcess | None = None
    placement: dict[str, str] = field(default_factory=dict)  # tenant -> node id

    def node_of(self, tenant_id: str) -> str:
        return str(httpx.get(f"{self.cp.url}/api/cp/tenants/{tenant_id}", headers=ADMIN).json()["nodeId"])


def create_tenant(cluster: Cluster, tenant_id: str, superuser: bool = False) -> str:
    body: dict[str, Any] = {"id": tenant_id}
    if superuser:
        body["superuser"] = {"email": f"root@{tenant_id}.test", "password": PASSWORD}
    created = httpx.post(f"{cluster.cp.url}/api/cp/tenants", headers=ADMIN, json=body, timeout=10)
    assert created.status_code == 200, created.text
    wait_until(lambda: httpx.get(f"{cluster.gw}/t/{tenant_id}/api/health").status_code == 200, timeout=10)
    return str(created.json()["nodeId"])


def move(cluster: Cluster, tenant_id: str, node_id: str) -> dict[str, Any]:
    moved = httpx.post(f"{cluster.cp.url}/api/cp/tenants/{tenant_id}/move", headers=ADMIN, json={"nodeId": node_id},
                       timeout=15)
    assert moved.status_code == 200, moved.text
    return dict(moved.json())


def assert_pocketbase_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status and body["message"]
    return dict(body)


def raw_request(url: str, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` byte for byte (httpx would normalise ``..``); the answer's status, headers, body."""
    host, _, port = url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        try:
            conn.sendall(request)
        except OSError:
            pass  # the gateway may answer (and stop reading) before the whole request was sent
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("gateway")
    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp / f"pbfast-{len(started)}.log", env or {}).start()
        started.append(process)
        return process

    try:
        # A long node timeout: a killed node keeps its tenants, so the gateway's own failure handling shows.
        cp = start_cluster(start, tmp, 1, node_timeout=120)[0]
        nodes = {node_id: start_node(start, node_id, [cp.url], tmp / "nodes") for node_id in ("node-a", "node-b")}
        wait_until(lambda: len(httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]) == 2)
        gw_port = free_port()
        gateway = start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{gw_port}",
                         f"--control-plane-addrs=127.0.0.1:{cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}",
                         "--base-domain=pb.test", "--gateway-access-log", f"--gateway-max-body-bytes={32 << 20}"])
        gw = f"http://127.0.0.1:{gw_port}"
        gateway.wait_healthy([gw])
        result = Cluster(cp, gw, nodes, tmp, start, gateway)
        # Placement is deterministic (least loaded, then smallest id): alpha on node-a, beta on node-b.
        for tenant_id in ("alpha", "beta"):
            result.placement[tenant_id] = create_tenant(result, tenant_id, superuser=True)
        assert set(result.placement.values()) == {"node-a", "node-b"}, result.placement
        yield result
    finally:
        for process in started:
            if process.proc is not None and process.proc.poll() is None:
                process.stop(signal.SIGKILL)


def test_sdk_reaches_tenants_on_both_nodes(cluster: Cluster) -> None:
    for tenant_id in ("alpha", "beta"):
        pb = PocketBase(f"{cluster.gw}/t/{tenant_id}")
        pb.collection("_superusers").auth_with_password(f"root@{tenant_id}.test", PASSWORD)
        pb.collections.create({"name": "secrets", "type": "base", "listRule": "", "viewRule": "",
                               "fields": [{"name": "v", "type": "text"}]})
        secrets = pb.collection("secrets")
        created = secrets.create({"v": f"{tenant_id}-only"})
        assert secrets.get_one(created.id).v == f"{tenant_id}-only"
        extra = secrets.create({"v": "temporary"})
        assert secrets.update(extra.id, {"v": "changed"}).v == "changed"
        secrets.delete(extra.id)
        listed = secrets.get_list(1, 10)
        assert listed.total_items == 1 and listed.items[0].v == f"{tenant_id}-only"

    # The Host form reaches the same tenant (and a JSON body of more than a few bytes is forwarded).
    host = {"Host": "alpha.pb.test"}
    listed = httpx.get(f"{cluster.gw}/api/collections/secrets/records", headers=host)
    assert listed.status_code == 200 and [r["v"] for r in listed.json()["items"]] == ["alpha-only"]
    login = httpx.post(f"{cluster.gw}/api/collections/_superusers/auth-with-password", headers=host,
                       json={"identity": "root@alpha.test", "password": PASSWORD})
    assert login.status_code == 200, login.text
    # A body larger than the proxy's small-body buffer is streamed to the node (unknown fields are ignored).
    big = httpx.post(f"{cluster.gw}/api/collections/secrets/records", headers={**host, "Authorization":
                     login.json()["token"]}, json={"v": "note", "padding": "x" * 100_000})
    assert big.status_code == 200 and big.json()["v"] == "note", big.text[:200]
    httpx.delete(f"{cluster.gw}/t/alpha/api/collections/secrets/records/{big.json()['id']}",
                 headers={"Authorization": login.json()["token"]}).raise_for_status()
    # The gateway's own health endpoint is still its own.
    assert httpx.get(f"{cluster.gw}/api/health").json() == {"message": "API is healthy.", "code": 200, "data": {}}


def test_no_way_into_another_tenant(cluster: Cluster) -> None:
    """Forged x-pbfast-* headers, '..' in raw paths and Host/path mixes stay inside the named tenant."""
    forged = {"X-Pbfast-Tenant": "alpha", "X-Pbfast-Cluster-Token": "forged", "X-Pbfast-Epoch": "999999",
              "X-Pbfast-Tenant-Id": "alpha"}
    response = httpx.get(f"{cluster.gw}/t/beta/api/collections/secrets/records", headers=forged)
    assert response.status_code == 200 and [r["v"] for r in response.json()["items"]] == ["beta-only"]
    # Had the forged epoch reached beta's node, the node would now refuse the gateway's real epoch.
    for _ in range(3):
        assert httpx.get(f"{cluster.gw}/t/beta/api/health").status_code == 200
    for path in ("/t/beta/../alpha/api/collections/secrets/records",
                 "/t/beta/%2e%2e/alpha/api/collections/secrets/records",
                 "/t/beta/api/../../alpha/api/collections/secrets/records",
                 "/t/../alpha/api/collections/secrets/records",
                 "/t/beta/t/alpha/api/collections/secrets/records"):
        status, _, body = raw_request(cluster.gw, f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                                                  "X-Pbfast-Cluster-Token: forged\r\n\r\n".encode())
        assert b"alpha-only" not in body, path
        assert status in (400, 404) and set(json.loads(body)) == {"status", "message", "data"}, (path, body)
    # Host names beta; a path naming alpha is just a path inside beta.
    mixed = httpx.get(f"{cluster.gw}/t/alpha/api/collections/secrets/records", headers={"Host": "beta.pb.test"})
    assert mixed.status_code == 404 and b"alpha-only" not in mixed.content


@pytest.mark.exclusive
def test_killed_node_fails_fast_then_recovers(cluster: Cluster) -> None:
    """Once a dead node's breaker is open, no request waits for the node: the gateway answers 503 at once.

    The killed node's address is made a black hole (a listener whose accept queue is full drops every SYN, as a
    host that is gone does), so any request that tries the node waits the gateway's whole connect timeout: "did
    not wait" is then a bound that load cannot break (an answer faster than the timeout did not try the node),
    unlike a fixed 0.1 s."""
    process, url = cluster.nodes["node-a"]
    port = int(url.rsplit(":", 1)[1])
    limits = ProxyLimits()  # the fixture's gateway runs with the default timeouts and breaker
    process.stop(signal.SIGKILL)
    black_hole = socket.socket()
    black_hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    black_hole.bind(("127.0.0.1", port))
    black_hole.listen(0)
    queued: list[socket.socket] = []
    while True:  # fill its accept queue (how long it is is the kernel's choice): then every SYN is dropped
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            filler.close()
            break
        queued.append(filler)
        assert len(queued) < 16
    alpha = f"{cluster.gw}/t/alpha/api/collections/secrets/records"
    try:
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(limits.breaker_failures) as pool:
            # Until the breaker opens, requests wait for the connect timeout (504; 502 for a pooled connection
            # the kill closed); sent a threshold's worth at a time, it opens after about one timeout.
            deadline = time.monotonic() + 10 * limits.connect_timeout_seconds
            while True:
                statuses = set(pool.map(lambda _: client.get(alpha).status_code, range(limits.breaker_failures)))
                assert statuses <= {502, 503, 504}, statuses
                if 503 in statuses:
                    break
                assert time.monotonic() < deadline, "the breaker never opened"
            opened = time.monotonic()
            probes = 0
            for _ in range(20):
                started = time.monotonic()
                response = client.get(alpha)
                elapsed = time.monotonic() - started
                if response.status_code == 504:
                    # After each cool-down one request is the half-open probe: it tries the node (and waits).
                    assert_pocketbase_error(response, 504)
                    probes += 1
                    continue
                assert_pocketbase_error(response, 503)
                assert int(response.headers["retry-after"]) >= 1
                # Answered by the gateway alone: a request that tried the node took the connect timeout at least.
                assert elapsed < limits.connect_timeout_seconds, elapsed
            # A failed probe reopens the breaker for a whole cool-down, and each probe waits the connect timeout:
            # so many probes in so little time means requests went to the node, however slow the machine was.
            spent = time.monotonic() - opened
            assert probes <= 1 + spent / (limits.breaker_cooldown_seconds + limits.connect_timeout_seconds), \
                (probes, spent)
            # The other node's tenants do not notice.
            beta = client.get(f"{cluster.gw}/t/beta/api/collections/secrets/records")
            assert beta.status_code == 200 and beta.json()["totalItems"] == 1
            metrics = client.get(f"{cluster.gw}/metrics", headers=CLUSTER).text
        assert f'pbfast_gateway_breaker_state{{node="{url}",state="closed"}} 0' in metrics
        assert 'pbfast_gateway_upstream_errors_total{kind="connect_timeout"}' in metrics
        assert 'pbfast_gateway_upstream_errors_total{kind="breaker_open"}' in metrics
    finally:
        for filler in queued:
            filler.close()
        black_hole.close()
        # Same port and data dir again: served without restarting the gateway, data intact (started also when an
        # assertion above failed: the module's later tests share this cluster and need the node).
        cluster.nodes["node-a"] = start_node(cluster.start, "node-a", [cluster.cp.url], cluster.tmp / "nodes",
                                             port=port)
    wait_until(lambda: httpx.get(f"{cluster.gw}/t/alpha/api/health").status_code == 200, timeout=10)
    listed = httpx.get(f"{cluster.gw}/t/alpha/api/collections/secrets/records")
    assert listed.status_code == 200 and [r["v"] for r in listed.json()["items"]] == ["alpha-only"]
    assert f'pbfast_gateway_breaker_state{{node="{url}",state="closed"}} 1' in httpx.get(f"{cluster.gw}/metrics", headers=CLUSTER).text


def test_planned_move_under_load_has_no_errors(cluster: Cluster) -> None:
    source = create_tenant(cluster, "mover")
    target = "node-b" if source == "node-a" else "node-a"
    statuses: list[int] = []
    stop = threading.Event()

    def load(path: str) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get(f"{cluster.gw}/t/mover{path}").status_code)

    threads = [threading.Thread(target=load, args=(path,)) for path in ("/api/health", "/api/collections")]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        first = move(cluster, "mover", target)
        assert first["nodeId"] == target
        time.sleep(0.7)
        back = move(cluster, "mover", source)
        assert back["nodeId"] == source and back["epoch"] == first["epoch"] + 1
        time.sleep(0.7)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    bad = [s for s in statuses if s not in (200, 401)]  # /api/collections needs a superuser: 401 is its answer
    assert len(statuses) > 50 and not bad, (len(statuses), bad[:10])
    assert 'pbfast_gateway_move_waits_total{outcome="served"}' in httpx.get(f"{cluster.gw}/metrics", headers=CLUSTER).text


def test_access_log(cluster: Cluster) -> None:
    """``--gateway-access-log``: one line per request, native and handed over alike."""
    assert httpx.get(f"{cluster.gw}/t/alpha/api/health?probe=access").status_code == 200
    assert httpx.get(f"{cluster.gw}/t/nobody-here/api/health").status_code == 404
    assert cluster.gateway is not None

    def logged() -> bool:
        text = cluster.gateway.output()  # type: ignore[union-attr]
        return ("[GatewayAccess] 127.0.0.1 GET /t/alpha/api/health?probe=access 200 " in text
                and "[GatewayAccess] 127.0.0.1 GET /t/nobody-here/api/health 404 " in text)

    wait_until(logged, timeout=5)


def test_limits_answer_pocketbase_errors(cluster: Cluster) -> None:
    too_big = raw_request(cluster.gw, b"POST /t/beta/api/collections/secrets/records HTTP/1.1\r\nHost: gw\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: 40000000\r\n"
                                      b"Connection: close\r\n\r\n{")
    assert too_big[0] == 413 and set(json.loads(too_big[2])) == {"status", "message", "data"}
    big_header = httpx.get(f"{cluster.gw}/t/beta/api/health", headers={"X-Big": "b" * 40_000})
    assert_pocketbase_error(big_header, 431)


def test_the_gateways_own_answers_carry_cors_headers(cluster: Cluster) -> None:
    """A browser app on another origin reads the gateway's own errors (unknown tenant, refused request) as it
    reads a tenant's answers: PocketBase's CORS headers are on both, once."""
    origin = {"Origin": "https://app.example"}
    answers = {
        "unknown tenant (the Python side)": httpx.get(f"{cluster.gw}/t/nosuch/api/health", headers=origin),
        "invalid tenant id (native)": httpx.get(f"{cluster.gw}/t/Not_A_Label/api/health", headers=origin),
        "headers too large (native)": httpx.get(f"{cluster.gw}/t/beta/api/health",
                                                 headers={**origin, "X-Big": "b" * 40_000}),
        "the tenant's own answer": httpx.get(f"{cluster.gw}/t/alpha/api/health", headers=origin),
    }
    for case, answer in answers.items():
        assert answer.headers.get_list("access-control-allow-origin") == ["*"], (case, answer.headers)
        assert answer.headers.get_list("vary") == ["Origin"], (case, answer.headers)
    assert [answer.status_code for answer in answers.values()] == [404, 400, 431, 200]
    without_origin = httpx.get(f"{cluster.gw}/t/nosuch/api/health")
    assert "access-control-allow-origin" not in without_origin.headers
    assert without_origin.headers.get_list("vary") == ["Origin"]


# ---- a fake node: echo, server-sent events, large bodies ----------------------------------------------


class FakeNode:
    """A minimal HTTP/1.1 server (keep-alive, content-length and chunked bodies) on its own event loop in a
    thread. ``/t/{id}/echo`` answers what it received; ``/t/{id}/sse?n=N`` sends N events 200 ms apart;
    ``/t/{id}/big?size=N`` sends N bytes; ``/t/{id}/fenced`` answers like a node that moved the tenant on
    (503 "has moved") unless the epoch is at least 2."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.sse_closed = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]
                                                                          if line)]
                names = dict(headers)
                body = bytearray()
                if "content-length" in names:
                    body += await reader.readexactly(int(names["content-length"]))
                elif names.get("transfer-encoding") == "chunked":
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                path, _, query = target.partition("?")
                params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                if path.endswith("/sse"):
                    await self._sse(writer, int(params.get("n", "5")))
                    return
                if path.endswith("/idle-sse"):  # one event, then quiet until the gateway closes the stream
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n12\r\nevent: PB_CONNECT\n\r\n")
                    await writer.drain()
                    await reader.read()
                    return
                if path.endswith("/fenced") and int(names.get("x-pbfast-epoch", "0")) < 2:
                    moved = b'{"status":503,"message":"The tenant has moved; retry.","data":{}}'
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                 b"retry-after: 1\r\nx-pbfast-moved: 1\r\ncontent-length: %d\r\n\r\n%b"
                                 % (len(moved), moved))
                elif path.endswith("/big"):
                    payload = bytes(range(256)) * (int(params["size"]) // 256)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                                 b"content-length: %d\r\n\r\n%b" % (len(payload), payload))
                else:
                    echo = json.dumps({"method": method, "target": target, "headers": headers,
                                       "bodyLength": len(body), "bodySha256": hashlib.sha256(body).hexdigest()})
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
                                 b"keep-alive: timeout=5\r\nx-from-node: yes\r\ncontent-length: %d\r\n\r\n%b"
                                 % (len(echo), echo.encode()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway closed the connection (idle, or an upload it refused)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _sse(self, writer: asyncio.StreamWriter, count: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        try:
            for i in range(count):
                event = f"id: {i}\ndata: {{\"n\": {i}}}\n\n".encode()
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.2)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.sse_closed.set()


@pytest.fixture(scope="module")
def fake_node(cluster: Cluster) -> Iterator[FakeNode]:
    """The fake node registered as ``fake`` with tenant ``streamer`` placed on it."""
    node = FakeNode()
    registered = httpx.put(f"{cluster.cp.url}/api/cp/nodes/fake", headers=CLUSTER,
                           json={"address": node.address, "maxTenants": 100})
    assert registered.status_code == 200, registered.text
    created = httpx.post(f"{cluster.cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "streamer"})
    assert created.status_code == 200, created.text
    if created.json()["nodeId"] != "fake":
        move(cluster, "streamer", "fake")
    wait_until(lambda: httpx.get(f"{cluster.gw}/t/streamer/echo").status_code == 200, timeout=10)
    yield node
    node.close()


def test_forwarded_request_is_what_the_node_expects(cluster: Cluster, fake_node: FakeNode) -> None:
    epoch = httpx.get(f"{cluster.cp.url}/api/cp/tenants/streamer", headers=ADMIN).json()["epoch"]
    status, headers, body = raw_request(cluster.gw, (
        b"GET /t/streamer/echo/a%20b%3Fc?x=1&y=%2F HTTP/1.1\r\nHost: streamer-host.example\r\n"
        b"X-Pbfast-Cluster-Token: forged\r\nX-Pbfast-Epoch: 999999\r\nX-Pbfast-Tenant: alpha\r\n"
        b"X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\nKeep-Alive: timeout=99\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic eA==\r\nX-Drop-Me: 1\r\nConnection: close, X-Drop-Me\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nX-Custom: kept\r\nX-Pbfast-Path: /t/alpha/forged\r\n\r\n"))
    assert status == 200, body
    assert headers["x-from-node"] == "yes" and "keep-alive" not in headers
    echo = json.loads(body)
    received: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        received.setdefault(name, []).append(value)
    assert echo["target"] == "/t/streamer/echo/a%20b%3Fc?x=1&y=%2F"
    assert received["x-pbfast-cluster-token"] == [CLUSTER_TOKEN]
    assert received["x-pbfast-epoch"] == [str(epoch)]
    assert "x-pbfast-tenant" not in received
    # the path as the client spelt it (the node's server decodes it): the gateway's, never the client's
    assert received["x-pbfast-path"] == ["/t/streamer/echo/a%20b%3Fc"]
    assert received["x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert received["x-forwarded-proto"] == ["http"] and received["x-forwarded-host"] == ["streamer-host.example"]
    assert received["host"] == ["streamer-host.example"]
    assert received["cookie"] == ["a=1", "b=2"] and received["x-custom"] == ["kept"]
    for hop in ("keep-alive", "te", "proxy-authorization", "x-drop-me", "connection", "transfer-encoding"):
        assert hop not in received, hop

    # Request bodies: small (buffered), large with a length and chunked without one all arrive intact.
    for size in (10, 300_000):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        answer = httpx.post(f"{cluster.gw}/t/streamer/echo%2Fx", content=data).json()
        assert answer["bodyLength"] == len(data) and answer["bodySha256"] == hashlib.sha256(data).hexdigest()
        assert [value for name, value in answer["headers"] if name == "x-pbfast-path"] == ["/t/streamer/echo%2Fx"]
    plain = httpx.get(f"{cluster.gw}/t/streamer/echo").json()
    assert all(name != "x-pbfast-path" for name, _ in plain["headers"])  # only a path with a "%" carries it

    def chunks() -> Iterator[bytes]:
        for i in range(40):
            yield bytes([i]) * 10_000

    answer = httpx.post(f"{cluster.gw}/t/streamer/echo", content=chunks()).json()
    assert answer["bodyLength"] == 400_000
    assert answer["bodySha256"] == hashlib.sha256(b"".join(chunks())).hexdigest()
    # A streamed body over the gateway's limit (set to 32 MiB here) is cut off with 413; the node sees a broken upload.
    def endless() -> Iterator[bytes]:
        for _ in range(40):
            yield b"z" * (1 << 20)

    try:
        too_big = httpx.post(f"{cluster.gw}/t/streamer/echo", content=endless(), timeout=10)
        assert_pocketbase_error(too_big, 413)
    except httpx.WriteError:
        pass  # the gateway answered and closed before the client finished sending; equally a refusal
    # A large response streams back whole.
    big = httpx.get(f"{cluster.gw}/t/streamer/big", params={"size": 3 << 20})
    assert big.status_code == 200 and big.content == bytes(range(256)) * ((3 << 20) // 256)


@pytest.mark.exclusive
def test_server_sent_events_stream_through(cluster: Cluster, fake_node: FakeNode) -> None:
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream("GET", f"{cluster.gw}/t/streamer/sse", params={"n": 6}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    # Delivered as they happen: the first long before the stream ends, then about 200 ms apart.
    assert arrivals[0] < 0.5 and arrivals[-1] - arrivals[0] > 0.8, arrivals

    # A client that goes away closes the stream to the node too.
    fake_node.sse_closed.clear()
    with httpx.stream("GET", f"{cluster.gw}/t/streamer/sse", params={"n": 100}, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break
    assert fake_node.sse_closed.wait(3)


def test_a_connection_serves_requests_after_its_event_stream_ended(cluster: Cluster, fake_node: FakeNode) -> None:
    """An event stream is written outside hyper (to hold no buffers while idle); once the node ends it, the
    same keep-alive connection goes on serving requests."""
    host, _, port = cluster.gw.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"GET /t/streamer/sse?n=2 HTTP/1.1\r\nHost: streamer\r\n\r\n")
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            chunk = conn.recv(65536)
            assert chunk, raw
            raw += chunk
        head, _, chunked = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\ntransfer-encoding: chunked" in head, head
        assert b"content-type: text/event-stream" in head and b"x-request-id: " in head, head
        events = b""
        while chunked:  # de-chunk: every event whole, nothing else
            size, _, rest = chunked.partition(b"\r\n")
            events, chunked = events + rest[:int(size, 16)], rest[int(size, 16) + 2:]
        assert events == b'id: 0\ndata: {"n": 0}\n\nid: 1\ndata: {"n": 1}\n\n'
        conn.sendall(b"GET /t/streamer/echo HTTP/1.1\r\nHost: streamer\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["target"] == "/t/streamer/echo"


def test_a_stopping_gateway_ends_event_streams_cleanly(cluster: Cluster, fake_node: FakeNode) -> None:
    """On the gateway's stop an event stream ends at once with its last chunk (the SDKs reconnect), not cut
    off after the grace time."""
    port = free_port()
    gateway = cluster.start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{port}",
                             f"--control-plane-addrs=127.0.0.1:{cluster.cp.http_port}", f"--cluster-token={CLUSTER_TOKEN}"])
    gateway.wait_healthy([f"http://127.0.0.1:{port}"])
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/t/streamer/echo").status_code == 200, timeout=10)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /t/streamer/sse?n=100 HTTP/1.1\r\nHost: streamer\r\n\r\n")
        raw = b""
        while b"data:" not in raw:
            chunk = conn.recv(65536)
            assert chunk, raw
            raw += chunk
        fake_node.sse_closed.clear()
        gateway.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        started = time.monotonic()
        while chunk := conn.recv(65536):
            raw += chunk
        assert raw.endswith(b"\r\n0\r\n\r\n"), raw[-40:]
        assert time.monotonic() - started < 2.5
    assert fake_node.sse_closed.wait(3)
    assert gateway.stop() == 0


def test_idle_event_streams_hold_little_gateway_memory(cluster: Cluster, fake_node: FakeNode) -> None:
    """A guard for issue 16's goal of at most 20 KB per idle realtime stream: 400 idle streams grow the
    gateway's RSS by ~3.5 KB each (~27 KB while hyper held them with its buffers)."""
    assert cluster.gateway is not None and cluster.gateway.proc is not None
    pid = cluster.gateway.proc.pid
    host, _, port = cluster.gw.removeprefix("http://").partition(":")

    def rss_kb() -> int:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    async def open_streams(count: int, held: list[asyncio.StreamWriter]) -> None:
        async def one() -> None:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /t/streamer/idle-sse HTTP/1.1\r\nHost: streamer\r\n\r\n")
            held.append(writer)
            while b"PB_CONNECT" not in await reader.readline():
                pass

        for _ in range(0, count, 100):
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(100))), 30)

    async def per_stream_kb() -> float:
        held: list[asyncio.StreamWriter] = []
        try:
            await open_streams(100, held)  # warm-up: the allocator's first pages
            await asyncio.sleep(0.3)
            before = rss_kb()
            await open_streams(400, held)
            await asyncio.sleep(0.3)
            return (rss_kb() - before) / 400
        finally:
            for writer in held:
                writer.close()

    per_stream = asyncio.run(per_stream_kb())
    assert per_stream < 12, f"{per_stream:.1f} KB of gateway RSS per idle event stream"


def test_metrics(cluster: Cluster) -> None:
    # The metrics name the nodes: only for the cluster's processes (Prometheus sends the token).
    assert_pocketbase_error(httpx.get(f"{cluster.gw}/metrics"), 401)
    assert_pocketbase_error(httpx.get(f"{cluster.gw}/metrics", headers={"Authorization": "Bearer wrong"}), 401)
    response = httpx.get(f"{cluster.gw}/metrics", headers=CLUSTER)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert counts['pbfast_gateway_requests_total{class="2xx"}'] > 10
    assert counts['pbfast_gateway_requests_total{class="5xx"}'] >= 1  # the killed node's answers
    assert counts["pbfast_gateway_request_duration_seconds_count"] == sum(
        v for k, v in counts.items() if k.startswith("pbfast_gateway_requests_total"))
    assert counts["pbfast_gateway_routing_table_version"] > 0
    for _, url in cluster.nodes.values():
        assert f'pbfast_gateway_breaker_state{{node="{url}",state="closed"}}' in text


# ---- in-process: the proxy's second chance and the app's waiting, against the fake node ---------------


@dataclass
class FakeScope:
    method: str
    path: str
    headers: FakeHeaders = field(default_factory=lambda: FakeHeaders([("host", "gw.test")]))
    query_string: str = ""
    client: str = "192.0.2.7:5555"
    scheme: str = "http"
    authority: str | None = None
    proto: str = "http"
    http_version: str = "1.1"


class FakeProto:
    """Records the answer an RSGI protocol would send."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def __call__(self) -> bytes:
        return b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, dict(headers), body

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_bytes(status, headers, b"")


def test_proxy_second_chance_and_breaker() -> None:
    node = FakeNode()
    try:
        asyncio.run(_second_chance(node))
    finally:
        node.close()


async def _second_chance(node: FakeNode) -> None:
    proxy = NodeProxy(CLUSTER_TOKEN, ProxyLimits(breaker_failures=3, breaker_cooldown_seconds=30))
    dead = f"http://127.0.0.1:{free_port()}"
    reasons: list[str] = []

    async def to_live_node(target: Target, reason: str) -> Target | None:
        reasons.append(reason)
        return Target(node.address, target.tenant_id, 2, target.forward_path)

    # Connection refused, the route changed meanwhile: sent once more, to the new node with its epoch.
    answer = FakeProto()
    assert await proxy.forward(FakeScope("GET", "/t/x/echo"), answer, Target(dead, "x", 1, "/echo"),
                               to_live_node) == 200
    echo = json.loads(answer.body)
    assert reasons == ["unreachable"] and ["x-pbfast-epoch", "2"] in echo["headers"]
    # The node says the tenant moved (stale epoch): re-routed once with the newer epoch.
    answer = FakeProto()
    assert await proxy.forward(FakeScope("GET", "/t/x/fenced"), answer, Target(node.address, "x", 1, "/fenced"),
                               to_live_node) == 200
    assert reasons[-1] == "moved"
    # Without a newer route the client gets the 503 (PocketBase JSON, Retry-After).
    answer = FakeProto()
    assert await proxy.forward(FakeScope("GET", "/t/x/fenced"), answer, Target(node.address, "x", 1, "/fenced"),
                               None) == 503
    assert json.loads(answer.body)["status"] == 503 and answer.headers["retry-after"] == "1"

    # Only one second chance: a re-route to another dead node ends with 502.
    async def to_dead_node(target: Target, reason: str) -> Target | None:
        reasons.append(reason)
        return Target(f"http://127.0.0.1:{free_port()}", target.tenant_id, 3, target.forward_path)

    count = len(reasons)
    answer = FakeProto()
    assert await proxy.forward(FakeScope("GET", "/t/x/echo"), answer, Target(dead, "x", 1, "/echo"),
                               to_dead_node) == 502
    assert len(reasons) == count + 1 and set(json.loads(answer.body)) == {"status", "message", "data"}
    # The third failure opens the dead node's breaker; then it is answered at once with Retry-After.
    assert await proxy.forward(FakeScope("GET", "/t/x/echo"), FakeProto(), Target(dead, "x", 1, "/echo"), None) == 502
    assert proxy.breakers.state(dead) == "open"
    answer = FakeProto()
    assert await proxy.forward(FakeScope("GET", "/t/x/echo"), answer, Target(dead, "x", 1, "/echo"), None) == 503
    assert 1 <= int(answer.headers["retry-after"]) <= 30
    # A POST body that was read whole can be sent again too (nothing reached the first node).
    answer = FakeProto()
    post = FakeScope("POST", "/t/x/echo", FakeHeaders([("host", "gw.test"), ("content-length", "0")]))
    assert await proxy.forward(post, answer, Target(dead, "x", 1, "/echo"), to_live_node) == 200
    assert proxy.metrics.retries == {"unreachable": 3, "moved": 1}
    await proxy.aclose()


@pytest.mark.exclusive
def test_requests_wait_for_a_move_to_finish() -> None:
    asyncio.run(_wait_for_move())


async def _wait_for_move() -> None:
    watcher = RouteWatcher(None, RoutingTable())  # type: ignore[arg-type]  # tables are applied by hand

    def table(version: int, address: str, status: str, epoch: int) -> dict[str, Any]:
        return {"version": version, "routes": [{"tenantId": "t1", "address": address, "status": status,
                                                "epoch": epoch}]}

    watcher.apply(table(1, "http://a:1", "active", 1))
    app = GatewayApp(watcher, move_wait_seconds=1.0)
    before = Target("http://a:1", "t1", 1, "/x")
    assert await app._reroute(before, "unreachable") is None  # nothing changed: no second chance, no wait
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, watcher.apply, table(2, "http://a:1", "moving", 1))
    loop.call_later(0.3, watcher.apply, table(3, "http://b:2", "active", 2))
    started = loop.time()
    assert await app._reroute(before, "moved") == Target("http://b:2", "t1", 2, "/x")
    assert 0.25 < loop.time() - started < 0.9
    # A move that does not finish within the bound: no new target.
    loop.call_later(0.05, watcher.apply, table(4, "http://b:2", "moving", 2))
    started = loop.time()
    assert await app._reroute(Target("http://b:2", "t1", 2, "/x"), "moved") is None
    assert 0.9 < loop.time() - started < 1.5
    # A request arriving while the tenant is moving waits for the move, then goes to the new node.
    loop.call_later(0.2, watcher.apply, table(5, "local://c", "active", 3))
    local_calls: list[tuple[str, int, str]] = []

    async def local_node(tenant_id: str, epoch: int, path: str, scope: Any, proto: Any) -> int:
        local_calls.append((tenant_id, epoch, path))
        proto.response_bytes(200, [], b"{}")
        return 200

    app = GatewayApp(watcher, {"local://c": local_node}, move_wait_seconds=1.0)
    answer = FakeProto()
    await app.__rsgi__(FakeScope("GET", "/t/t1/api/health"), answer)  # type: ignore[arg-type]
    assert answer.status == 200 and local_calls == [("t1", 3, "/api/health")]
    assert app.metrics.move_waits == {"served": 1}


# Paths PocketBase routes on as sent: an encoded "/" or ".." stays inside its segment (tests/pocketbase/
# scenarios_files.py compares these with the binary through the native data path).
ENCODED_PATHS = ("/api%2Fhealth", "/api/health%2F", "/api/collections/secrets%2Frecords",
                 "/api/files/secrets/%2e%2e/x.txt", "/api/files/secrets/r/a%252Fb", "/api/files/secrets%2Fr/x/y")


def test_handed_over_requests_route_on_the_clients_spelling(cluster: Cluster) -> None:
    """The native data path hands some requests to the Python side (a tenant moving, a node it cannot reach)
    with the client's spelling of the path; the Python side forwards it, and the node answers as it answers
    the same request sent through the native data path. A client's own spelling header is never trusted."""
    node = cluster.nodes[cluster.placement["alpha"]][1]
    epoch = httpx.get(f"{cluster.cp.url}/api/cp/tenants/alpha", headers=ADMIN).json()["epoch"]
    native = {}
    for raw in ENCODED_PATHS:
        status, _, body = raw_request(cluster.gw, f"GET /t/alpha{raw} HTTP/1.1\r\nHost: gw.test\r\n"
                                                  f"Connection: close\r\n\r\n".encode())
        native[raw] = (status, json.loads(body))
    assert native["/api%2Fhealth"][0] == 404, native  # not /api/health
    handed = asyncio.run(_python_side_answers(node, epoch, trusted=True))
    assert handed == native
    untrusted = asyncio.run(_python_side_answers(node, epoch, trusted=False))
    assert untrusted["/api%2Fhealth"][0] == 200, "decoded: the path granian hands over"


async def _python_side_answers(node: str, epoch: int, trusted: bool) -> dict[str, tuple[int, Any]]:
    watcher = RouteWatcher(None, RoutingTable())  # type: ignore[arg-type]  # tables are applied by hand
    watcher.apply({"version": 1, "routes": [{"tenantId": "alpha", "address": node, "status": "active",
                                             "epoch": epoch}]})
    proxy = NodeProxy(CLUSTER_TOKEN)
    app = GatewayApp(watcher, proxy=proxy, trust_client_header=trusted)
    answers: dict[str, tuple[int, Any]] = {}
    try:
        for raw in ENCODED_PATHS:
            decoded = f"/t/alpha{unquote(raw)}"
            answer = FakeProto()
            headers = FakeHeaders([("host", "gw.test"), ("x-pbfast-path", f"/t/alpha{raw}")])
            await app.__rsgi__(FakeScope("GET", decoded, headers), answer)  # type: ignore[arg-type]
            answers[raw] = (answer.status, json.loads(answer.body))
    finally:
        await proxy.aclose()
    return answers


def test_the_clients_spelling_names_the_same_path() -> None:
    assert node_raw_path("/t/t1/api%2Fhealth", "t1", "/api/health") == "/t/t1/api%2Fhealth"
    assert node_raw_path("/t/%74%31/api%2Fhealth", "t1", "/api/health") == "/t/t1/api%2Fhealth"
    assert node_raw_path("/api%2Fhealth", "t1", "/api/health") == "/t/t1/api%2Fhealth"  # named by its Host
    assert node_raw_path("/t/t1/api/health", "t1", "/api/health") is None  # nothing encoded
    assert node_raw_path("/t/t1/api%2Fother", "t1", "/api/health") is None  # another path's
    assert node_raw_path("/t/t1/a%2F\r\nx: y", "t1", "/a/\r\nx: y") is None  # never a header's end


def test_handed_over_requests_keep_the_client_address() -> None:
    """Only the listener the native data path hands requests to trusts its ``x-pbfast-client`` header."""
    asyncio.run(_client_address())


async def _client_address() -> None:
    watcher = RouteWatcher(None, RoutingTable())  # type: ignore[arg-type]  # tables are applied by hand
    watcher.apply({"version": 1, "routes": [{"tenantId": "t1", "address": "local://c", "status": "active",
                                             "epoch": 1}]})
    seen: list[str] = []

    async def local_node(tenant_id: str, epoch: int, path: str, scope: Any, proto: Any) -> int:
        seen.append(scope.client)
        proto.response_bytes(200, [], b"{}")
        return 200

    headers = FakeHeaders([("host", "gw.test"), ("x-pbfast-client", "2001:db8::1")])
    for trust in (True, False):
        app = GatewayApp(watcher, {"local://c": local_node}, trust_client_header=trust)
        await app.__rsgi__(FakeScope("GET", "/t/t1/api/health", headers), FakeProto())  # type: ignore[arg-type]
    assert seen == ["[2001:db8::1]:0", "192.0.2.7:5555"]
