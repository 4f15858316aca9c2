"""The gateway's native data path (``pbfast._native.GatewayServer``) through its Python interface.

Real sockets on loopback: a stdlib HTTP server plays a tenant node (TCP), another the gateway's Python side
(Unix socket); the routing table and the breakers are the native ones the gateway shares with Python.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pbfast._native import GatewayServer
from pbfast.config import Address
from pbfast.gateway.metrics import LATENCY_BUCKETS
from pbfast.gateway.native import NativeFrontend
from pbfast.gateway.proxy import ProxyLimits
from pbfast.logs import current_request_id
from pbfast.primitives import CircuitBreakers, RoutingTable

TOKEN = "cluster-token-native-0123456789"


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers what it received as JSON; ``/t/{id}/moved`` answers like a node that moved the tenant on
    unless the epoch is at least 2."""

    protocol_version = "HTTP/1.1"
    server_name = "node"

    def _answer(self) -> None:
        if "/hangup" in self.path and self._hang_up():
            return
        body = self._body()
        if self.path.endswith("/moved") and int(self.headers.get("x-pbfast-epoch", "0")) < 2:
            payload = b'{"status":503,"message":"The tenant has moved; retry.","data":{}}'
            self.send_response(503)
            self.send_header("x-pbfast-moved", "1")
        else:
            payload = json.dumps({"server": self.server.name, "method": self.command,  # type: ignore[attr-defined]
                                  "path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()],
                                  "body": body.decode()}).encode()
            self.send_response(200)
        if self.path.endswith("/stall"):
            time.sleep(2)
        self.send_header("content-type", "application/json")
        self.send_header("x-pbfast-internal", "node-only")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if self.path.endswith("/linger"):  # like a keep-alive timeout: close the idle connection soon after
            self.wfile.flush()
            time.sleep(0.2)
            self.close_connection = True

    def _body(self) -> bytes:
        """The whole request body, chunked or not: one left unread would be parsed as the next request on
        this kept-alive connection (a 400 and a hang-up, racing the gateway's write of the body's end)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()  # the chunk's CRLF
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, up to the blank line
                pass
            return body
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _hang_up(self) -> bool:
        """Close the connection without an answer (``/hangup-once``: the first time for a request id)."""
        seen: set[str | None] = self.server.hung_up  # type: ignore[attr-defined]
        request_id = self.headers.get("x-request-id")
        if self.path.endswith("/hangup-once") and request_id in seen:
            return False
        seen.add(request_id)
        self.close_connection = True
        return True

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


class _TcpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the gateway hung up on a stalled answer: expected in these tests


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port) client address


def _serve(server: socketserver.BaseServer, name: str) -> socketserver.BaseServer:
    server.name = name  # type: ignore[attr-defined]
    server.hung_up = set()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    node_a = _serve(_TcpServer(("127.0.0.1", 0), _Echo), "a")
    node_b = _serve(_TcpServer(("127.0.0.1", 0), _Echo), "b")
    fallback_path = tmp_path / "py.sock"
    fallback = _serve(_UnixServer(str(fallback_path), _Echo), "python")
    routes = RoutingTable("pb.test")
    breakers = CircuitBreakers(2, 30.0, 1)
    address_a = f"http://127.0.0.1:{node_a.server_address[1]}"  # type: ignore[index]
    address_b = f"http://127.0.0.1:{node_b.server_address[1]}"  # type: ignore[index]
    routes.replace([("acme", address_a, 1, True), ("moving", address_a, 1, False)], 1)
    server = GatewayServer(routes, breakers, TOKEN, fallback_path, latency_buckets=list(LATENCY_BUCKETS),
                           connect_timeout_seconds=0.5, read_timeout_seconds=5.0, move_wait_seconds=2.0, threads=2,
                           access_log=True)
    port = server.start("127.0.0.1", 0)
    try:
        yield {"server": server, "url": f"http://127.0.0.1:{port}", "routes": routes, "breakers": breakers,
               "a": address_a, "b": address_b, "port": port}
    finally:
        server.stop(0.5)
        for s in (node_a, node_b, fallback):
            s.shutdown()
            s.server_close()


def _headers(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name, []).append(value)
    return out


def test_forwards_active_tenants_and_hands_over_the_rest(rig: dict[str, Any]) -> None:
    url = rig["url"]
    with httpx.Client() as client:
        forged = {"x-pbfast-client": "6.6.6.6", "x-pbfast-cluster-token": "forged", "x-pbfast-epoch": "9"}
        answer = client.post(f"{url}/t/acme/api/x?y=%2F", content=b"hello", headers=forged)
        echo = answer.json()
        assert answer.status_code == 200 and echo["server"] == "a", echo
        assert "x-pbfast-internal" not in answer.headers  # the cluster's headers stay inside
        assert echo["path"] == "/t/acme/api/x?y=%2F" and echo["body"] == "hello"
        received = _headers(echo)
        assert received["x-pbfast-cluster-token"] == [TOKEN] and received["x-pbfast-epoch"] == ["1"]
        assert received["x-forwarded-for"] == ["127.0.0.1"] and "x-pbfast-client" not in received
        # Host form: the path is forwarded under the tenant's prefix.
        echo = client.get(f"{url}/api/y", headers={"host": "acme.pb.test"}).json()
        assert echo["server"] == "a" and echo["path"] == "/t/acme/api/y"
        # Unknown, inactive and tenant-less requests go to the Python side, with the client's address only.
        for path in ("/t/nobody/api/x", "/t/moving/api/x", "/api/health"):
            echo = client.get(f"{url}{path}", headers=forged).json()
            assert echo["server"] == "python" and echo["path"] == path, echo
            received = _headers(echo)
            assert received["x-pbfast-client"] == ["127.0.0.1"] and "x-pbfast-cluster-token" not in received
        # No tunnels.
        assert client.request("CONNECT", f"{url}/t/acme/api/x").status_code == 405
        # An invalid tenant id is answered here.
        invalid = client.get(f"{url}/t/Not_Valid/api/x")
        assert invalid.status_code == 400 and set(invalid.json()) == {"status", "message", "data"}
    stats = rig["server"].stats()
    assert stats["requests"][1] == 2 and stats["requests"][3] == 2  # 2xx forwarded, 4xx answered
    assert stats["handed_over"] == 3 and sum(stats["buckets"]) == 4 and stats["bounds"] == list(LATENCY_BUCKETS)
    # The access log has every request, handed over or not, in order.
    entries, dropped = rig["server"].drain_access_log()
    assert dropped == 0
    assert [(c, m, t, s) for c, m, t, s, _, _ in entries] == [
        ("127.0.0.1", "POST", "/t/acme/api/x?y=%2F", 200), ("127.0.0.1", "GET", "/api/y", 200),
        ("127.0.0.1", "GET", "/t/nobody/api/x", 200), ("127.0.0.1", "GET", "/t/moving/api/x", 200),
        ("127.0.0.1", "GET", "/api/health", 200), ("127.0.0.1", "CONNECT", "/t/acme/api/x", 405),
        ("127.0.0.1", "GET", "/t/Not_Valid/api/x", 400)]
    assert all(0 < seconds < 5 and len(request_id) == 32 for *_, seconds, request_id in entries)
    assert rig["server"].drain_access_log() == ([], 0)


def test_connections_closed_by_the_node_are_not_reused(rig: dict[str, Any]) -> None:
    """A node that closes idle keep-alive connections (its timeout, a restart) costs no failed request,
    not even a POST, which is never sent twice."""
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{rig['url']}/t/acme/linger").status_code == 200
            time.sleep(0.5)  # the node has closed the gateway's pooled connection by now
            answer = client.post(f"{rig['url']}/t/acme/api/x", content=b"once")
            assert answer.status_code == 200 and answer.json()["body"] == "once", answer.text
    assert rig["server"].stats()["upstream_errors"]["reset"] == 0


def test_a_hand_over_the_python_side_hung_up_on_is_sent_again_or_a_logged_502(rig: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    """The Python side closed the connection without answering: it did not read the request (granian answers
    every request it reads; it closes keep-alive connections between requests), so the request, its body read
    whole, goes once more on a new connection. A second close is a real failure: 502, logged with the
    request's id, never a 503 "not ready". Likewise a Python side that takes no connection (after retrying
    for the connect timeout)."""
    server: GatewayServer = rig["server"]
    with httpx.Client() as client:
        once = client.post(f"{rig['url']}/t/nobody/hangup-once", content=b"again")
        assert once.status_code == 200 and once.json()["body"] == "again", once.text
        always = client.post(f"{rig['url']}/t/nobody/hangup", content=b"x")
        assert always.status_code == 502, always.text
        assert always.json() == {"status": 502, "message": "The gateway's Python side closed the connection.",
                                 "data": {}}
    warnings, dropped = server.drain_warnings()
    assert dropped == 0
    assert [(message.split(":")[0], request_id) for message, request_id in warnings] == [
        ("hand-over to the Python side failed, sent again", once.headers["x-request-id"]),
        ("hand-over to the Python side failed, sent again", always.headers["x-request-id"]),
        ("hand-over to the Python side failed, answered 502", always.headers["x-request-id"])]
    assert server.drain_warnings() == ([], 0)
    stats = server.stats()
    assert stats["retries"]["hand_over"] == 2 and stats["upstream_errors"]["hand_over"] == 1

    nobody_listens = GatewayServer(rig["routes"], rig["breakers"], TOKEN, tmp_path / "none.sock",
                                   latency_buckets=list(LATENCY_BUCKETS), connect_timeout_seconds=0.3)
    port = nobody_listens.start("127.0.0.1", 0)
    try:
        started = time.monotonic()
        answer = httpx.get(f"http://127.0.0.1:{port}/api/health")
        assert answer.status_code == 502 and answer.json()["message"] == "The gateway's Python side is unreachable."
        assert time.monotonic() - started < 2
        warnings, _ = nobody_listens.drain_warnings()
        assert warnings[-1][0].startswith("hand-over to the Python side failed, answered 502: client error (Connect)")
    finally:
        nobody_listens.stop(0.1)


def test_moved_answer_waits_for_the_new_route(rig: dict[str, Any]) -> None:
    routes: RoutingTable = rig["routes"]

    def move() -> None:
        time.sleep(0.3)
        routes.patch([("acme", rig["b"], 2, True)], [], 2)

    threading.Thread(target=move).start()
    started = time.monotonic()
    answer = httpx.post(f"{rig['url']}/t/acme/moved", content=b"{}", timeout=5)
    assert answer.status_code == 200 and answer.json()["server"] == "b"
    assert 0.25 < time.monotonic() - started < 2.0
    assert rig["server"].stats()["retries"]["moved"] == 1


@pytest.mark.exclusive
def test_dead_node_opens_the_breaker(rig: dict[str, Any]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    rig["routes"].patch([("acme", dead, 3, True)], [], 3)
    statuses = [httpx.get(f"{rig['url']}/t/acme/api/x").status_code for _ in range(2)]
    assert statuses == [502, 502]
    started = time.monotonic()
    refused = httpx.get(f"{rig['url']}/t/acme/api/x")
    assert refused.status_code == 503 and time.monotonic() - started < 0.1
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["status"] == 503
    assert rig["breakers"].state(dead) == "open"
    # The route moves meanwhile: a replayable request gets its second chance on the new node.
    rig["routes"].patch([("acme", rig["b"], 4, True)], [], 4)
    assert httpx.get(f"{rig['url']}/t/acme/api/x").json()["server"] == "b"
    errors = rig["server"].stats()["upstream_errors"]
    assert errors["connect"] == 2 and errors["breaker_open"] == 1


def test_lifecycle_and_arguments(rig: dict[str, Any], tmp_path: Path) -> None:
    server: GatewayServer = rig["server"]
    assert server.running
    with pytest.raises(RuntimeError):
        server.start("127.0.0.1", 0)
    server.stop(0.1)
    assert not server.running
    server.stop(0.1)  # a no-op
    port = server.start("127.0.0.1", 0)
    assert httpx.get(f"http://127.0.0.1:{port}/t/Bad!/x").status_code == 400
    # A port someone else listens on (without SO_REUSEPORT) cannot be taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = GatewayServer(rig["routes"], rig["breakers"], TOKEN, tmp_path / "x.sock",
                              latency_buckets=list(LATENCY_BUCKETS))
        with pytest.raises(OSError, match="cannot listen"):
            other.start("127.0.0.1", taken.getsockname()[1])
    for bad in ({"threads": 0}, {"read_timeout_seconds": 0.0}, {"max_header_bytes": 10}):
        with pytest.raises(ValueError):
            GatewayServer(rig["routes"], rig["breakers"], TOKEN, tmp_path / "x.sock",
                          latency_buckets=list(LATENCY_BUCKETS), **bad)
    with pytest.raises(ValueError):
        GatewayServer(rig["routes"], rig["breakers"], "bad\ntoken", tmp_path / "x.sock",
                      latency_buckets=list(LATENCY_BUCKETS))


def test_silent_and_slow_clients_are_cut_off(rig: dict[str, Any], tmp_path: Path) -> None:
    server = GatewayServer(rig["routes"], rig["breakers"], TOKEN, tmp_path / "x.sock",
                           latency_buckets=list(LATENCY_BUCKETS), client_idle_seconds=0.5)
    port = server.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            started = time.monotonic()
            assert silent.recv(100) == b""  # closed by the gateway
            assert 0.4 < time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"POST /t/acme/api/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
            answer = slow.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert json.loads(body)["status"] == 408
    finally:
        server.stop(0.1)


def test_breaker_counts_only_the_node_and_never_loses_a_probe(rig: dict[str, Any], tmp_path: Path) -> None:
    """A node's breaker opens on connect failures only: a slow tenant or a client that gives up does not
    shut the node's other tenants out, and an abandoned half-open probe is given back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    routes = RoutingTable()
    routes.replace([("acme", address, 1, True), ("other", address, 1, True)], 1)
    breakers = CircuitBreakers(2, 0.3, 1)
    server = GatewayServer(routes, breakers, TOKEN, tmp_path / "x.sock", latency_buckets=list(LATENCY_BUCKETS),
                           read_timeout_seconds=0.5)
    url = f"http://127.0.0.1:{server.start('127.0.0.1', 0)}"
    node = None
    try:
        assert [httpx.get(f"{url}/t/acme/x").status_code for _ in range(2)] == [502, 502]
        assert breakers.state(address) == "open"
        node = _serve(_TcpServer(("127.0.0.1", port), _Echo), "a")  # the node comes back
        time.sleep(0.4)  # past the cool-down: the next request is the half-open probe
        with pytest.raises(httpx.ReadTimeout):  # ... and its client gives up while the node stalls
            httpx.get(f"{url}/t/acme/stall", timeout=0.3)
        time.sleep(0.1)
        assert httpx.get(f"{url}/t/other/x").status_code == 200  # the probe slot came back
        assert breakers.state(address) == "closed"
        # A tenant whose requests time out (504) does not open the breaker for the node's other tenants.
        assert [httpx.get(f"{url}/t/acme/stall").status_code for _ in range(3)] == [504, 504, 504]
        assert breakers.state(address) == "closed"
        assert httpx.get(f"{url}/t/other/x").status_code == 200
    finally:
        server.stop(0.1)
        if node is not None:
            node.shutdown()
            node.server_close()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 4, 6, 7
END_STREAM, ACK, END_HEADERS = 1, 1, 4


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack(headers: list[tuple[str, str]]) -> bytes:
    """HPACK "literal without indexing, new name" fields (names and values under 127 bytes)."""
    return b"".join(b"\x00" + bytes([len(k)]) + k.encode() + bytes([len(v)]) + v.encode() for k, v in headers)


def _h2_frames(conn: socket.socket) -> Iterator[tuple[int, int, int, bytes]]:
    """``(kind, flags, stream, payload)`` of each frame the server sends, until it closes; acknowledges its
    settings and pings, as every client does."""
    buffer = b""
    while chunk := conn.recv(65536):
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags, payload = buffer[3], buffer[4], buffer[9:9 + length]
            if kind in (H2_SETTINGS, H2_PING) and not flags & ACK:
                conn.sendall(_h2_frame(kind, ACK, 0, payload if kind == H2_PING else b""))
            yield kind, flags, int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF, payload
            buffer = buffer[9 + length:]


def _h2_requests(port: int, requests: list[tuple[str, str, str, list[tuple[str, str]], bytes]]) -> list[Any]:
    """Send ``(method, authority, path, headers, body)`` requests on one h2c connection (prior knowledge, as
    ``curl --http2-prior-knowledge`` does); the JSON answers, in order."""
    out = H2_PREFACE + _h2_frame(H2_SETTINGS, 0, 0)
    for index, (method, authority, path, headers, body) in enumerate(requests):
        block = _hpack([(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
                        *headers])
        out += _h2_frame(H2_HEADERS, END_HEADERS | (0 if body else END_STREAM), 2 * index + 1, block)
        if body:
            out += _h2_frame(H2_DATA, END_STREAM, 2 * index + 1, body)
    data: dict[int, bytes] = {}
    ended: set[int] = set()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(out)
        for kind, flags, stream, payload in _h2_frames(conn):
            if kind == H2_DATA:
                data[stream] = data.get(stream, b"") + payload
            if kind in (H2_DATA, H2_HEADERS) and flags & END_STREAM:
                ended.add(stream)
                if len(ended) == len(requests):
                    break
    return [json.loads(data[2 * index + 1]) for index in range(len(requests))]


def test_http2_with_prior_knowledge_is_served_like_http1(rig: dict[str, Any]) -> None:
    """h2c, which the all-in-one's clients had from granian before the native listener took its port: the
    requests go on over HTTP/1.1, to the node or to the Python side, with the host from ``:authority`` and
    the cookie fields joined into one (RFC 9113 8.2.3)."""
    node, host_form, python = _h2_requests(rig["port"], [
        ("POST", "gw.test", "/t/acme/api/x?y=1", [("content-length", "5"), ("cookie", "a=1"), ("cookie", "b=2")],
         b"hello"),
        ("GET", "acme.pb.test", "/api/y", [], b""),
        ("GET", "gw.test", "/t/nobody/api/z", [("cookie", "c=3")], b""),
    ])
    assert (node["server"], node["method"], node["path"], node["body"]) == ("a", "POST", "/t/acme/api/x?y=1", "hello")
    assert _headers(node)["cookie"] == ["a=1; b=2"] and _headers(node)["x-pbfast-epoch"] == ["1"]
    assert (host_form["server"], host_form["path"]) == ("a", "/t/acme/api/y")
    assert (python["server"], python["path"]) == ("python", "/t/nobody/api/z")
    assert _headers(python)["host"] == ["gw.test"] and _headers(python)["cookie"] == ["c=3"]


def test_idle_http2_connections_are_closed_with_a_goaway(rig: dict[str, Any], tmp_path: Path) -> None:
    """An h2c connection with no request in flight for the client idle time (up to twice that) is closed,
    as an idle HTTP/1 keep-alive connection is; one whose request takes longer is not."""
    server = GatewayServer(rig["routes"], rig["breakers"], TOKEN, tmp_path / "x.sock",
                           latency_buckets=list(LATENCY_BUCKETS), client_idle_seconds=0.3)
    port = server.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.sendall(H2_PREFACE + _h2_frame(H2_SETTINGS, 0, 0))
            started = time.monotonic()
            kinds = [kind for kind, *_ in _h2_frames(idle)]
            assert H2_GOAWAY in kinds and 0.25 < time.monotonic() - started < 3, kinds
        stalled = _h2_requests(port, [("GET", "gw.test", "/t/acme/stall", [], b"")])  # the node takes 2 s
        assert stalled[0]["server"] == "a"
    finally:
        server.stop(0.1)


class _Lines(logging.Handler):
    """The gateway's log records as ``(level, message up to its first colon, request id)``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[str, str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage().split(":")[0], current_request_id.get()))


def test_native_warnings_reach_the_log_at_warn_with_the_request_id(tmp_path: Path) -> None:
    """Through NativeFrontend, as pbfast serve runs it: a Python side that hangs up on every request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    frontend = NativeFrontend(Address("127.0.0.1", port), RoutingTable("pb.test"), CircuitBreakers(2, 30.0, 1), TOKEN,
                              ProxyLimits(), threads=1, move_wait_seconds=1.0)
    hang_up = socket.socket(socket.AF_UNIX)
    hang_up.bind(str(frontend.socket_path))
    hang_up.listen()

    def close_each() -> None:
        while True:
            try:
                conn, _ = hang_up.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        asyncio.run(frontend.start())
        answer = httpx.get(f"http://127.0.0.1:{port}/api/health", headers={"x-request-id": "warn-test-1"})
        assert answer.status_code == 502 and answer.headers["x-request-id"] == "warn-test-1"
        lines = _Lines()
        logger = logging.getLogger("pbfast.Gateway")
        logger.addHandler(lines)
        try:
            frontend.write_logs()
        finally:
            logger.removeHandler(lines)
        assert lines.lines == [("WARNING", "hand-over to the Python side failed, sent again", "warn-test-1"),
                         ("WARNING", "hand-over to the Python side failed, answered 502", "warn-test-1")]
    finally:
        frontend.server.stop(0.1)
        hang_up.close()
        frontend.close()
