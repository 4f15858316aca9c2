"""Cold open from the replica (issue 14, goal 4): a tenant neither open nor on the node's disk, restored
from its replica in moto's S3 server on its first load, the in-node restore against ``litestream restore``
(the path before it, still taken for what the in-node reader does not cover), side by side in one run.

A real :class:`TenantNodeApp` with its Litestream child and an S3 replica store (moto's server in its own
process, as S3 would be elsewhere); each tenant a PocketBase database with a ``posts`` collection of 5,000
records (~1.1 MB). A load is what a first request waits for: the restore, ``PRAGMA integrity_check`` and
the PocketBase tables checked, fsync, the atomic rename into place, the open and the registration with
Litestream. Rounds alternate in-node / litestream, each on a tenant of its own (nothing cached). Then the
restores alone: their time, their CPU (the node's process, its children and moto's server: what does not
depend on the machine's load) and the S3 requests of one (moto's request log).

``python3 -m pytest benchmarks/test_cold_open_bench.py -q -s -p no:cacheprovider`` is the short form (3
rounds each, CI); ``PBFAST_BENCH_FULL=1`` the long one in benchmarks/RESULTS.md (20 rounds each).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from helpers import free_port
from pbfast.cluster.heartbeat import DEFAULT_INCARNATION
from pbfast.tenant_node.app import TenantNodeApp
from pbfast.tenant_node.replica import ReplicaStore
from pbfast.tenant_node.replica_reader import ReplicaReader
from pbfast.tenant_node.replication import Replicator
from test_tenant_load_bench import _seed_database

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
ROUNDS = 20 if FULL else 3  # of each kind
BUCKET = "pbfast-cold"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP')


class LitestreamOnly(ReplicaReader):
    """The path before the in-node reader: every restore left to ``litestream restore``."""

    def restore_latest(self, prefix: str, target: Path) -> bool | None:
        return None


@dataclass
class ColdBench:
    loop: asyncio.AbstractEventLoop
    node: TenantNodeApp
    replicator: Replicator
    in_node: ReplicaReader
    litestream_only: LitestreamOnly
    moto_log: Path
    moto_pid: int

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def requests_of(self, tenant_id: str, since: int) -> list[str]:
        """The S3 requests naming ``tenant_id`` that moto logged after byte ``since`` of its log."""
        with open(self.moto_log, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [f"{method} {path}" for method, path in _REQUEST.findall(text) if f"%2F{tenant_id}%2F" in path
                or f"/{tenant_id}/" in path]


def _copy_replica(client: Any, source: str, target: str) -> None:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=source + "/")
    for item in listed.get("Contents", ()):
        client.copy_object(Bucket=BUCKET, Key=target + item["Key"][len(source):],
                           CopySource={"Bucket": BUCKET, "Key": item["Key"]})


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdBench]:
    import boto3  # type: ignore[import-untyped]  # noqa: PLC0415

    root = tmp_path_factory.mktemp("cold-open")
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # the node's S3 clients (boto3 and litestream) read them; put back after
    port = free_port()
    moto_log = root / "moto.log"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(moto_log, "wb"))  # noqa: SIM115
    loop = uvloop.new_event_loop()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        store = ReplicaStore(BUCKET, endpoint, root / "unused")
        replicator = Replicator(root / "litestream", store)
        node = TenantNodeApp("bench", 1000, "c" * 32, root, replicator)
        loop.run_until_complete(replicator.start())
        bench = ColdBench(loop, node, replicator, replicator.reader,
                          LitestreamOnly(BUCKET, endpoint, store.local_root, store.region), moto_log, moto.pid)
        try:
            _seed_database(node.copies.tenants_dir / "seed")
            bench.run(node.open_tenant("seed"))
            bench.run(replicator.sync(node.copies.tenants_dir / "seed" / "data.db", wait=True))
            bench.run(node.close_all())
            seed = store.prefix("seed", DEFAULT_INCARNATION)
            for kind in ("in-node", "litestream"):
                for i in range(ROUNDS + 1):
                    _copy_replica(client, seed, store.prefix(f"{kind}-{i}", DEFAULT_INCARNATION))
            yield bench
        finally:
            loop.run_until_complete(node.close_all())
            node.db.stop()
            loop.run_until_complete(replicator.stop())
    finally:
        loop.close()
        moto.terminate()
        moto.wait(10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load(bench: ColdBench, kind: str, tenant_id: str) -> float:
    bench.replicator.reader = bench.in_node if kind == "in-node" else bench.litestream_only
    started = time.perf_counter()
    tenant = bench.run(bench.node.open_tenant(tenant_id))
    seconds = time.perf_counter() - started
    assert tenant.collection("posts") is not None
    return seconds


@dataclass(frozen=True)
class Restores:
    wall_p50: float
    cpu_p50: float  # user + system seconds of the node's process, its children and moto's server
    requests: int  # S3 requests of one restore


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(bench: ColdBench) -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the litestream restore processes, once waited
    return time.process_time() + children.ru_utime + children.ru_stime + _process_cpu(bench.moto_pid)


def _restores(bench: ColdBench, kind: str) -> Restores:
    """Restores alone (no check, install or open), of the seed's replica: nothing is cached either way."""
    bench.replicator.reader = bench.in_node if kind == "in-node" else bench.litestream_only
    wall, cpu, requests = [], [], 0
    for i in range(ROUNDS):
        since = bench.moto_log.stat().st_size
        target = bench.node.copies.scratch("seed")
        started, cpu_before = time.perf_counter(), _cpu(bench)
        try:
            assert bench.run(bench.replicator.restore("seed", DEFAULT_INCARNATION, target))
        finally:
            target.unlink(missing_ok=True)
        wall.append(time.perf_counter() - started)
        cpu.append(_cpu(bench) - cpu_before)
        if i == 0:
            time.sleep(0.2)  # moto logs after it answers
            requests = len(bench.requests_of("seed", since))
    return Restores(statistics.median(wall), statistics.median(cpu), requests)


def test_cold_open_from_s3_in_node_vs_litestream(cold: ColdBench, bench_report: list[str]) -> None:
    opened = cold.node.metrics.opens.get("replica", 0)
    seconds: dict[str, list[float]] = {"in-node": [], "litestream": []}
    for i in range(ROUNDS):
        for kind in ("in-node", "litestream") if i % 2 == 0 else ("litestream", "in-node"):
            seconds[kind].append(_load(cold, kind, f"{kind}-{i}"))
    assert cold.node.metrics.opens.get("replica", 0) == opened + 2 * ROUNDS  # each one restored
    assert cold.in_node.restored == ROUNDS and cold.in_node.passed_on == 0

    restores = {kind: _restores(cold, kind) for kind in ("in-node", "litestream")}
    cold.replicator.reader = cold.in_node

    new, old = statistics.median(seconds["in-node"]), statistics.median(seconds["litestream"])
    for kind in ("in-node", "litestream"):
        values = sorted(seconds[kind])
        bench_report.append(
            f"cold open from S3 (moto), {kind:<10}: p50 {statistics.median(values) * 1000:6.1f} ms, "
            f"min {values[0] * 1000:6.1f} ms, max {values[-1] * 1000:6.1f} ms over {len(values)}; the restore "
            f"alone: p50 {restores[kind].wall_p50 * 1000:6.1f} ms, {restores[kind].cpu_p50 * 1000:5.1f} ms CPU "
            f"(node, its children and moto), {restores[kind].requests} S3 requests")
    bench_report.append(f"cold open from S3 (moto): in-node / litestream p50 = {new / old:.2f}")
    assert restores["in-node"].requests <= 4 < restores["litestream"].requests
    assert new < old  # loose: the machine is shared; RESULTS.md has the figures
