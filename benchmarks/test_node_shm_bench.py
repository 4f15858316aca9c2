"""Per-request cost of a tenant node worker's reads of the node's shared memory (issue 14), next to the
one-process primitives they replace, on a 10,000-tenant table.

Run: ``python -m pytest benchmarks/test_node_shm_bench.py --benchmark-enable --benchmark-group-by=group
-p no:cacheprovider --benchmark-columns=min,median,ops --benchmark-sort=name``

The ``contended`` cases run while another process counts requests of the same tenants as fast as it can
(what a second worker does on a hot tenant), so their cache lines move between cores.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from pbfast.primitives import NodeSharedMemory, QuotaCounters, SharedQuotas, SharedTenantTable, WorkerCounters

TENANTS = 10_000
SERVING = 1


@pytest.fixture(scope="module")
def memory() -> NodeSharedMemory:
    memory = NodeSharedMemory(1 << 16, 2)
    table, quotas = SharedTenantTable(memory), SharedQuotas(memory)
    for i in range(TENANTS):
        table.publish(f"tenant-{i}", SERVING, 1)
        quotas.set_limits(f"tenant-{i}", api_requests=10**9)
    return memory


@pytest.fixture(params=["alone", "contended"])
def neighbour(request: pytest.FixtureRequest, memory: NodeSharedMemory) -> Iterator[str]:
    """Nothing else running, or a second process counting the same tenants' requests meanwhile."""
    if request.param == "alone":
        yield "alone"
        return
    hammer = ("import sys\nfrom pbfast.primitives import NodeSharedMemory, SharedQuotas, SharedTenantTable\n"
              "m = NodeSharedMemory.attach(int(sys.argv[1])); q = SharedQuotas(m); t = SharedTenantTable(m)\n"
              "print('ready', flush=True)\n"
              "while True:\n"
              "    for i in range(64):\n"
              "        t.lookup(f'tenant-{i * 37 % 10000}'); q.try_acquire(f'tenant-{i * 37 % 10000}')\n")
    process = subprocess.Popen([sys.executable, "-c", hammer, str(memory.fd)], pass_fds=[memory.fd],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    try:
        yield "contended"
    finally:
        process.kill()
        process.wait()


def _ids() -> Iterator[str]:
    return itertools.cycle([f"tenant-{i * 37 % TENANTS}" for i in range(64)])


def test_table_lookup(benchmark: BenchmarkFixture, memory: NodeSharedMemory, neighbour: str) -> None:
    """Worker: a tenant's serving state (flags, epoch, generation, limits), recording the use."""
    benchmark.group = f"SharedTenantTable.lookup ({neighbour})"
    table, ids = SharedTenantTable(NodeSharedMemory.attach(memory.fd)), _ids()
    assert benchmark(lambda: table.lookup(next(ids))) is not None


def test_shared_quota(benchmark: BenchmarkFixture, memory: NodeSharedMemory, neighbour: str) -> None:
    """Worker: count one request against the tenant's daily quota, shared by all workers."""
    benchmark.group = f"quota.try_acquire ({neighbour})"
    quotas, ids = SharedQuotas(NodeSharedMemory.attach(memory.fd)), _ids()
    assert benchmark(lambda: quotas.try_acquire(next(ids)))[0]


def test_one_process_quota(benchmark: BenchmarkFixture) -> None:
    """For comparison: the one-process ``QuotaCounters`` a single-process node uses."""
    benchmark.group = "quota.try_acquire (alone)"
    quotas, ids = QuotaCounters(), _ids()
    for i in range(TENANTS):
        quotas.set_limits(f"tenant-{i}", api_requests=10**9)
    assert benchmark(lambda: quotas.try_acquire(next(ids)))[0]


def test_worker_request(benchmark: BenchmarkFixture, memory: NodeSharedMemory, neighbour: str) -> None:
    """Everything a worker reads and counts in shared memory for one request: the tenant's state, its
    quota, the answer's status class in the worker's own counters."""
    benchmark.group = f"per request: lookup + try_acquire + count ({neighbour})"
    attached = NodeSharedMemory.attach(memory.fd)
    table, quotas, counters, ids = SharedTenantTable(attached), SharedQuotas(attached), WorkerCounters(attached), _ids()

    def one_request() -> None:
        tenant_id = next(ids)
        table.lookup(tenant_id)
        quotas.try_acquire(tenant_id)
        counters.add(0, 1)

    benchmark(one_request)
