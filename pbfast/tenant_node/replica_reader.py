"""A tenant's latest replicated state restored inside the node (issue 14, goal 4), without a ``litestream
restore`` process: one listing of the replica (every level at once), the files of Litestream's restore plan
(:func:`restore_plan`: the newest snapshot, then the files that extend it furthest), and their pages applied
by :func:`pbfast._native.restore_ltx`, which checks every file (its CRC-64, page order, that every page is
there; the last file's database checksum when it carries one: Litestream 0.5.17 writes its files flagged
without) before anything is used. Measured (benchmarks/RESULTS.md, "Cold open from the
replica"): ~44 requests and a process start (~100-150 ms here) became 1 + the files read; a cold open of
a 1 MB tenant from moto's S3 went from p50 274-290 ms to 26-28 ms.

What it does not cover is left to ``litestream restore`` (:meth:`ReplicaReader.restore_latest` answers
None): a replica in Litestream 0.3's layout (``generations/``), files with no plan from the first
transaction on, a gap after the plan (Litestream refuses those), a file :func:`~pbfast._native.restore_ltx`
does not know or finds damaged, a store that fails. Point-in-time restores (``-timestamp``) always use
Litestream: they need each file's creation time, which S3 keeps in object metadata (a HEAD per file).

Blocking: :meth:`ReplicaReader.restore_latest` runs on a worker thread.
"""

from __future__ import annotations

import heapq
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbfast._native import LtxError, restore_ltx
from pbfast.logs import component_logger

__all__ = ["SNAPSHOT_LEVEL", "LtxFile", "ReplicaListing", "ReplicaReader", "restore_plan"]

log = component_logger("TenantNode")

SNAPSHOT_LEVEL = 9  # Litestream 0.5's snapshot level; levels 0-8 hold transactions and their compactions
S3_CONNECT_TIMEOUT_SECONDS = 5.0
S3_READ_TIMEOUT_SECONDS = 60.0
# <level as 4 hex digits>/<min txid>-<max txid>.ltx in S3; ltx/<level>/<min>-<max>.ltx in a local store
_S3_KEY = re.compile(r"([0-9a-f]{4})/([0-9a-f]{16})-([0-9a-f]{16})\.ltx")
_FILE_NAME = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.ltx")
_LEGACY = "generations"  # Litestream 0.3's layout
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replica-read")  # the reads of one plan


@dataclass(frozen=True, slots=True)
class LtxFile:
    level: int
    min_txid: int
    max_txid: int
    location: str  # the object's key in S3, the file's path in a local store


@dataclass(frozen=True, slots=True)
class ReplicaListing:
    files: list[LtxFile]
    legacy: bool  # files in Litestream 0.3's layout too


def restore_plan(files: list[LtxFile]) -> list[LtxFile] | None:
    """The files Litestream 0.5 restores the latest state from (its ``CalcRestorePlan`` without a target):
    the newest snapshot, then again and again the file of levels 0-8 that extends the transactions so far
    furthest (the highest max TXID; then the lowest min, then the higher level). None when Litestream would
    not restore from these files: none starts the chain, or a file lies beyond a gap after it."""
    snapshots = sorted((f for f in files if f.level == SNAPSHOT_LEVEL), key=lambda f: (f.min_txid, f.max_txid))
    plan = snapshots[-1:]
    reached = plan[0].max_txid if plan else 0
    # A busy tenant has thousands of level-0 files: the files that start early enough only ever grow as the
    # plan reaches further, so they go into a heap, best first, once each.
    others = sorted((f for f in files if f.level < SNAPSHOT_LEVEL), key=lambda f: f.min_txid)
    startable: list[tuple[int, int, int, int]] = []
    taken = 0
    while True:
        while taken < len(others) and others[taken].min_txid <= reached + 1:
            f = others[taken]
            heapq.heappush(startable, (-f.max_txid, f.min_txid, -f.level, taken))
            taken += 1
        if not startable or -startable[0][0] <= reached:
            break
        best = others[heapq.heappop(startable)[3]]
        plan.append(best)
        reached = best.max_txid
    if not plan or taken < len(others):  # nothing starts the chain, or files lie beyond a gap after it
        return None
    return plan


class ReplicaReader:
    """Lists and reads one replica store (S3 through boto3, or a local directory) for in-node restores."""

    def __init__(self, bucket: str, endpoint: str | None, local_root: Path, region: str) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.local_root = local_root
        self.region = region
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.restored = 0  # restores done here
        self.passed_on = 0  # restores left to litestream

    def restore_latest(self, prefix: str, target: Path) -> bool | None:
        """Restore the latest state of the replica under ``prefix`` (``tenants/{id}/{incarnation}``) into
        ``target`` (which must not exist). True: restored (not fsynced); False: the replica holds no file;
        None: left to ``litestream restore`` (logged why; ``target`` does not exist)."""
        fetched: list[Path] = []
        try:
            listing = self.listing(prefix)
            if listing.legacy:
                return self._pass_on(prefix, "it has files in Litestream 0.3's layout")
            if not listing.files:
                return False
            plan = restore_plan(listing.files)
            if plan is None:
                return self._pass_on(prefix, "its files make no restore plan Litestream would follow")
            if self.endpoint is None:
                restore_ltx([f.location for f in plan], target)
            else:
                fetched.extend(target.with_name(f"{target.name}.{i}.ltx") for i in range(len(plan)))
                # at once: on S3 a restore then waits for two round trips (the listing, the reads); every
                # read is over before its file is cleaned up
                reads = [_READERS.submit(self._fetch, f.location, path) for f, path in zip(plan, fetched)]
                for read in reads:
                    read.exception()
                for read in reads:
                    read.result()
                restore_ltx(fetched, target)
        except (LtxError, OSError, StoreFailed) as err:
            target.unlink(missing_ok=True)
            return self._pass_on(prefix, str(err))
        except Exception as err:  # noqa: BLE001 - whatever went wrong, litestream still restores it
            target.unlink(missing_ok=True)
            return self._pass_on(prefix, repr(err))
        finally:
            for path in fetched:
                path.unlink(missing_ok=True)
        self.restored += 1
        return True

    def _pass_on(self, prefix: str, why: str) -> bool | None:
        """Leave the restore to litestream (None), saying why."""
        self.passed_on += 1
        log.warning("replica %s: restoring with litestream, not in the node: %s", prefix, why)
        return None

    def listing(self, prefix: str) -> ReplicaListing:
        """Every LTX file of the replica under ``prefix``, all levels. Raises :class:`StoreFailed`, OSError."""
        if self.endpoint is None:
            return self._list_local(self.local_root / prefix)
        files: list[LtxFile] = []
        legacy = False
        start = f"{prefix}/"
        try:
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", ()):
                    key: str = item["Key"]
                    rest = key[len(start):]
                    legacy = legacy or rest.startswith(_LEGACY + "/")
                    match = _S3_KEY.fullmatch(rest)
                    if match:
                        files.append(LtxFile(int(match[1], 16), int(match[2], 16), int(match[3], 16), key))
        except Exception as err:  # noqa: BLE001 - botocore's errors are many; the message is what counts
            raise StoreFailed(f"listing {start}: {err}") from err
        return ReplicaListing(files, legacy)

    @staticmethod
    def _list_local(root: Path) -> ReplicaListing:
        files = []
        try:
            levels = list(os.scandir(root / "ltx"))
        except FileNotFoundError:
            levels = []
        for level in levels:
            if not (level.name.isdigit() and level.is_dir(follow_symlinks=False)):
                continue
            for entry in os.scandir(level.path):
                match = _FILE_NAME.fullmatch(entry.name)
                if match:
                    files.append(LtxFile(int(level.name), int(match[1], 16), int(match[2], 16), entry.path))
        return ReplicaListing(files, (root / _LEGACY).exists())

    def _fetch(self, key: str, path: Path) -> Path:
        """Read one object into ``path``. Raises :class:`StoreFailed`, OSError."""
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"]
            with open(path, "xb") as file:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    file.write(chunk)
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - as above
            raise StoreFailed(f"reading {key}: {err}") from err
        return path

    def warm(self) -> None:
        """Make the S3 client now (blocking), so that the first restore does not wait for it."""
        if self.endpoint is not None:
            self._s3()

    def _s3(self) -> Any:
        """One boto3 client for every restore (made once: ~30 ms, and importing boto3 ~0.2 s); thread-safe."""
        with self._client_lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]  # only nodes with an S3 store need it
                from botocore.config import Config  # type: ignore[import-untyped]

                self._client = boto3.client(
                    "s3", endpoint_url=self.endpoint, region_name=self.region,
                    config=Config(connect_timeout=S3_CONNECT_TIMEOUT_SECONDS, read_timeout=S3_READ_TIMEOUT_SECONDS,
                                  retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}))
            return self._client


class StoreFailed(RuntimeError):
    """The replica store did not answer a listing or a read."""
