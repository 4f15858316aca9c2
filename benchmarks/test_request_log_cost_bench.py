"""What request logging costs per request, without HTTP (issue 17: logging on must cost ≤ 10% of the view
throughput): the request's own part (the tenant's ``logs`` settings read, the log's fields gathered, queued for
the writer: :func:`pbfast.pocketbase.apis.logs.request_entry` and :meth:`RequestLogs.add`), timed per 1,000
requests, and the writer's part (a batch of 2,000 queued logs formatted and inserted into a real
``auxiliary.db``, PocketBase's ``_logs`` with its indexes), timed per batch. The request's part holds the GIL
(the event loop's time); most of the writer's runs without it (formatting natively, SQLite).

Run (in CPU time: the machine is shared, and the writer's SQLite waits for the disk at times)::

    python -m pytest benchmarks/test_request_log_cost_bench.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-time-unit=us --benchmark-timer=time.process_time

The file uses only the public interface, so it runs in an earlier checkout too (copied there with
``request_log_cost.py``, whose scope it shares), to compare the two in one run, alternating.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from request_log_cost import PATH, BenchScope

from pbfast.http import HeldResponse
from pbfast.pocketbase.apis import logs
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.request_logs import RequestLogs
from pbfast.pocketbase.tenant import Tenant

REQUESTS = 1000
BATCH = 2000


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    init_tenant_database(tmp_path / "t")
    opened = Tenant.open("t", tmp_path / "t")
    yield opened
    opened.close()


def _request(tenant: Tenant) -> TenantRequest:
    return TenantRequest(BenchScope(headers={"user-agent": "wrk/4.2.0", "referer": "http://a/"}), HeldResponse(), PATH, {"collection": "bench", "id": "abcdefghij12345"}, tenant)


def test_a_requests_part(benchmark: BenchmarkFixture, tenant: Tenant) -> None:
    """Per 1,000 requests: each one's log built and queued, on the request's thread."""
    benchmark.group = f"request log: the request's part, per {REQUESTS:,} requests"
    request = _request(tenant)
    writer = RequestLogs(capacity=10 * REQUESTS, batch=10**9, interval=3600)  # written only by flush()

    def serve() -> None:
        for _ in range(REQUESTS):
            entry = logs.request_entry(request, time.perf_counter(), 200, None, False)
            assert entry is not None
            writer.add(entry)

    def empty_queue() -> None:
        writer.flush()

    try:
        benchmark.pedantic(serve, setup=empty_queue, rounds=30, warmup_rounds=1)
        assert writer.dropped == 0
    finally:
        writer.close()


def test_the_writers_part(benchmark: BenchmarkFixture, tenant: Tenant) -> None:
    """Per batch of 2,000 logs: formatted and inserted (one transaction) by the writer."""
    benchmark.group = f"request log: the writer's part, per batch of {BATCH:,} logs"
    request = _request(tenant)
    writer = RequestLogs(capacity=2 * BATCH, batch=10**9, interval=3600)

    def queue_a_batch() -> None:
        for _ in range(BATCH):
            entry = logs.request_entry(request, time.perf_counter(), 200, None, False)
            assert entry is not None
            writer.add(entry)

    try:
        benchmark.pedantic(writer.flush, setup=queue_a_batch, rounds=10, warmup_rounds=1)
        assert writer.written >= BATCH and writer.failed == 0 and writer.dropped == 0
    finally:
        writer.close()
