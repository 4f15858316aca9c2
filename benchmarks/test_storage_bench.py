"""Tenant lifecycle costs on a node (issue 6): cached load, cold open from local disk, restore from S3.

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_storage_bench.py -s -p no:cacheprovider``
Runs in-process against the real pieces: apsw, PocketBase-layout databases, Litestream, moto's S3 server.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import apsw

from helpers import moto_s3_server
from pbfast.pocketbase.schema import init_tenant_database
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.replication import ReplicaStore, Replicator

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_cached_load_and_cold_open(tmp_path: Path) -> None:
    node = TenantNodeApp("bench", 1000, "c" * 32, tmp_path)  # no replicator: local disk only
    count = 200 if FULL else 40
    for i in range(count):
        init_tenant_database(tmp_path / "tenants" / f"t{i}")

    async def measure() -> tuple[list[float], float]:
        cold = []
        for i in range(count):
            started = time.perf_counter()
            await node.open_tenant(f"t{i}")
            cold.append(time.perf_counter() - started)
        loops = 200_000 if FULL else 20_000
        started = time.perf_counter()
        for _ in range(loops):
            await node.open_tenant("t1")
        cached = (time.perf_counter() - started) / loops
        return cold, cached

    cold, cached = asyncio.run(measure())
    print(f"\n[bench] tenant load when cached: {cached * 1e6:.2f} µs; cold open from local disk over {count}: "
          f"p50 {_percentile(cold, 0.5) * 1000:.2f} ms, p99 {_percentile(cold, 0.99) * 1000:.2f} ms")
    for tenant in node.tenants.values():
        tenant.close()
    assert cached < 50e-6 and statistics.median(cold) < 0.1


def test_restore_from_s3(tmp_path: Path) -> None:
    with moto_s3_server("bench") as endpoint:
        _restore_from(endpoint, tmp_path)


def _restore_from(endpoint: str, tmp_path: Path) -> None:
    previous = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    size_mb = 50 if FULL else 5
    try:
        async def run() -> tuple[float, int]:
            replicator = Replicator(tmp_path / "litestream", ReplicaStore("bench", endpoint, tmp_path / "replica"))
            await replicator.start()
            try:
                directory = tmp_path / "source"
                init_tenant_database(directory)
                db = directory / "data.db"
                connection = apsw.Connection(str(db))
                connection.execute("CREATE TABLE blob_rows (id INTEGER PRIMARY KEY, payload BLOB)")
                with connection:
                    for _ in range(size_mb * 4):
                        connection.execute("INSERT INTO blob_rows (payload) VALUES (randomblob(262144))")
                await replicator.register(db, "big", "1")
                await replicator.sync(db, wait=True)
                connection.close()
                target = tmp_path / "restored.db"
                started = time.perf_counter()
                assert await replicator.restore("big", "1", target)
                return time.perf_counter() - started, target.stat().st_size
            finally:
                await replicator.stop()

        took, size = asyncio.run(run())
        print(f"\n[bench] restore of a {size / (1 << 20):.1f} MiB tenant from moto S3: {took:.2f} s")
        assert took < 30
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
