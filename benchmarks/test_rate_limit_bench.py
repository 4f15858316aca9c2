"""Rate limits (issue 17): the cost of counting one request in the native limiter, for a known client key
among 100,000 (the goal: ≤ 1 µs), and of the whole per-request check of a tenant with rate limits on (the
settings read, the rule search and the counting).

Run: ``python -m pytest benchmarks/test_rate_limit_bench.py --benchmark-enable --benchmark-group-by=group``
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.http import HeldResponse
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.rate_limits import RateLimits
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.tenant import Tenant
from pbfast.primitives import RateLimiter

CLIENTS = 100_000


def test_native_allow(benchmark: BenchmarkFixture) -> None:
    benchmark.group = "rate limit: one count"
    limiter = RateLimiter()
    keys = [f"tenant-1\0/api/\0{10 + i // 65536}.{i // 256 % 256}.{i % 256}.1" for i in range(CLIENTS)]
    now = int(time.time())
    for key in keys:
        limiter.allow(key, 1_000_000, 3600, now)
    cycle = itertools.cycle(keys)
    assert benchmark(lambda: limiter.allow(next(cycle), 1_000_000, 3600, now))


@dataclass
class _Scope:
    proto: str = "http"
    method: str = "GET"
    path: str = "/api/collections/posts/records"
    query_string: str = ""
    authority: str | None = None
    client: str = "10.1.2.3:50000"
    headers: dict[str, str] = field(default_factory=dict)


def test_request_check(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    benchmark.group = "rate limit: a request's check"
    init_tenant_database(tmp_path / "t")
    tenant = Tenant.open("t", tmp_path / "t")
    document = app_settings.load_document(tenant.conn)
    document["rateLimits"]["enabled"] = True  # PocketBase's default rules
    for rule in document["rateLimits"]["rules"]:
        rule["maxRequests"] = 10**9
    app_settings.save_document(tenant.conn, document)
    limits = RateLimits()
    request = TenantRequest(_Scope(), HeldResponse(), "/api/collections/posts/records", {"collection": "posts"},
                            tenant)
    benchmark(lambda: limits.check(request, None))
    tenant.close()
