"""The all-in-one's in-process hand-over (``InProcessQueue``, :mod:`pbfast.gateway.in_process`) through the
native data path's Python interface: a ``GatewayServer`` whose Python side is an RSGI app on an event loop
in this process for plain requests, and a stdlib server on the Unix socket for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pbfast._native import GatewayServer, InProcessQueue
from pbfast.config import Address
from pbfast.gateway.native import NativeFrontend
from pbfast.gateway.proxy import ProxyLimits
from pbfast.gateway.in_process import InProcessDispatcher
from pbfast.gateway.metrics import LATENCY_BUCKETS
from pbfast.http import HTTPProtocol, Scope, discard_unread_body
from pbfast.primitives import CircuitBreakers, RoutingTable
from test_gateway_native import _Echo, _h2_requests, _serve, _UnixServer

TOKEN = "cluster-token-in-process-0123456789"
CAPACITY = 2


class _App:
    """Echoes the scope and body it got as JSON (``/hold``: once ``release`` is set)."""

    def __init__(self) -> None:
        self.release: asyncio.Event | None = None
        self.seen: list[str] = []
        self.gone: list[str] = []
        self.queue: InProcessQueue | None = None
        self.unsent_after_hold: list[int] = []  # answers queued and not sent yet, after each /hold's answer

    async def __call__(self, scope: Scope, proto: HTTPProtocol) -> None:
        self.seen.append(scope.path)
        if scope.path.endswith("/watch"):  # waits for its client to go, as a queued bcrypt check does
            await asyncio.wait_for(proto.client_disconnect(), 30)  # type: ignore[attr-defined]
            self.gone.append(scope.path)
            return
        if scope.path.endswith("/hold"):
            assert self.release is not None
            await self.release.wait()
        if scope.path.endswith("/fail"):
            raise RuntimeError("a handler bug")
        if scope.path.endswith("/from-thread"):  # as a heavy tenant's answer leaves from its background thread
            def answer() -> None:
                time.sleep(0.2)  # the loop is waiting in its selector by then
                proto.response_bytes(200, [], b"from a thread")

            answering = threading.Thread(target=answer)
            answering.start()
            await asyncio.sleep(2)  # nothing wakes the loop meanwhile: the answer must not wait for it
            answering.join()
            return
        body = await proto()
        await discard_unread_body(proto)  # what the gateway's app does after answering: nothing left here
        payload = {"server": "in-process", "method": scope.method, "path": scope.path, "query": scope.query_string,
                   "client": scope.client, "headers": [[k, v] for k, v in scope.headers.items()],
                   "body": body.decode(), "version": getattr(scope, "http_version", None)}
        proto.response_bytes(201, [("content-type", "application/json"), ("x-pbfast-internal", "dropped"),
                                   ("x-answer", "1")], orjson.dumps(payload))
        if scope.path.endswith("/hold") and self.queue is not None:
            self.unsent_after_hold.append(self.queue.pending_answers)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Any]]:
    socket_path = tmp_path_factory.mktemp("in-process") / "py.sock"
    fallback = _serve(_UnixServer(str(socket_path), _Echo), "python")
    routes = RoutingTable("pb.test")
    routes.replace([("acme", "local://n1", 1, True)], 1)
    queue = InProcessQueue(CAPACITY)
    server = GatewayServer(routes, CircuitBreakers(2, 30.0, 1), TOKEN, socket_path,
                           latency_buckets=list(LATENCY_BUCKETS), threads=1, in_process=queue)
    app = _App()
    app.queue = queue
    loop.call_soon_threadsafe(lambda: setattr(app, "release", asyncio.Event()))
    dispatcher = InProcessDispatcher(queue, app)
    loop.call_soon_threadsafe(dispatcher.attach, loop)
    port = server.start("127.0.0.1", 0)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "app": app, "queue": queue, "loop": loop,
               "dispatcher": dispatcher}
    finally:
        server.stop(0.5)
        asyncio.run_coroutine_threadsafe(dispatcher.close(0.5), loop).result(5)
        fallback.shutdown()
        fallback.server_close()


def _headers(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name, []).append(value)
    return out


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_plain_request_reaches_the_loop_as_the_sockets_hand_over_had_it(rig: dict[str, Any]) -> None:
    answer = httpx.post(f"{rig['url']}/t/acme/api/a%2Fb%20c?x=%20y&z", content=b'{"a":1}',
                        headers={"x-pbfast-client": "forged", "x-request-id": "rid-1", "Cookie": "k=v"})
    assert answer.status_code == 201, answer.text
    echo = answer.json()
    assert echo["server"] == "in-process" and echo["method"] == "POST" and echo["version"] == "1.1"
    assert echo["path"] == "/t/acme/api/a/b c" and echo["query"] == "x=%20y&z"
    headers = _headers(echo)
    # the raw path for the node's router, the client's address (never the client's own x-pbfast-*), the
    # body's length as hyper framed it over the socket, the request id
    assert headers["x-pbfast-path"] == ["/t/acme/api/a%2Fb%20c"]
    assert headers["x-pbfast-client"] == ["127.0.0.1"] and echo["client"] == "127.0.0.1:0"
    assert headers["content-length"] == ["7"] and echo["body"] == '{"a":1}'
    assert headers["x-request-id"] == ["rid-1"] and headers["cookie"] == ["k=v"]
    # the answer: the app's headers but the cluster's internal ones, and the request id
    assert answer.headers["x-answer"] == "1" and "x-pbfast-internal" not in answer.headers
    assert answer.headers["x-request-id"] == "rid-1" and "server" not in answer.headers


def test_streams_files_and_streamed_bodies_take_the_socket(rig: dict[str, Any]) -> None:
    url = rig["url"]
    assert httpx.get(f"{url}/t/acme/api/realtime").json()["server"] == "python"
    assert httpx.get(f"{url}/t/acme/api/files/posts/r1/a.png").json()["server"] == "python"
    assert httpx.get(f"{url}/t/acme/_/").json()["server"] == "python"
    streamed = httpx.post(f"{url}/t/acme/api/x", content=iter([b"ab", b"cd"]))  # chunked: not read whole
    assert streamed.status_code == 200, streamed.text
    assert (streamed.json()["server"], streamed.json()["body"]) == ("python", "abcd")
    assert httpx.post(f"{url}/t/acme/api/realtime", json={}).json()["server"] == "in-process"
    assert httpx.get(f"{url}/t/acme/api/files/token").json()["server"] == "python"  # GET of /api/files/


def test_a_failed_handler_is_a_pocketbase_500_and_the_loop_goes_on(rig: dict[str, Any]) -> None:
    answer = httpx.get(f"{rig['url']}/t/acme/api/fail")
    assert answer.status_code == 500
    assert answer.json() == {"status": 500, "message": "Something went wrong while processing your request.",
                             "data": {}}
    assert httpx.get(f"{rig['url']}/t/acme/api/ok").status_code == 201


def test_a_full_queue_answers_503_and_a_gone_client_is_dropped(rig: dict[str, Any]) -> None:
    url, app, queue, loop = rig["url"], rig["app"], rig["queue"], rig["loop"]
    results: list[int] = []

    def held() -> None:
        results.append(httpx.get(f"{url}/t/acme/api/hold", timeout=30).status_code)

    threads = [threading.Thread(target=held) for _ in range(CAPACITY)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while queue.outstanding < CAPACITY:
        assert time.monotonic() < deadline, queue.outstanding
        time.sleep(0.01)
    busy = httpx.get(f"{url}/t/acme/api/more")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json() == {"status": 503, "message": "The node is busy; retry shortly.", "data": {}}
    loop.call_soon_threadsafe(app.release.set)
    for thread in threads:
        thread.join(30)
    assert results == [201] * CAPACITY
    assert queue.outstanding == 0
    # Released in one iteration of the loop, both answered in it: neither was sent (nothing woken) until the
    # flush after it, which sent both.
    assert app.unsent_after_hold == [1, 2] and queue.pending_answers == 0
    loop.call_soon_threadsafe(lambda: setattr(app, "release", asyncio.Event()))

    # A client that goes away while its request waits: the place is given back, the loop never runs it.
    loop.call_soon_threadsafe(loop.remove_reader, queue.fd)  # the loop takes nothing for now
    seen = len(app.seen)
    with socket.create_connection(("127.0.0.1", rig["port"]), timeout=10) as conn:
        conn.sendall(b"GET /t/acme/api/gone HTTP/1.1\r\nHost: x\r\n\r\n")
        while queue.outstanding < 1:
            assert time.monotonic() < deadline + 20
            time.sleep(0.01)
    while queue.abandoned < 1:  # the gateway has seen the client leave (at once on a quiet machine, not always)
        assert time.monotonic() < deadline + 30
        time.sleep(0.01)
    loop.call_soon_threadsafe(rig["dispatcher"].attach, loop)
    while queue.outstanding:
        assert time.monotonic() < deadline + 40
        time.sleep(0.01)
    assert httpx.get(f"{url}/t/acme/api/after").status_code == 201
    assert "/t/acme/api/gone" not in app.seen[seen:] and rig["dispatcher"].dropped == 1


def test_raw_bytes_in_the_target_are_read_as_pocketbase_reads_them(rig: dict[str, Any]) -> None:
    answer = _raw(rig["port"], b'GET /t/acme/api/<a>"\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), answer
    echo = orjson.loads(body)
    assert echo["path"] == '/t/acme/api/<a>"\ufffd'
    assert _headers(echo)["x-pbfast-path"] == ["/t/acme/api/%3Ca%3E%22%FF"]


def test_an_http2_request_keeps_its_host_from_the_authority(rig: dict[str, Any]) -> None:
    """h2c carries the host as ``:authority``: the app routes a host-form tenant by the ``host`` header, which the
    socket's hand-over always had."""
    host_form, path_form = _h2_requests(rig["port"], [("GET", "acme.pb.test", "/api/y", [], b""),
                                                      ("POST", "gw.test", "/t/acme/api/x", [("content-length", "2")],
                                                       b"hi")])
    assert (host_form["server"], host_form["path"]) == ("in-process", "/api/y")
    assert _headers(host_form)["host"] == ["acme.pb.test"]
    assert (path_form["server"], path_form["body"]) == ("in-process", "hi")
    assert _headers(path_form)["host"] == ["gw.test"]


def test_a_handler_sees_its_client_go(rig: dict[str, Any]) -> None:
    """``client_disconnect`` as granian's: done when the client closed its connection (a password check waiting in
    line for a gone client is skipped)."""
    app, queue = rig["app"], rig["queue"]
    with socket.create_connection(("127.0.0.1", rig["port"]), timeout=10) as conn:
        conn.sendall(b"GET /t/acme/api/watch HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 20
        while "/t/acme/api/watch" not in app.seen:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    while "/t/acme/api/watch" not in app.gone:
        assert time.monotonic() < deadline + 20, app.gone
        time.sleep(0.01)
    while queue.outstanding:
        assert time.monotonic() < deadline + 20
        time.sleep(0.01)


def test_percent_encoded_streams_and_files_take_the_socket_too(rig: dict[str, Any]) -> None:
    """The app reads the path decoded: ``/api/real%74ime`` is the realtime stream (buffered in process it would never
    be answered and keep its place), ``/%61pi/files/`` a download (read whole into memory in process)."""
    url = rig["url"]
    assert httpx.get(f"{url}/t/acme/api/real%74ime").json()["server"] == "python"
    assert httpx.get(f"{url}/t/acme/%61pi/files/posts/r1/a.png").json()["server"] == "python"
    assert httpx.head(f"{url}/t/acme/api%2Ffiles/posts/r1/a.png").status_code == 501  # the socket's stub: no HEAD
    assert httpx.get(f"{url}/t/acme/%5F/").json()["server"] == "python"
    assert httpx.get(f"{url}/t/acme/api/collections/p%C3%A9/records").json()["server"] == "in-process"


def test_stopping_with_a_slow_request_in_flight_takes_one_grace_period(tmp_path: Path) -> None:
    """``NativeFrontend.stop``: the native drain waits for the connection of an in-process request that does not
    end, and the queue's close waits for its handler: both share the one grace period (they were one after the
    other: twice it). The handler is cancelled at its end."""
    grace = 1.0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    routes = RoutingTable("pb.test")
    routes.replace([("acme", "local://n1", 1, True)], 1)
    frontend = NativeFrontend(Address("127.0.0.1", port), routes, CircuitBreakers(2, 30.0, 1), TOKEN, ProxyLimits(),
                              threads=1, move_wait_seconds=1.0, in_process_capacity=CAPACITY)
    socket_side = socket.socket(socket.AF_UNIX)  # start() waits for the Python side's socket; nothing takes it here
    socket_side.bind(str(frontend.socket_path))
    socket_side.listen()
    started, cancelled = threading.Event(), threading.Event()

    async def slow(scope: Scope, proto: HTTPProtocol) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def client() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/t/acme/api/slow", timeout=30)

    async def scenario() -> float:
        frontend.dispatch_to(slow)
        frontend.attach(asyncio.get_running_loop())
        await frontend.start()
        waiting = asyncio.create_task(asyncio.to_thread(client))
        while not started.is_set():  # noqa: ASYNC110 - set from the handler, on this loop
            await asyncio.sleep(0.01)
        stopping = time.monotonic()
        await frontend.stop(grace)
        took = time.monotonic() - stopping
        await waiting
        return took

    try:
        took = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        socket_side.close()
        frontend.close()
    assert grace * 0.9 <= took < grace * 1.5, f"stopping took {took:.2f} s with a {grace} s grace period"
    assert cancelled.is_set()


class _HeaderView:
    """Answers how the scope's headers read (every accessor the handlers use) for a header sent twice, with
    obs-text (bytes >= 0x80) in its first value, and for one with only obs-text."""

    async def __call__(self, scope: Scope, proto: HTTPProtocol) -> None:
        headers = scope.headers
        view = {"items": [[k, v] for k, v in headers.items() if k.startswith("x-t-")],
                "keys": [k for k in headers.keys() if k.startswith("x-t-")],  # noqa: SIM118 - the keys() method
                "values": [v for v in headers.values() if v.startswith("t-")],
                "get": [headers.get("x-t-name"), headers.get("x-t-name", "default"), headers.get("x-t-latin", "d")],
                "getitem": [headers["x-t-name"], headers["x-t-latin"]],
                "get_all": [headers.get_all("x-t-name"), headers.get_all("x-t-latin")],  # type: ignore[attr-defined]
                "in": ["x-t-latin" in headers, "X-T-Name" in headers], "len": len(headers),
                "iter": [k for k in headers if k.startswith("x-t-")], "type": type(headers).__name__}
        proto.response_bytes(200, [("content-type", "application/json")], orjson.dumps(view))


def test_obs_text_header_values_read_as_granian_reads_them_on_the_socket(tmp_path: Path,
                                                                        loop: asyncio.AbstractEventLoop) -> None:
    """A real request through both hand-overs, granian on the Unix socket: a header value with bytes >= 0x80 (a
    UTF-8 file name, Latin-1) reads the same in process as granian delivers it (granian 2.8 leaves such values
    out of ``items``/``values``/``get_all``, ``get`` gives the default, ``[]`` an empty string; the name stays)."""
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.server.embed import Server as EmbeddedServer  # noqa: PLC0415

    socket_path = tmp_path / "py.sock"
    app = _HeaderView()
    granian = EmbeddedServer(app, uds=socket_path, interface=Interfaces.RSGI, http=HTTPModes.http1, websockets=False,
                             log_enabled=False)
    serving = asyncio.run_coroutine_threadsafe(granian.serve(), loop)
    routes = RoutingTable("pb.test")
    routes.replace([("acme", "local://n1", 1, True)], 1)
    queue = InProcessQueue(CAPACITY)
    server = GatewayServer(routes, CircuitBreakers(2, 30.0, 1), TOKEN, socket_path,
                           latency_buckets=list(LATENCY_BUCKETS), threads=1, in_process=queue)
    dispatcher = InProcessDispatcher(queue, app)
    loop.call_soon_threadsafe(dispatcher.attach, loop)
    port = server.start("127.0.0.1", 0)
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        views = []
        for path, took in ((b"/t/acme/api/collections/x/records", "in-process"),
                           (b"/t/acme/api/files/posts/r1/a.png", "socket")):
            answer = _raw(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-T-Name: caf\xc3\xa9.txt\r\n"
                          b"X-T-Name: t-plain\r\nX-T-Latin: \xe9t\xe9\r\nX-T-Ok: t-fine\r\nConnection: close\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), (took, answer)
            views.append(orjson.loads(body))
        in_process, on_socket = views
        assert (in_process.pop("type"), on_socket.pop("type")) == ("HandedHeaders", "RSGIHeaders")  # granian's own
        assert in_process == on_socket
        assert on_socket["items"] == [["x-t-name", "t-plain"], ["x-t-ok", "t-fine"]]
        assert on_socket["get"] == [None, "default", "d"] and on_socket["getitem"] == ["", ""]
        assert on_socket["keys"] == ["x-t-name", "x-t-latin", "x-t-ok"] and on_socket["in"] == [True, True]
        assert dispatcher.stats()["in_service"] == 0 and queue.outstanding == 0
    finally:
        server.stop(0.5)
        asyncio.run_coroutine_threadsafe(dispatcher.close(0.5), loop).result(5)
        loop.call_soon_threadsafe(granian.stop)  # type: ignore[no-untyped-call]
        serving.result(10)


def test_an_answer_sent_from_another_thread_goes_out_at_once(rig: dict[str, Any]) -> None:
    """A heavy tenant's answer is sent from its database thread (pbfast.pocketbase.api): with another request in
    service, it must not wait for a flush that only the loop's thread may schedule."""
    url, app, loop = rig["url"], rig["app"], rig["loop"]
    held = threading.Thread(target=lambda: httpx.get(f"{url}/t/acme/api/hold", timeout=30))
    held.start()
    try:
        deadline = time.monotonic() + 10
        while rig["dispatcher"].in_service() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        answer = httpx.get(f"{url}/t/acme/api/from-thread", timeout=5)
        assert (answer.status_code, answer.content) == (200, b"from a thread")
        assert time.monotonic() - started < 1.5, "the answer waited for the loop"
    finally:
        loop.call_soon_threadsafe(app.release.set)
        held.join(30)
        loop.call_soon_threadsafe(lambda: setattr(app, "release", asyncio.Event()))
