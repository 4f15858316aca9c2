"""The guide's ``BenchmarkTenantLoad``: how long a tenant node takes to load a tenant, and the memory a load
takes (``go test -benchmem``'s B/op), for the three ways a tenant is found:

- ``replica``: cold, neither open nor on local disk: restored from its replica (``litestream restore``),
  checked, installed and opened, then registered for replication: a tenant's first request on a new node;
- ``local_disk``: closed but on local disk (a tenant closed when idle): opened and registered;
- ``cache``: open already: the lookup every request makes.

A real :class:`TenantNodeApp` with its Litestream child and the local replica store (what ``pbfast serve``
uses without ``--s3-endpoint``); each tenant a PocketBase database with a ``posts`` collection of
:data:`RECORDS` records (~1 MB). Each cold round loads another tenant, so nothing is cached between rounds.

``pytest benchmarks -k tenant_load`` runs it as the guide does (short: 3 cold rounds); CI's short pass
too. ``PBFAST_BENCH_FULL=1 python -m pytest benchmarks -k tenant_load -s -p no:cacheprovider
--benchmark-enable`` is the long form in benchmarks/RESULTS.md (20 cold rounds each).

Memory per load is measured on one more load of each kind, apart from the timed ones (tracing slows
them): the Python heap at its peak during the load and what stays allocated after it (tracemalloc), and
the SQLite memory that stays (``apsw.memory_used``), shown after the run as ``B/op`` lines (the
"benchmark report" section, also without ``-s``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
import uvloop

from pbfast.pocketbase.collections import create_collection, init_tenant_database
from pbfast.pocketbase.tenant import Tenant
from pbfast.cluster.heartbeat import DEFAULT_INCARNATION
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.replica import ReplicaStore
from pbfast.tenant_node.replication import Replicator

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
COLD_ROUNDS = 20 if FULL else 3
CACHED_BATCH = 10_000  # loads of an open tenant per event loop run
CACHED_BATCHES = 50 if FULL else 3
RECORDS = 5_000


@dataclass
class LoadBench:
    """A tenant node on its own event loop, and tenants waiting to be loaded each way."""

    loop: asyncio.AbstractEventLoop
    node: TenantNodeApp
    replica_only: list[str]  # in the replica, not on local disk
    local_only: list[str]  # on local disk, never opened

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(work)

    def load(self, tenant_id: str) -> Tenant:
        return self.run(self.node.open_tenant(tenant_id))  # type: ignore[no-any-return]



def _seed_database(directory: Path) -> None:
    init_tenant_database(directory)
    connection = apsw.Connection(str(directory / "data.db"))
    create_collection(connection, {
        "name": "posts", "type": "base", "listRule": "", "viewRule": "",
        "fields": [{"name": "title", "type": "text"}, {"name": "body", "type": "text"},
                   {"name": "views", "type": "number"}],
    })
    with connection:
        connection.executemany("INSERT INTO posts (id, title, body, views) VALUES (?, ?, ?, ?)",
                               ((f"{i:015d}", f"post {i}", "lorem ipsum " * 12, i) for i in range(RECORDS)))
    connection.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadBench]:
    root = tmp_path_factory.mktemp("tenant-load")
    loop = uvloop.new_event_loop()
    store = ReplicaStore("pbfast", None, root / "replica")
    replicator = Replicator(root / "litestream", store)
    node = TenantNodeApp("bench", 1000, "c" * 32, root, replicator)
    loop.run_until_complete(replicator.start())
    bench = LoadBench(loop, node, [f"cold-{i}" for i in range(COLD_ROUNDS + 1)],
                      [f"disk-{i}" for i in range(COLD_ROUNDS + 1)])
    try:
        # One tenant replicated through the node, then its replica copied for every cold tenant (a replica's
        # files do not name their tenant) and its local copy for every local one.
        _seed_database(node.copies.tenants_dir / "seed")
        bench.load("seed")
        bench.run(replicator.sync(node.copies.tenants_dir / "seed" / "data.db", wait=True))
        bench.run(node.close_all())
        seed_replica = Path(store.url("seed", DEFAULT_INCARNATION).removeprefix("file://"))
        for tenant_id in bench.replica_only:
            shutil.copytree(seed_replica, Path(store.url(tenant_id, DEFAULT_INCARNATION).removeprefix("file://")))
        for tenant_id in bench.local_only:
            shutil.copytree(node.copies.tenants_dir / "seed", node.copies.tenants_dir / tenant_id)
        yield bench
    finally:
        loop.run_until_complete(node.close_all())
        node.db.stop()
        loop.run_until_complete(replicator.stop())
        loop.close()


def _timed_loads(benchmark: Any, tenants: list[str], load: Callable[[str], Tenant]) -> list[float]:
    """Load :data:`COLD_ROUNDS` tenants, the next of ``tenants`` each time (taken from the list), timing
    each: as pytest-benchmark rounds when it is enabled, else on their own. Returns the seconds of each."""
    seconds: list[float] = []

    def timed(tenant_id: str) -> Tenant:
        started = time.perf_counter()
        tenant = load(tenant_id)
        seconds.append(time.perf_counter() - started)
        return tenant

    def next_tenant() -> tuple[tuple[str], dict[str, Any]]:
        return (tenants.pop(0),), {}

    # A disabled pytest-benchmark (the project's default, --benchmark-disable) runs one round: then the rest
    # are run here.
    loaded = [benchmark.pedantic(timed, setup=next_tenant, rounds=COLD_ROUNDS, iterations=1, warmup_rounds=0)]
    loaded += [timed(tenants.pop(0)) for _ in range(COLD_ROUNDS - len(seconds))]
    assert all(tenant.collection("posts") is not None for tenant in loaded)
    assert len(seconds) == COLD_ROUNDS
    return seconds


@dataclass(frozen=True)
class MemoryPerLoad:
    peak_python: int
    retained_python: int
    retained_sqlite: int


def _memory_per_load(load: Callable[[], Any], loads: int = 1) -> MemoryPerLoad:
    sqlite_before = apsw.memory_used()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(loads):
            load()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return MemoryPerLoad((peak - before) // loads, (after - before) // loads,
                         (apsw.memory_used() - sqlite_before) // loads)


def _report(benchmark: Any, bench_report: list[str], kind: str, seconds: list[float], memory: MemoryPerLoad,
            loads: int) -> None:
    """A ``go test -bench -benchmem``-like line (median ns/op; B/op split by where the memory is)."""
    benchmark.extra_info.update({"peak_python_bytes_per_load": memory.peak_python,
                                 "retained_python_bytes_per_load": memory.retained_python,
                                 "retained_sqlite_bytes_per_load": memory.retained_sqlite})
    bench_report.append(
        f"BenchmarkTenantLoad/{kind:<10} {loads:>8} {statistics.median(seconds) * 1e9:>14,.0f} ns/op "
        f"(p90 {sorted(seconds)[int(0.9 * (len(seconds) - 1))] * 1e9:,.0f}) {memory.peak_python:>10,} B/op "
        f"Python peak {memory.retained_python:>9,} B/op Python kept {memory.retained_sqlite:>9,} B/op SQLite kept")


def test_tenant_load_cold_from_replica(benchmark: Any, bench: LoadBench, bench_report: list[str]) -> None:
    benchmark.group = "tenant load"
    opened = bench.node.metrics.opens.get("replica", 0)
    seconds = _timed_loads(benchmark, bench.replica_only, bench.load)
    assert bench.node.metrics.opens.get("replica", 0) == opened + COLD_ROUNDS  # each one restored
    last = bench.replica_only.pop(0)
    _report(benchmark, bench_report, "replica", seconds, _memory_per_load(lambda: bench.load(last)), COLD_ROUNDS)


def test_tenant_load_warm_from_local_disk(benchmark: Any, bench: LoadBench, bench_report: list[str]) -> None:
    benchmark.group = "tenant load"
    opened = bench.node.metrics.opens.get("disk", 0)
    seconds = _timed_loads(benchmark, bench.local_only, bench.load)
    assert bench.node.metrics.opens.get("disk", 0) == opened + COLD_ROUNDS
    last = bench.local_only.pop(0)
    _report(benchmark, bench_report, "local_disk", seconds, _memory_per_load(lambda: bench.load(last)),
            COLD_ROUNDS)


async def _awaited_loads(node: TenantNodeApp, tenant_id: str, count: int) -> None:
    for _ in range(count):
        await node.open_tenant(tenant_id)  # as a request does


def test_tenant_load_cached(benchmark: Any, bench: LoadBench, bench_report: list[str]) -> None:
    """pytest-benchmark's figure is per batch of :data:`CACHED_BATCH` loads (one event loop run each)."""
    benchmark.group = "tenant load"
    bench.load("seed")
    benchmark(lambda: bench.run(_awaited_loads(bench.node, "seed", CACHED_BATCH)))
    seconds = []
    for _ in range(CACHED_BATCHES):
        started = time.perf_counter()
        bench.run(_awaited_loads(bench.node, "seed", CACHED_BATCH))
        seconds.append((time.perf_counter() - started) / CACHED_BATCH)
    memory = _memory_per_load(lambda: bench.run(_awaited_loads(bench.node, "seed", CACHED_BATCH)))
    memory = MemoryPerLoad(*(value // CACHED_BATCH for value in vars(memory).values()))
    _report(benchmark, bench_report, "cache", seconds, memory, CACHED_BATCH * CACHED_BATCHES)
