"""The in-node restore (issue 14, goal 4; :mod:`pbfast.tenant_node.replica_reader`) gives what ``litestream
restore`` gives, byte for byte, from replicas Litestream 0.5 wrote with compactions (levels 1 and 2) and
several snapshots, in a local store and in S3 (moto); a damaged file is refused and the restore left to
litestream, which refuses it too."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw
import pytest

from helpers import moto_s3_server
from nodetools import S3_ENV
from pbfast.pocketbase.collections import create_collection, init_tenant_database
from pbfast.tenant_node.replica import ReplicaStore, Replicas, ReplicationError
from pbfast.tenant_node.replica_reader import SNAPSHOT_LEVEL, LtxFile, ReplicaReader, restore_plan

BUCKET = "pbfast-reader"
INCARNATION = "inc-1"
WRITE_ROUNDS = 18
WRITE_INTERVAL_SECONDS = 0.35  # with levels of 1 s and 2 s and snapshots every 3 s: all of them, several times


@dataclass(frozen=True)
class Replicated:
    """Two tenants written alike, one replicated to each store, by one ``litestream replicate``."""

    local: ReplicaStore
    s3: ReplicaStore
    root: Path


def _write_history(connections: list[apsw.Connection]) -> None:
    """Records created, changed and deleted in many small transactions, the file shrunk by a VACUUM midway."""
    for round_ in range(WRITE_ROUNDS):
        for connection in connections:
            with connection:
                connection.executemany("INSERT INTO notes (id, n, body) VALUES (?, ?, ?)",
                                       ((f"r{round_:03d}n{i:08d}", round_ * 100 + i, "lorem ipsum " * (i % 40))
                                        for i in range(60)))
                connection.execute("UPDATE notes SET n = n + 1 WHERE n % 7 = ?", (round_ % 7,))
                if round_ % 5 == 4:
                    connection.execute("DELETE FROM notes WHERE n % 3 = 0")
            if round_ == WRITE_ROUNDS // 2:
                connection.execute("VACUUM")
        time.sleep(WRITE_INTERVAL_SECONDS)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    root = tmp_path_factory.mktemp("replica-reader")
    with moto_s3_server(BUCKET) as endpoint:
        local = ReplicaStore(BUCKET, None, root / "replica")
        s3 = ReplicaStore(BUCKET, endpoint, root / "unused")
        connections = []
        for name in ("local", "s3"):
            init_tenant_database(root / name)
            connection = apsw.Connection(str(root / name / "data.db"))
            connection.set_busy_timeout(10_000)  # litestream holds locks for its checkpoints
            connection.execute("PRAGMA wal_autocheckpoint = 0")  # litestream checkpoints, as in the node
            create_collection(connection, {"name": "notes", "type": "base", "fields": [
                {"name": "n", "type": "number"}, {"name": "body", "type": "text"}]})
            connections.append(connection)
        config = root / "litestream.yml"
        config.write_text(
            "levels:\n  - interval: 1s\n  - interval: 2s\nsnapshot:\n  interval: 3s\n  retention: 1h\ndbs:\n"
            f"  - path: {root / 'local' / 'data.db'}\n    replicas:\n      - url: {local.url('local', INCARNATION)}\n"
            f"  - path: {root / 's3' / 'data.db'}\n    replicas:\n      - url: {s3.url('s3', INCARNATION)}\n")
        replicate = subprocess.Popen(["litestream", "replicate", "-config", str(config)],
                                     env={**s3.environment(), **S3_ENV},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _write_history(connections)
            time.sleep(2.5)  # the last writes shipped and compacted
            assert replicate.poll() is None, "litestream replicate stopped"
        finally:
            replicate.send_signal(signal.SIGTERM)
            replicate.wait(30)
            for connection in connections:
                connection.close()
        yield Replicated(local, s3, root)


def _litestream_restore(store: ReplicaStore, tenant: str, target: Path) -> bytes:
    subprocess.run(["litestream", "restore", "-o", str(target), store.url(tenant, INCARNATION)],
                   env={**store.environment(), **S3_ENV}, check=True, capture_output=True, timeout=60)
    return target.read_bytes()


def _rows(path: Path) -> tuple[object, list[tuple[object, ...]]]:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return (connection.execute("PRAGMA integrity_check").fetchall()[0][0],
                connection.execute("SELECT id, n, body FROM notes ORDER BY id").fetchall())
    finally:
        connection.close()


# Run in a child process for S3: boto3 takes its credentials from the environment, as litestream does.
IN_NODE_RESTORE = """
import asyncio, sys
from pathlib import Path
from pbfast.tenant_node.replica import ReplicaStore, Replicas
replicas = Replicas(ReplicaStore(sys.argv[1], sys.argv[2] if sys.argv[2] != "-" else None, Path(sys.argv[3])))
found = asyncio.run(replicas.restore(sys.argv[4], sys.argv[5], Path(sys.argv[6])))
print(found, replicas.reader.restored, replicas.reader.passed_on)
"""


def _in_node_restore(store: ReplicaStore, tenant: str, target: Path) -> tuple[bool, int, int]:
    """``Replicas.restore`` of the latest state: (found, restored in the node, left to litestream)."""
    if store.endpoint is None:
        replicas = Replicas(store)
        found = asyncio_run(replicas.restore(tenant, INCARNATION, target))
        return found is True, replicas.reader.restored, replicas.reader.passed_on
    done = subprocess.run([sys.executable, "-c", IN_NODE_RESTORE, store.bucket, store.endpoint or "-",
                           str(store.local_root), tenant, INCARNATION, str(target)],
                          env={**store.environment(), **S3_ENV}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found, restored, passed_on = done.stdout.split()
    return found == "True", int(restored), int(passed_on)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_in_node_restore_is_litestreams_byte_for_byte(replicated: Replicated, kind: str,
                                                          tmp_path: Path) -> None:
    store = replicated.local if kind == "local" else replicated.s3
    listing = _listing(store, kind)
    levels = {f.level for f in listing}
    assert {0, 1, 2, SNAPSHOT_LEVEL} <= levels, levels  # compactions and snapshots happened
    assert sum(f.level == SNAPSHOT_LEVEL for f in listing) >= 2
    plan = restore_plan(listing)
    assert plan is not None and plan[0].level == SNAPSHOT_LEVEL

    ours = tmp_path / "in-node.db"
    assert _in_node_restore(store, kind, ours) == (True, 1, 0)
    theirs = _litestream_restore(store, kind, tmp_path / "litestream.db")
    assert ours.read_bytes() == theirs
    integrity, rows = _rows(ours)
    assert integrity == "ok" and len(rows) > 500
    assert _rows(replicated.root / kind / "data.db")[1] == rows  # every write was shipped before the stop


def _listing(store: ReplicaStore, kind: str) -> list[LtxFile]:
    """The replica's files (S3: listed with boto3 under the test's credentials)."""
    if kind == "local":
        return ReplicaReader(store.bucket, None, store.local_root, store.region).listing(
            ReplicaStore.prefix(kind, INCARNATION)).files
    import boto3  # type: ignore[import-untyped]  # noqa: PLC0415

    client = boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    prefix = ReplicaStore.prefix(kind, INCARNATION) + "/"
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=store.bucket, Prefix=prefix).get("Contents", [])]
    files = []
    for key in keys:
        level, name = key[len(prefix):].split("/")
        low, high = name.removesuffix(".ltx").split("-")
        files.append(LtxFile(int(level, 16), int(low, 16), int(high, 16), key))
    return files


def test_a_damaged_file_is_refused_and_the_restore_left_to_litestream(replicated: Replicated,
                                                                      tmp_path: Path) -> None:
    store = ReplicaStore(BUCKET, None, tmp_path / "replica")
    prefix = ReplicaStore.prefix("local", INCARNATION)
    shutil.copytree(replicated.local.local_root / prefix, store.local_root / prefix)
    plan = restore_plan(ReplicaReader(BUCKET, None, store.local_root, store.region).listing(prefix).files)
    assert plan is not None
    newest = Path(plan[-1].location)
    data = bytearray(newest.read_bytes())
    data[-9] ^= 0x01  # one bit of the trailer's database checksum: the file checksum no longer matches
    newest.write_bytes(bytes(data))

    replicas = Replicas(store)
    target = tmp_path / "restored.db"
    with pytest.raises(ReplicationError, match="checksum"):  # litestream refuses it as well
        asyncio_run(replicas.restore("local", INCARNATION, target))
    assert (replicas.reader.restored, replicas.reader.passed_on) == (0, 1)
    assert not target.exists()


def test_a_tenant_without_replica_is_found_new_without_litestream(tmp_path: Path) -> None:
    replicas = Replicas(ReplicaStore(BUCKET, None, tmp_path / "replica"), binary="/nonexistent/litestream")
    assert asyncio_run(replicas.restore("nobody", INCARNATION, tmp_path / "restored.db")) is False
    assert (replicas.reader.restored, replicas.reader.passed_on) == (0, 0)


def asyncio_run(work: object) -> object:
    import asyncio  # noqa: PLC0415

    return asyncio.run(work)  # type: ignore[arg-type]


def _file(level: int, low: int, high: int) -> LtxFile:
    return LtxFile(level, low, high, f"{level:04x}/{low:016x}-{high:016x}.ltx")


def test_the_plan_is_litestreams() -> None:
    """Litestream's CalcRestorePlan for the latest state: the newest snapshot, then the file reaching
    furthest, any level, until none extends the chain; no plan with a gap after it or no start."""
    snapshot_old, snapshot = _file(9, 1, 10), _file(9, 1, 40)
    compacted, l1, l0 = _file(2, 11, 72), _file(1, 41, 70), [_file(0, t, t) for t in range(35, 76)]
    plan = restore_plan([snapshot_old, snapshot, compacted, l1, *l0])
    assert plan == [snapshot, compacted, *l0[-3:]]  # 1-40, 11-72 (reaches further than 41-70), 73, 74, 75
    assert restore_plan([snapshot, l1, *l0]) == [snapshot, l1, *l0[-5:]]
    assert restore_plan(l0) is None  # nothing starts at transaction 1
    assert restore_plan([_file(0, 1, 1), _file(0, 2, 2)]) == [_file(0, 1, 1), _file(0, 2, 2)]  # no snapshot yet
    assert restore_plan([snapshot, _file(0, 42, 42)]) is None  # transaction 41 is missing
    assert restore_plan([snapshot, _file(0, 30, 30)]) == [snapshot]  # older files are not needed
    assert restore_plan([snapshot, _file(1, 41, 45), _file(0, 41, 45)]) == [snapshot, _file(1, 41, 45)]
