"""Per-request cost of each primitive as the servers call it: native (Rust) vs reference (pure Python).

Run: ``python -m pytest benchmarks/test_primitives_bench.py --benchmark-enable --benchmark-group-by=group``
Every case runs both implementations in the same session so their ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import itertools
from types import ModuleType

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import pbfast._native as native
import pbfast.reference as reference

TENANTS = 10_000
IMPLS = pytest.mark.parametrize("impl", [native, reference], ids=["native", "reference"])


def _routes(impl: ModuleType, base_domain: str = "") -> object:
    table = impl.RoutingTable(base_domain)
    table.replace([(f"tenant-{i}", f"http://10.0.{i % 8}.1:8070", 1, True) for i in range(TENANTS)], 1)
    return table


@IMPLS
def test_resolve_path(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Gateway: tenant, forward path and route from a raw ``/t/{id}/...`` path in one call."""
    benchmark.group = "routing.resolve(path)"
    table = _routes(impl)
    paths = itertools.cycle([f"/t/tenant-{i * 37 % TENANTS}/api/collections/posts/records" for i in range(1024)])
    result = benchmark(lambda: table.resolve(next(paths), "127.0.0.1:8080"))
    assert result is not None and result[2] is not None


@IMPLS
def test_resolve_host(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Gateway: tenant from ``Host: {id}.<base-domain>:port``."""
    benchmark.group = "routing.resolve(host)"
    table = _routes(impl, "pb.example.com")
    hosts = itertools.cycle([f"tenant-{i * 37 % TENANTS}.pb.example.com:8080" for i in range(1024)])
    result = benchmark(lambda: table.resolve("/api/collections/posts/records", next(hosts)))
    assert result is not None and result[2] is not None


@IMPLS
def test_routing_patch(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Control side: apply one route change to a 10k-tenant table (copy-on-write snapshot)."""
    benchmark.group = "routing.patch(1 of 10k)"
    table = _routes(impl)
    versions = itertools.count(2)
    benchmark(lambda: table.patch([("tenant-5", "http://10.0.9.9:8070", 2, True)], [], next(versions)))


@IMPLS
def test_quota_try_acquire(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Tenant node: count one API request against a tenant's daily quota."""
    benchmark.group = "quota.try_acquire"
    quotas = impl.QuotaCounters()
    for i in range(TENANTS):
        quotas.set_limits(f"tenant-{i}", api_requests=10**12)
    ids = itertools.cycle([f"tenant-{i * 37 % TENANTS}" for i in range(1024)])
    allowed, _ = benchmark(lambda: quotas.try_acquire(next(ids)))
    assert allowed


@IMPLS
def test_tenant_cache_acquire_release(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Tenant node: pin a tenant for one request and unpin it (with LRU eviction at capacity)."""
    benchmark.group = "tenant_cache.acquire+release"
    cache = impl.TenantCache(1000)
    names = [f"tenant-{i * 37 % 1200}" for i in range(1200)]
    for tenant_id in names:  # a full cache, as on a busy node (and however few rounds the timer runs)
        cache.acquire(tenant_id)
        cache.release(tenant_id)
    ids = itertools.cycle(names)

    def one_request() -> None:
        tenant_id = next(ids)
        cache.acquire(tenant_id)
        cache.release(tenant_id)

    benchmark(one_request)
    assert len(cache) == 1000


@IMPLS
def test_breaker_allow_record(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    """Gateway: ask the node's breaker, then record the outcome."""
    benchmark.group = "breakers.allow+record_success"
    breakers = impl.CircuitBreakers()
    addresses = [f"http://10.0.{i}.1:8070" for i in range(8)]
    for address in addresses:  # every node has a history, as in a running gateway
        breakers.record_failure(address)
    nodes = itertools.cycle(addresses)

    def one_request() -> None:
        node = next(nodes)
        if breakers.allow(node):
            breakers.record_success(node)

    benchmark(one_request)
