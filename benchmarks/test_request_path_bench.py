"""One tenant request through a tenant node's own layers, in-process (issue 14): a real
:class:`TenantNodeApp` (its routes, ownership, pool, database threads, the tenant's PocketBase API on a real
SQLite database with the benchmark collection's 10,000 records) called with RSGI scope and protocol objects
as granian passes them, without the network and granian around it. What it times is the Python (and SQLite)
work of one request that pbfast itself adds: view by id, the same view with a superuser's token, list
(``perPage=20&sort=-created&filter=(num>=5000)``), create and a user's ``auth-refresh``.

``python3 -m pytest benchmarks/test_request_path_bench.py --benchmark-enable -q`` (pytest-benchmark: each
round is :data:`BATCH` requests, one after another, on the node's event loop; the time is the CPU time of
the whole process, every thread, so the CPU per request is the mean / BATCH, a tenth of the batch for lists).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER
from pbfast.pocketbase.auth import hash_password
from pbfast.pocketbase.collections.service import create_collection
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.superusers import upsert_superuser
from bench_tools import SUPERUSER
from test_tenant_api_bench import COLLECTION, _seed

CLUSTER_TOKEN = "cluster-token-for-request-path-bench"
BATCH = 200
LIST_QUERY = "perPage=20&sort=-created&filter=(num%3E%3D5000)"
CREATE_BODY = b'{"title":"created by the benchmark","num":7,"flag":true}'


class Headers(dict[str, str]):
    """granian's headers: ``get`` by lower-case name."""


@dataclass
class Scope:
    method: str
    path: str
    query_string: str = ""
    headers: Headers = field(default_factory=Headers)
    proto: str = "http"
    http_version: str = "1.1"
    authority: str | None = None
    client: str = "127.0.0.1:50000"
    scheme: str = "http"


class Protocol:
    """granian's RSGI HTTP protocol for one request: the body, and the answer kept for checking."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.status = 0
        self.answer = b""

    async def __call__(self) -> bytes:
        body, self.body = self.body, b""
        return body

    def __aiter__(self) -> Protocol:
        return self

    async def __anext__(self) -> bytes:
        if not self.body:
            raise StopAsyncIteration
        body, self.body = self.body, b""
        return body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.answer = status, body

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status


class ArrivingProtocol(Protocol):
    """A body that arrives later, as granian's does (its future completed from granian's thread): the request
    waits for it, and other requests run meanwhile."""

    async def __call__(self) -> bytes:
        await asyncio.sleep(0)
        return await super().__call__()


@dataclass
class Bench:
    loop: asyncio.AbstractEventLoop
    node: TenantNodeApp
    record_id: str
    token: str
    user_token: str = ""  # a user's of the default users collection (auth-refresh)

    def scope(self, method: str, path: str, query: str = "", token: str | None = None,
              body: bytes = b"") -> Scope:
        headers = Headers({CLUSTER_TOKEN_HEADER: CLUSTER_TOKEN, EPOCH_HEADER: "1"})
        if token is not None:
            headers["authorization"] = token
        if body:
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
        return Scope(method, "/t/bench" + path, query, headers)

    def call(self, scope: Scope, body: bytes = b"") -> Protocol:
        proto = Protocol(body)
        self.loop.run_until_complete(self.node.__rsgi__(scope, proto))  # type: ignore[arg-type]
        return proto

    def batch(self, scope: Scope, body: bytes = b"", count: int = BATCH) -> int:
        """``count`` requests one after another on the node's loop; the last answer's status."""
        node = self.node

        async def run() -> int:
            status = 0
            for _ in range(count):
                proto = Protocol(body)
                await node.__rsgi__(scope, proto)  # type: ignore[arg-type]
                status = proto.status
            return status

        return self.loop.run_until_complete(run())

    def together(self, scope: Scope, body: bytes, count: int, at_once: int) -> int:
        """``count`` requests, ``at_once`` of them at a time (as many clients' requests ready in one loop
        iteration: a tenant's creates are then committed together); the last answer's status."""
        node = self.node

        async def one() -> int:
            proto = ArrivingProtocol(body)
            await node.__rsgi__(scope, proto)  # type: ignore[arg-type]
            return proto.status

        async def run() -> int:
            status = 0
            for start in range(0, count, at_once):
                status = (await asyncio.gather(*(one() for _ in range(min(at_once, count - start)))))[-1]
            return status

        return self.loop.run_until_complete(run())


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    data_dir = tmp_path_factory.mktemp("request-path")
    loop = uvloop.new_event_loop()
    node = TenantNodeApp("bench-node", 10, CLUSTER_TOKEN, data_dir)
    node.apply_assignments({"bench": {"epoch": 1, "incarnation": "inc-1"}}, [])
    tenant = loop.run_until_complete(node.open_tenant("bench"))
    create_collection(tenant.conn, COLLECTION)
    tenant.reload_collections()
    upsert_superuser(tenant, SUPERUSER[0], hash_password(SUPERUSER[1], 4))
    record_id = _seed(tenant.directory / "data.db")
    bench = Bench(loop, node, record_id, "")
    credentials = orjson.dumps({"identity": SUPERUSER[0], "password": SUPERUSER[1]})
    login = bench.call(bench.scope("POST", "/api/collections/_superusers/auth-with-password", body=credentials),
                       credentials)
    assert login.status == 200, login.answer
    bench.token = orjson.loads(login.answer)["token"]
    user = orjson.dumps({"email": "reader@example.com", "password": "reader-password-1",
                         "passwordConfirm": "reader-password-1"})
    created = bench.call(bench.scope("POST", "/api/collections/users/records", token=bench.token, body=user), user)
    assert created.status == 200, created.answer
    credentials = orjson.dumps({"identity": "reader@example.com", "password": "reader-password-1"})
    login = bench.call(bench.scope("POST", "/api/collections/users/auth-with-password", body=credentials), credentials)
    assert login.status == 200, login.answer
    bench.user_token = orjson.loads(login.answer)["token"]
    yield bench
    loop.run_until_complete(node.close_all())
    node.db.stop()
    loop.close()


def _check(bench: Bench, scope: Scope, body: bytes = b"") -> None:
    answer = bench.call(scope, body)
    assert answer.status == 200, answer.answer


cpu_timed = pytest.mark.benchmark(timer=time.process_time)


@cpu_timed
def test_view(bench: Bench, benchmark: BenchmarkFixture) -> None:
    scope = bench.scope("GET", f"/api/collections/bench/records/{bench.record_id}")
    _check(bench, scope)
    assert benchmark(bench.batch, scope) == 200


@cpu_timed
def test_view_with_token(bench: Bench, benchmark: BenchmarkFixture) -> None:
    scope = bench.scope("GET", f"/api/collections/bench/records/{bench.record_id}", token=bench.token)
    _check(bench, scope)
    assert benchmark(bench.batch, scope) == 200


@cpu_timed
def test_list(bench: Bench, benchmark: BenchmarkFixture) -> None:
    scope = bench.scope("GET", "/api/collections/bench/records", LIST_QUERY)
    _check(bench, scope)
    assert benchmark(bench.batch, scope, count=BATCH // 10) == 200


@cpu_timed
def test_create(bench: Bench, benchmark: BenchmarkFixture) -> None:
    scope = bench.scope("POST", "/api/collections/bench/records", body=CREATE_BODY)
    _check(bench, scope, CREATE_BODY)
    assert benchmark(bench.batch, scope, CREATE_BODY) == 200


@cpu_timed
def test_auth_refresh(bench: Bench, benchmark: BenchmarkFixture) -> None:
    scope = bench.scope("POST", "/api/collections/users/auth-refresh", token=bench.user_token)
    _check(bench, scope)
    assert benchmark(bench.batch, scope) == 200


def request_loop(bench: Bench, case: str, count: int) -> Any:
    """For profiling by hand: ``count`` requests of ``case`` (view, view-token, list, create, refresh, password: the
    superuser's ``auth-with-password``, its hash at bcrypt cost 4; create16: creates 16 at a time, as 16 clients')."""
    if case == "create16":
        return bench.together(bench.scope("POST", "/api/collections/bench/records", body=CREATE_BODY), CREATE_BODY,
                              count, 16)
    if case == "password":
        credentials = orjson.dumps({"identity": SUPERUSER[0], "password": SUPERUSER[1]})
        return bench.batch(bench.scope("POST", "/api/collections/_superusers/auth-with-password", body=credentials),
                           credentials, count)
    if case == "refresh":
        return bench.batch(bench.scope("POST", "/api/collections/users/auth-refresh", token=bench.user_token),
                           count=count)
    if case == "create":
        return bench.batch(bench.scope("POST", "/api/collections/bench/records", body=CREATE_BODY), CREATE_BODY,
                           count)
    if case == "list":
        return bench.batch(bench.scope("GET", "/api/collections/bench/records", LIST_QUERY), count=count)
    token = bench.token if case == "view-token" else None
    return bench.batch(bench.scope("GET", f"/api/collections/bench/records/{bench.record_id}", token=token),
                       count=count)
