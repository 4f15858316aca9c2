"""Request targets as the guide's curl examples write them: raw bytes in path and query get the same status
and body from pbfast as from stock PocketBase 0.40.6 (Go's net/http), side by side.

One all-in-one (its gateway's native listener, the in-process node behind the Python side) plus a remote
tenant node joined to it, so both ways a gateway reaches a tenant are compared: ``local`` (handed over to the
Python side, in-process node) and ``remote`` (the native data path, forwarded over TCP to a granian node).
Every byte 0x00-0x7f and a sample from 0x80 is sent unencoded through raw sockets, in the path and in the
query. A request line Go refuses (a control byte or space in the target, a bad ``%`` escape in the path) is
400 there with a text body; pbfast answers 400 too, in PocketBase's JSON, and closes the connection.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cpcluster import wait_until
from helpers import PbfastProcess, free_port

ADMIN_TOKEN = "admin-token-guide-urls-0123456789"
CLUSTER_TOKEN = "cluster-token-guide-urls-0123456789"
SUPERUSER = {"email": "root@guide.test", "password": "password-1234"}
POSTS = [("post00000000000", "first", 5), ("post00000000001", "second", 150), ("post00000000002", "third", 300)]
RECORDS = "/api/collections/posts/records"
# Every ASCII byte, and from 0x80: a lone continuation byte, a lone lead byte, 0xff, and valid UTF-8 (é).
BYTE_CLASSES = [bytes([b]) for b in range(0x80)] + [b"\x80", b"\xc3", b"\xff", "é".encode()]


@dataclass
class Servers:
    pocketbase: str
    gateway: str


def raw_get(base_url: str, target: bytes, keep_alive: bool = False) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` sent byte for byte; the answer's status, headers and body."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    connection = b"keep-alive" if keep_alive else b"close"
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: " + connection
                     + b"\r\n\r\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def read_responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Pipelined HTTP/1.1 answers one after the other: (status, body) each (Content-Length or chunked)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            body, rest = rest[:length], rest[length:]
        answers.append((int(lines[0].split()[1]), body))
        raw = rest
    return answers


def comparable(status: int, body: bytes) -> tuple[int, Any]:
    """What must agree: the status, and the body (record lists by their ids and counts: timestamps differ)."""
    if status == 400 and body == b"400 Bad Request":  # Go's own answer to a malformed request line
        return 400, "malformed"
    parsed = json.loads(body)
    if isinstance(parsed, dict) and "items" in parsed:
        return status, ([item["id"] for item in parsed["items"]], parsed["totalItems"])
    return status, parsed


def _seed(base_url: str) -> None:
    token = httpx.post(f"{base_url}/api/collections/_superusers/auth-with-password", timeout=30,
                       json={"identity": SUPERUSER["email"], "password": SUPERUSER["password"]}).json()["token"]
    headers = {"Authorization": token}
    created = httpx.post(f"{base_url}/api/collections", headers=headers, json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "views", "type": "number"}]})
    assert created.status_code == 200, created.text
    for record_id, title, views in POSTS:
        added = httpx.post(f"{base_url}{RECORDS}", headers=headers, json={"id": record_id, "title": title,
                                                                           "views": views})
        assert added.status_code == 200, added.text


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Servers]]:
    tmp = tmp_path_factory.mktemp("guide-urls")
    started: list[PbfastProcess] = []
    pb_port = free_port()
    subprocess.run(["pocketbase", "superuser", "upsert", SUPERUSER["email"], SUPERUSER["password"],
                    "--dir", str(tmp / "pb")], check=True, capture_output=True, timeout=60)
    stock = subprocess.Popen(["pocketbase", "serve", "--dir", str(tmp / "pb"), "--http", f"127.0.0.1:{pb_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        cp_port, gw_port = free_port(), free_port()
        aio = PbfastProcess(["serve", f"--data-dir={tmp / 'aio'}", f"--http-addr=127.0.0.1:{cp_port}",
                             f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
                             f"--admin-token={ADMIN_TOKEN}", f"--cluster-token={CLUSTER_TOKEN}"],
                            tmp / "aio.log").start()
        started.append(aio)
        cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
        aio.wait_healthy([cp, gw], timeout=30)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def create(tenant_id: str) -> str:
            created = httpx.post(f"{cp}/api/cp/tenants", headers=admin, timeout=30,
                                 json={"id": tenant_id, "superuser": SUPERUSER})
            assert created.status_code == 200, created.text
            wait_until(lambda: httpx.get(f"{gw}/t/{tenant_id}/api/health").status_code == 200, timeout=15)
            _seed(f"{gw}/t/{tenant_id}")
            return str(created.json()["nodeId"])

        local_node = (tmp / "aio" / "node.id").read_text().strip()
        assert create("local") == local_node  # the all-in-one's own node, before the remote one joins
        node_port = free_port()
        node = PbfastProcess(["serve", "--mode=tenant-node", "--node-id=node-2", f"--http-addr=127.0.0.1:{node_port}",
                              f"--control-plane-addrs=127.0.0.1:{cp_port}", f"--cluster-token={CLUSTER_TOKEN}",
                              f"--data-dir={tmp / 'node-2'}"], tmp / "node-2.log").start()
        started.append(node)
        node.wait_healthy([f"http://127.0.0.1:{node_port}"], timeout=30)
        wait_until(lambda: len(httpx.get(f"{cp}/api/cp/nodes", headers=admin).json()["items"]) == 2, timeout=15)
        assert create("remote") == "node-2"  # least loaded
        pocketbase = f"http://127.0.0.1:{pb_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{pocketbase}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "stock PocketBase did not start"
                time.sleep(0.05)
        _seed(pocketbase)
        yield {tenant: Servers(pocketbase, f"{gw}/t/{tenant}") for tenant in ("local", "remote")}
    finally:
        for process in started:
            process.stop()
        stock.terminate()
        stock.wait(10)


def _gateway_and_prefix(url: str) -> tuple[str, bytes]:
    base, _, tenant_path = url.partition("/t/")
    return base, b"/t/" + tenant_path.encode()


@pytest.mark.parametrize("tenant", ["local", "remote"])
def test_the_guides_curl_url_answers_as_pocketbase(servers: dict[str, Servers], tenant: str) -> None:
    pair = servers[tenant]
    gateway, prefix = _gateway_and_prefix(pair.gateway)
    for query in (b"filter=(views>100)", b"filter=(views%3E100)", b"filter=(views<100)", b"filter=title=\"first\""):
        target = RECORDS.encode() + b"?" + query
        expected = raw_get(pair.pocketbase, target)
        got = raw_get(gateway, prefix + target)
        assert comparable(got[0], got[2]) == comparable(expected[0], expected[2]), (query, got)
    status, _, body = raw_get(gateway, prefix + RECORDS.encode() + b"?filter=(views>100)")
    assert status == 200 and [item["id"] for item in json.loads(body)["items"]] == [p[0] for p in POSTS[1:]]


@pytest.mark.parametrize("tenant", ["local", "remote"])
def test_every_raw_byte_answers_as_pocketbase(servers: dict[str, Servers], tenant: str) -> None:
    pair = servers[tenant]
    gateway, prefix = _gateway_and_prefix(pair.gateway)
    differences = []
    for byte in BYTE_CLASSES:
        for where, target in (("path", RECORDS.encode() + b"/post0000000000" + byte),
                              ("query", RECORDS.encode() + b"?filter=views" + byte + b"1"),
                              ("value", RECORDS.encode() + b"?filter=title='first" + byte + b"'&sort=-views")):
            expected_status, _, expected_body = raw_get(pair.pocketbase, target)
            status, headers, body = raw_get(gateway, prefix + target)
            expected = comparable(expected_status, expected_body)
            if expected == (400, "malformed"):
                error = json.loads(body)  # PocketBase-shaped, never empty
                matches = status == 400 and set(error) == {"status", "message", "data"} and error["status"] == 400
                matches = matches and headers.get("connection") == "close"
            else:
                matches = comparable(status, body) == expected
            if not matches:
                differences.append((where, byte, expected, status, body[:120]))
    assert not differences, differences


def test_bad_escapes_and_semicolons_in_the_query_drop_the_pair_as_go_does(servers: dict[str, Servers]) -> None:
    pair = servers["remote"]
    gateway, prefix = _gateway_and_prefix(pair.gateway)
    for query in (b"filter=views%zz&sort=-views", b"filter=a;b&sort=-views", b"perPage=1&perPage=2",
                  b"filter=views%3", b"sort=-views&filter=(views>=150)&filter=(views<0)"):
        target = RECORDS.encode() + b"?" + query
        expected = raw_get(pair.pocketbase, target)
        got = raw_get(gateway, prefix + target)
        assert comparable(got[0], got[2]) == comparable(expected[0], expected[2]), query


@pytest.mark.parametrize("tenant", ["local", "remote"])
def test_a_keep_alive_connection_normalises_each_request_and_leaves_bodies_alone(servers: dict[str, Servers],
                                                                                 tenant: str) -> None:
    """A body that looks like a request line with raw bytes reaches the database unchanged; the requests
    around it on the same connection are read as PocketBase reads them."""
    gateway, prefix = _gateway_and_prefix(servers[tenant].gateway)
    title = "GET /x?a=<b> HTTP/1.1\r\n\r\n"
    body = json.dumps({"id": "keepalive000001", "title": title, "views": 7}).encode()
    chunked = json.dumps({"id": "keepalive000002", "title": title, "views": 8}).encode()
    host, _, port = gateway.removeprefix("http://").partition(":")
    requests = (
        b"GET " + prefix + RECORDS.encode() + b"?filter=(views>200) HTTP/1.1\r\nHost: h\r\n\r\n"
        + b"POST " + prefix + RECORDS.encode() + b"?fields=id,title HTTP/1.1\r\nHost: h\r\n"
        + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        + b"POST " + prefix + RECORDS.encode() + b"?x=<> HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunked):x}".encode() + b"\r\n" + chunked + b"\r\n0\r\n\r\n"
        + b"GET " + prefix + RECORDS.encode() + b"?filter=(views<8)&sort=views HTTP/1.1\r\nHost: h\r\n"
        + b"Connection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(requests)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    answers = read_responses(raw)
    assert [status for status, _ in answers] == [200, 200, 200, 200], raw[:2000]
    assert [item["id"] for item in json.loads(answers[0][1])["items"]] == ["post00000000002"]
    assert json.loads(answers[1][1]) == {"id": "keepalive000001", "title": title}
    chunked_record = json.loads(answers[2][1])
    assert (chunked_record["id"], chunked_record["title"], chunked_record["views"]) == ("keepalive000002", title, 8)
    assert [item["id"] for item in json.loads(answers[3][1])["items"]] == ["post00000000000", "keepalive000001"]
    for record_id in ("keepalive000001", "keepalive000002"):
        stored = httpx.get(f"{gateway}{prefix.decode()}{RECORDS}/{record_id}").json()
        assert stored["title"] == title
