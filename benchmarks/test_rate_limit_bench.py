"""Rate limits (issue 17): the cost of counting one request in the native limiter, for a known client key
among 100,000 (the goal: ≤ 1 µs), and of the whole per-request check of a tenant with rate limits on (the
settings read, the rule search and the counting); each in the process's limiter (a node without workers) and
in the node's shared memory (``--workers=N``: the windows every process of the node counts in).

Run: ``python -m pytest benchmarks/test_rate_limit_bench.py --benchmark-enable --benchmark-group-by=group``
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.http import HeldResponse
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.rate_limits import CollectionTags, RateLimits
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import NodeSharedMemory, RateLimiter, SharedRateLimiter

CLIENTS = 100_000


def _node_memory() -> NodeSharedMemory:
    """A node with the least tenant capacity (65,536 entries: 262,144 rate windows) and 2 workers."""
    return NodeSharedMemory(65_536, 2)


@pytest.mark.parametrize("where", ["process", "shared"])
def test_native_allow(benchmark: BenchmarkFixture, where: str) -> None:
    benchmark.group = "rate limit: one count"
    limiter = RateLimiter() if where == "process" else SharedRateLimiter(_node_memory())
    keys = [f"tenant-1\0/api/\0{10 + i // 65536}.{i // 256 % 256}.{i % 256}.1" for i in range(CLIENTS)]
    now = int(time.time())
    for key in keys:
        limiter.allow(key, 1_000_000, 3600, now)
    cycle = itertools.cycle(keys)
    assert benchmark(lambda: limiter.allow(next(cycle), 1_000_000, 3600, now))


def test_native_allow_contended(benchmark: BenchmarkFixture) -> None:
    """Shared windows while another process (a second worker) counts the same 64 clients as fast as it can:
    their buckets' cache lines move between the cores."""
    benchmark.group = "rate limit: one count"
    memory = _node_memory()
    limiter = SharedRateLimiter(memory)
    keys = [f"tenant-1\0/api/\0" f"10.0.{i}.1" for i in range(64)]
    now = int(time.time())
    hammer = ("import sys\nfrom pbfast.primitives import NodeSharedMemory, SharedRateLimiter\n"
              "limiter = SharedRateLimiter(NodeSharedMemory.attach(int(sys.argv[1])))\n"
              f"keys = {keys!r}\nprint('ready', flush=True)\n"
              "while True:\n"
              "    for key in keys:\n"
              f"        limiter.allow(key, 10**9, 3600, {now})\n")
    process = subprocess.Popen([sys.executable, "-c", hammer, str(memory.fd)], pass_fds=[memory.fd],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        cycle = itertools.cycle(keys)
        assert benchmark(lambda: limiter.allow(next(cycle), 10**9, 3600, now))
    finally:
        process.kill()
        process.wait()


@dataclass
class _Scope:
    proto: str = "http"
    method: str = "GET"
    path: str = "/api/collections/posts/records"
    query_string: str = ""
    authority: str | None = None
    client: str = "10.1.2.3:50000"
    headers: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize("where", ["process", "shared"])
@pytest.mark.parametrize("route", ["plain", "collection"])
def test_request_check(benchmark: BenchmarkFixture, tmp_path: Path, where: str, route: str) -> None:
    """A guest's check; ``collection``: a collection route (a records list), whose rule is its tags' (``users:list``,
    ``*:list``) or else its labels' (with PocketBase's default rules ``/api/``), counted once as PocketBase does;
    both kinds are one lookup of the request's ``METHOD /path`` in the rules compiled for the settings, then one
    native count."""
    benchmark.group = "rate limit: a request's check"
    init_tenant_database(tmp_path / "t")
    tenant = Tenant.open("t", tmp_path / "t")
    document = app_settings.load_document(tenant.conn)
    document["rateLimits"]["enabled"] = True  # PocketBase's default rules
    for rule in document["rateLimits"]["rules"]:
        rule["maxRequests"] = 10**9
    app_settings.save_document(tenant.conn, document)
    limits = RateLimits()
    if where == "shared":
        limits.limiter = SharedRateLimiter(_node_memory())
    path = "/api/collections/users/records"
    request = TenantRequest(_Scope(path=path), HeldResponse(), path, {"collection": "users"}, tenant)
    tags = CollectionTags("GET /api/collections/{collection}/records", ("list",)) if route == "collection" else None
    benchmark(lambda: limits.check(request, tags))
    tenant.close()
